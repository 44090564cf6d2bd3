"""`python -m birthjax.interop export CKPT_DIR --out=FILE.params [--config=...]`: weights for the torch reference. (birthjax/tools/interop_cli.py)"""
import sys

from birthjax.tools.interop_cli import main

if __name__ == "__main__":
  sys.exit(main())

"""`python -m birthjax.interop export CKPT_DIR --out=FILE.params [--config=...]`: weights for the torch reference. (birthjax/tools/interop_cli.py)"""
from birthjax.tools import cli
from birthjax.tools.interop_cli import main

if __name__ == "__main__":
  cli.run(main)

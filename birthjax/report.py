"""`python -m birthjax.report W`: W/report.html (results, curves, plots). (birthjax/tools/report.py)"""
import sys

from birthjax.tools.report import main

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

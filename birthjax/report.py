"""`python -m birthjax.report W`: W/report.html (results, curves, plots). (birthjax/tools/report.py)"""
from birthjax.tools import cli
from birthjax.tools.report import main

if __name__ == "__main__":
  cli.run(main)

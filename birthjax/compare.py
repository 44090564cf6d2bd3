"""`python -m birthjax.compare W1 W2 ... [--split=dev]`: a markdown table comparing runs on the
same questions: C/N, accuracy with a 95% Wilson interval, the paired difference against W1
with an exact McNemar p; workdirs differing only in seed pooled into one row.
(birthjax/tools/compare.py)"""
from birthjax.tools import cli
from birthjax.tools.compare import main

if __name__ == "__main__":
  cli.run(main)

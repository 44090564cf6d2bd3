"""`python -m birthjax.analysis {attention,complexity} --out=DIR`: A5 written part 1, executed. (birthjax/tools/analysis.py)"""
from birthjax.tools.analysis import main

if __name__ == "__main__":
  main()

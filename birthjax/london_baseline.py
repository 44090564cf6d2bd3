"""`python -m birthjax.london_baseline [--data_dir=D]`: "London" for every dev question. (birthjax/tools/london_baseline.py)"""
from birthjax.tools import cli
from birthjax.tools.london_baseline import main

if __name__ == "__main__":
  cli.run(main)

"""`python -m birthjax.curve W [--max_points=N]`: a learning curve from W's kept pretraining checkpoints. (birthjax/tools/curve.py)"""
from birthjax.tools import cli
from birthjax.tools.curve import main

if __name__ == "__main__":
  cli.run(main)

"""`python -m birthjax.ask W "Where was NAME born?" ... [--abstain_below=P]`: ask W's finetuned model. (birthjax/tools/ask.py)"""
from birthjax.tools import cli
from birthjax.tools.ask import main

if __name__ == "__main__":
  cli.run(main)

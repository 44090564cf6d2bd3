"""`python -m birthjax.analysis {attention,complexity} --out=DIR`: A5 written part 1, executed. (birthjax/tools/analysis.py)

  attention   A5 written part 1: four numerical experiments, four PNGs in DIR
  complexity  forward FLOPs vs input length, XLA vs closed form: DIR/complexity.md and .png
              (--lengths, --m, --n_layer, --n_embd, --batch)
"""
from birthjax.tools import cli
from birthjax.tools.analysis import main

if __name__ == "__main__":
  cli.run(main)

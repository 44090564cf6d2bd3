"""Predict "London" for every dev question: `python -m birthjax.london_baseline --data_dir=DIR`."""
import os

from absl import flags

from birthjax.data import corpus
from birthjax.infer import evaluate
from birthjax.errors import UserError

flags.DEFINE_string("data_dir", "data", "folder holding birth_dev.tsv")
flags.DEFINE_string("eval_file", corpus.DEV, "question file inside --data_dir")


def main(argv):
  del argv
  _, answers = corpus.read_eval(flags.FLAGS.data_dir, flags.FLAGS.eval_file)
  if answers is None:
    raise UserError("the question file has no answers to score against",
                    os.path.join(flags.FLAGS.data_dir, flags.FLAGS.eval_file),
                    "use a file of `question<TAB>answer` lines such as birth_dev.tsv")
  print(evaluate.report_line(*evaluate.score(["London"] * len(answers), answers)))

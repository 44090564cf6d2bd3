"""Ask a trained model: `python -m birthjax.ask W "Where was Ada Lovelace born?" ...`.

Questions come from the arguments or, with none, from standard input (one a line). Loads W's
resolved config (W/config.json), its data (for the wiki.txt vocabulary and corpus) and its
finetuned checkpoint (W/checkpoints/finetune), and prints one tab-separated line a question:

  question  answer  confidence  name in the pretraining corpus (yes/no)

An answer less confident than --abstain_below becomes "I don't know". A question that cannot
be asked (a character outside the vocabulary, too long for the block) is one `error:` line
on stderr for that question; the others are answered, and the exit status is 1.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags

flags.DEFINE_float("abstain_below", 0.0, "answers less confident than this: I don't know")
flags.DEFINE_integer("steps", 32, "characters to generate at most")


def askable(question: str, vocab, block_size: int, where: str):
  """None if the question can be asked, else the UserError saying why."""
  from birthjax.errors import UserError
  try:
    vocab.encode(question, where)
  except UserError as e:
    return e
  if len(question) + 2 > block_size:  # the question, its MASK, and room for one character
    return UserError(f"the question is {len(question)} characters, too long for block_size "
                     f"{block_size} (at most {block_size - 2})", where, "ask a shorter question")
  return None


def ask(workdir: str, questions: list[str], abstain_below: float = 0.0, steps: int = 32):
  """([(question, answer, confidence, in_corpus)] of the askable questions, [error lines])."""
  import jax
  import ml_collections
  from birthjax.train import checkpoint
  from birthjax.data import recite, subsets
  from birthjax.infer import decode, evaluate
  from birthjax.data import input_pipeline
  from birthjax.model import model
  from birthjax import run, sharding
  from birthjax.errors import UserError
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError("no config.json: not a birthjax workdir", os.path.abspath(workdir),
                    "pass the --workdir of a finished run")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  data = input_pipeline.load(config.data, config.model.block_size)
  cfg = run.model_config(config)
  params, _ = checkpoint.restore_params(os.path.join(workdir, "checkpoints", "finetune"),
                                        model.init_params(cfg, jax.random.key(0)))
  errors, ok = [], []
  for i, q in enumerate(questions):
    e = askable(q, data.vocab, config.model.block_size, f"question {i + 1}: {q[:60]!r}")
    (errors.append(e.line()) if e else ok.append(q))
  if not ok:
    return [], errors
  answers, conf = decode.predict_with_confidence(params, cfg, data.vocab, ok, steps=steps,
                                                 batch_size=config.eval.batch_size,
                                                 mesh=sharding.make_mesh(),
                                                 recite=recite.mode(config.data))
  answers = evaluate.abstain(answers, conf, abstain_below)
  documents = [data.vocab.decode(d) for d in data.documents]
  known = evaluate.name_in_corpus([subsets.name_of(q) for q in ok], documents)
  return list(zip(ok, answers, conf, known)), errors


def main(argv):
  from birthjax.tools import cli
  if len(argv) < 2:
    raise cli.UsageError("no workdir given", cli.where(argv), 'pass the workdir of a finished run: '
                         'python -m birthjax.ask W ["question" ...] (or questions on standard input)')
  questions = argv[2:] or [l.rstrip("\r\n") for l in sys.stdin if l.strip()]
  rows, errors = ask(argv[1], questions, flags.FLAGS.abstain_below, flags.FLAGS.steps)
  for q, a, c, known in rows:
    print(f"{q}\t{a}\t{c:.3f}\t{'yes' if known else 'no'}", flush=True)
  for line in errors:
    print(line, file=sys.stderr)
  sys.exit(1 if errors else 0)

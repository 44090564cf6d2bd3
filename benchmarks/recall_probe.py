"""Did pretraining store the answers? Prompt the pretrained model with each dev person's own
wiki.txt line up to the first occurrence of the answer, decode greedily, and count the
completions that start with the answer; compare with the finetuned model's dev accuracy.

  python benchmarks/recall_probe.py --workdir=runs/vanilla-quickstart [--stage=pretrain]
  python benchmarks/recall_probe.py --workdir=runs/vanilla-quickstart --prefix="Where was "
  python benchmarks/recall_probe.py --workdir=runs/vanilla-quickstart --free
  python benchmarks/recall_probe.py --workdir=W --show=12   # a data.recite run's recitations

--prefix puts characters in front of each line (ten for "Where was ", where a question puts
the name): learned absolute positions tie what the model stored to where a line starts.

Reads the run's resolved config (W/config.json) and its checkpoint (W/checkpoints/<stage>).
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402

from birthjax.train import checkpoint  # noqa: E402
from birthjax.tools import curve
from birthjax.data import input_pipeline, recite
from birthjax.infer import decode
from birthjax.model import model
from birthjax import run


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--stage", default="pretrain")
  p.add_argument("--split", default="dev")
  p.add_argument("--prefix", default="", help="characters in front of each line")
  p.add_argument("--free", action="store_true",
                 help="prompt with the title 'NAME.' only; a hit: the answer anywhere in the "
                      "greedy recitation to the end of the block")
  p.add_argument("--show", type=int, default=0,
                 help="also print the first N recitations after `question MASK NAME.` "
                      "(the data.recite prompt; `NAME.` with recite_from=title), with the gold answer and the own line")
  a = p.parse_args()
  with open(os.path.join(a.workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  data = input_pipeline.load(config.data, config.model.block_size)
  cfg = run.model_config(config)
  like = model.init_params(cfg, jax.random.key(0))
  params, _ = checkpoint.restore_params(os.path.join(a.workdir, "checkpoints", a.stage), like)
  if a.show:
    show(params, cfg, data, config, a.split, a.show)
  r = curve.own_line_recall(params, cfg, data, a.split, a.prefix, a.free)
  print(f"{a.split}: answer in the person's own wiki line: {r['prompts']} of {r['questions']}")
  how = "recites it from the title" if a.free else "completes it from the line's start"
  print(f"{a.stage} model {how}{' after ' + repr(a.prefix) if a.prefix else ''}: "
        f"{r['hits']} of {r['prompts']} "
        f"({100.0 * r['hits'] / max(1, r['prompts']):.1f}%)")
  results = os.path.join(a.workdir, "results.json")
  if os.path.isfile(results):
    with open(results) as f:
      r = json.load(f).get(a.split)
    if r:
      print(f"finetuned model answers the question: {r['correct']} of {r['total']} "
            f"({r['accuracy']:.1f}%)")


def show(params, cfg, data, config, split, n):
  questions, golds = (x[:n] for x in data.eval_sets[split])
  mode = recite.mode(config.data) or "question"
  prompts = [data.vocab.encode(recite.prompt(q, mode)) for q in questions]
  gen, _ = decode.greedy_generate_scored(params, cfg, prompts,
                                         steps=cfg.block_size - max(map(len, prompts)))
  docs = [data.vocab.decode(d) for d in data.documents]
  for q, g, gold in zip(questions, gen, golds):
    print(f"{gold!r}: {recite.title(q) + data.vocab.decode(g)[:100]!r}\n  own line: "
          f"{recite.own_line(q, docs)[:100]!r}")


if __name__ == "__main__":
  main()

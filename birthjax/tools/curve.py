"""Learning curve: `python -m birthjax.curve W` finetunes and evaluates from each pretraining
checkpoint a run kept (`--config.pretrain.keep_every=E`), with the run's own settings.

For each kept pretraining step it writes W/curve/<epoch>/ (the finetune checkpoints, which
resume) and adds a point to W/curve.json: pretraining epoch, dev accuracy after finetuning,
and the own-line completion rate (the pretrained model given a person's own biography up to
the answer; benchmarks/recall_probe.py). W/curve.png plots both against pretraining epochs.
Rerunning resumes: points already in curve.json are kept, not recomputed.
"""
from __future__ import annotations

import json
import os

from absl import flags

flags.DEFINE_integer("max_points", 0, "stop after this many new points (0: all)")


def own_line_recall(params, cfg, data, split="dev", prefix: str = "", free: bool = False) -> dict:
  """Prompt with each `split` person's own wiki line up to the answer's first occurrence
  (after `prefix`: e.g. "Where was ", ten characters, puts the name where a question does),
  decode greedily: {'hits', 'prompts' (people whose line holds the answer), 'questions'}.
  `free`: prompt with the line's title only ("NAME.") and decode to the end of the block; a
  hit is the answer anywhere in that recitation (what a model reciting its memory could read)."""
  import numpy as np
  from birthjax.data import recite
  from birthjax.infer import decode
  docs = [data.vocab.decode(d) for d in data.documents]
  questions, answers = data.eval_sets[split]
  prompts, golds = [], []
  for q, ans in zip(questions, answers):
    line = recite.own_line(q, docs)
    if ans in line:
      text = prefix + (recite.title(q) if free else line[:line.index(ans)])
      prompts.append(np.asarray(data.vocab.encode(text), np.int32))
      golds.append(ans)
  if not prompts:
    return {"hits": 0, "prompts": 0, "questions": len(questions)}
  steps = cfg.block_size - max(len(p) for p in prompts) if free else max(len(g) for g in golds)
  gen = [data.vocab.decode(g) for g in decode.greedy_generate(params, cfg, prompts, steps=steps)]
  hits = sum((ans in g) if free else g.startswith(ans) for g, ans in zip(gen, golds))
  return {"hits": hits, "prompts": len(golds), "questions": len(questions)}


def kept_points(workdir: str) -> list[tuple[int, int]]:
  """[(pretraining epoch, step)] of the kept pretraining checkpoints (multiples of
  keep_every epochs), from the run's checkpoints and config."""
  from birthjax.train import checkpoint
  from birthjax.errors import UserError
  folder = os.path.join(workdir, "checkpoints", "pretrain")
  if not os.path.isdir(folder):
    raise UserError("no pretraining checkpoints", folder,
                    "point at the workdir of a run with the pretrain stage")
  ckpts = checkpoint.StageCheckpoints(folder)
  try:
    meta = ckpts.latest_meta() or {}
    steps = ckpts.steps()
  finally:
    ckpts.close()
  with open(os.path.join(workdir, "config.json")) as f:
    keep = json.load(f)["pretrain"].get("keep_every", 0)
  spe = meta.get("steps_per_epoch")
  if not keep or not spe:
    raise UserError("the run kept no pretraining checkpoints for a curve", folder,
                    "rerun its command with --config.pretrain.keep_every=E (epochs; it resumes)")
  return [(s // spe, s) for s in steps if s % (keep * spe) == 0]


def point(workdir, config, data, mesh, epoch, step) -> dict:
  import jax
  from birthjax.train import checkpoint
  from birthjax.model import model
  from birthjax import run
  cfg = run.model_config(config)
  like = model.init_params(cfg, jax.random.key(config.seed))
  folder = os.path.join(workdir, "checkpoints", "pretrain")
  pretrained, _ = checkpoint.restore_params(folder, like, step=step)
  ckpts = checkpoint.StageCheckpoints(folder)
  try:
    tokens = ckpts.tokens(step)
  finally:
    ckpts.close()
  recall = own_line_recall(pretrained, cfg, data)
  sub = os.path.join(workdir, "curve", str(epoch))
  os.makedirs(sub, exist_ok=True)
  params = run.train_stage("finetune", config, sub, data, mesh, pretrained, f"{folder}@{step}")
  dev = run.evaluate_stage(config, sub, data, mesh, params)["dev"]
  return {"epoch": epoch, "step": step, "tokens": tokens, "dev_correct": dev["correct"], "dev_total": dev["total"],
          "dev_accuracy": dev["accuracy"], "recall_hits": recall["hits"],
          "recall_prompts": recall["prompts"],
          "recall_rate": 100.0 * recall["hits"] / max(1, recall["prompts"])}


def plot(path: str, points: list[dict], title: str, epochs: int = 0, schedule=None):
  """Dev accuracy and own-line completion against pretraining epochs; with `schedule`
  (pretraining's optim.Schedule, over `epochs`) also the lr, from the token count an epoch."""
  import numpy as np
  from birthjax.infer import evaluate
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 3.6))
  xs = [p["epoch"] for p in points]
  ax.plot(xs, [p["dev_accuracy"] for p in points], "o-", label="dev accuracy after finetuning")
  ax.plot(xs, [p["recall_rate"] for p in points], "s--",
          label="own-line completion (pretrained model)")
  if schedule is not None and points and points[-1]["epoch"] and points[-1].get("tokens"):
    per_epoch = points[-1]["tokens"] / points[-1]["epoch"]
    xs = np.arange(0, int(epochs) + 1)
    mult = schedule.multiplier(xs * per_epoch)
    ax.plot(xs, 100 * np.asarray(mult), ":", color="gray", label="learning rate (% of base)")
  ax.set_xlabel("pretraining epoch"), ax.set_ylabel("%"), ax.set_ylim(0, 100)
  ax.set_title(title, fontsize=9), ax.grid(alpha=0.3), ax.legend(fontsize=8)
  evaluate.save_png(fig, path, dpi=120, bbox_inches="tight")
  plt.close(fig)


def curve(workdir: str, max_points: int = 0) -> list[dict]:
  import ml_collections
  from birthjax import files, sharding
  from birthjax.data import input_pipeline
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  path = os.path.join(workdir, "curve.json")
  done = json.load(open(path))["points"] if os.path.isfile(path) else []
  todo = [(e, s) for e, s in kept_points(workdir) if s not in {p["step"] for p in done}]
  data = input_pipeline.load(config.data, config.model.block_size)
  mesh = sharding.make_mesh()
  from birthjax import run
  for epoch, step in todo[:max_points or None]:
    new = point(workdir, config, data, mesh, epoch, step)
    done = sorted(done + [new], key=lambda p: p["step"])
    files.atomic_write(path, json.dumps({"points": done}, indent=2))
    print(f"curve: epoch {epoch}: dev {new['dev_correct']}/{new['dev_total']}, "
          f"own line {new['recall_hits']}/{new['recall_prompts']}", flush=True)
  plot(os.path.join(workdir, "curve.png"), done, os.path.basename(os.path.abspath(workdir)),
       config.pretrain.epochs, run.stage_optim(config.pretrain, data.share)[1])
  return done


def main(argv):
  from birthjax.tools import cli
  if len(argv) != 2:
    raise cli.UsageError(f"one workdir expected, got {len(argv) - 1}", cli.where(argv),
                         "pass one workdir: python -m birthjax.curve W [--max_points=N]")
  curve(argv[1], flags.FLAGS.max_points)

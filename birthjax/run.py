"""The stages pretrain -> finetune -> evaluate: epochs, progress, checkpoint cadence.

Parameters flow from stage to stage: `init_from` (if set) seeds the first stage;
pretraining hands its parameters to finetuning; evaluation uses the latest parameters
(or, run alone, W/checkpoints/finetune). Every training stage resumes from its latest
checkpoint when rerun with the same command.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import numpy as np

from birthjax import files, sharding
from birthjax.data import input_pipeline, recite, records, subsets
from birthjax.infer import decode, evaluate
from birthjax.model import model
from birthjax.train import checkpoint, compile_cache, device_epoch, metrics, optim, preempt, train
from birthjax.checks import validate  # noqa: F401  (run.validate: the config checks)
from birthjax.errors import UserError

STAGES = ("pretrain", "finetune", "evaluate")


# ----------------------------------------------------------------------------- config
def parse_stages(stages: str) -> list[str]:
  names = [s.strip() for s in stages.split(",") if s.strip()]
  for s in names:
    if s not in STAGES:
      raise UserError(f"unknown stage {s!r}", "--config.stages",
                      f"use a comma-separated subset of {','.join(STAGES)} (or '' to only build)")
  return [s for s in STAGES if s in names]


def model_config(config, deterministic=True) -> model.ModelConfig:
  return model.ModelConfig.from_config(config.model, deterministic)


def fingerprint(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- training
def packs(config) -> bool:
  return bool(config.pack) and config.model.variant == "vanilla"  # the perceivers need whole rows


def stage_epochs(stage, config, init_source) -> int:
  c = config[stage]
  return c.epochs if stage == "pretrain" or init_source != "scratch" else c.epochs_from_scratch


def stage_fingerprint(stage, config, data, init_source) -> str:
  """What a stage's checkpoints must have been made with to be resumed (keep_every aside)."""
  settings = {k: v for k, v in config[stage].to_dict().items() if k != "keep_every"}
  return fingerprint(config.model.to_dict(), settings, config.seed, data.digest, init_source,
                     packs(config), stage_epochs(stage, config, init_source))


def refuse_other_config(ckpts, stage, expected):
  old = ckpts.latest_meta() or {}
  if old.get("fingerprint", expected) != expected:
    raise UserError(f"the workdir holds a {stage} checkpoint of a different configuration "
                    f"(model, {stage} settings, seed, data or initialisation)",
                    ckpts.directory, "use a new --workdir, or rerun with the original config")


def check_resumable(stages, config, workdir, data, source):
  """Before anything is written: every training stage's existing checkpoints fit the config."""
  for stage in (s for s in stages if s != "evaluate"):
    directory = os.path.join(workdir, "checkpoints", stage)
    if os.path.isdir(directory):
      ckpts = checkpoint.StageCheckpoints(directory)
      if ckpts.latest_step() is not None:
        refuse_other_config(ckpts, stage, stage_fingerprint(stage, config, data, source))
      ckpts.close()
    source = stage


def stage_optim(c, share: float = 1.0) -> tuple[optim.Settings, optim.Schedule]:
  """A stage's optimizer settings and lr schedule from its config section; with data.people
  (`share`: the documents' kept fraction) the token counts scale by it, so the lr follows
  the same curve over epochs as on the whole data."""
  return (optim.Settings(c.weight_decay, c.decay_rule, c.grad_clip),
          optim.Schedule(c.warmup_tokens * share, c.final_tokens * share, c.clamp_schedule))


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage's settings, built from the config in one place (`stage_settings`)."""
  name: str  # 'pretrain' | 'finetune'
  epochs: int
  batch_size: int
  learning_rate: float
  shuffle: bool
  keep_every: int  # epochs between kept checkpoints (learning curves); 0: none
  seed: int  # the stage's dropout and data streams
  opt: optim.Settings
  schedule: optim.Schedule


def stage_settings(stage, config, data, init_source="scratch") -> Stage:
  c = config[stage]
  opt, schedule = stage_optim(c, data.share)
  return Stage(stage, stage_epochs(stage, config, init_source), c.batch_size, c.learning_rate,
               c.shuffle, c.get("keep_every", 0), config.seed + (0 if stage == "pretrain" else 1),
               opt, schedule)


@dataclasses.dataclass
class StageProgram:
  """What a training stage runs: its settings, compiled epoch, plan and record tables."""
  settings: Stage
  epoch_fn: object  # (state, arrays, data_key, seed_key, epoch) -> (state, metrics [steps])
  plan: device_epoch.Plan
  table_of: object  # epoch -> the record table (numpy)
  per_epoch: bool  # whether the table changes every epoch (augmented: crops, a QA schedule)
  data_key: jax.Array
  pack: bool


def stage_program(stage, config, data, mesh, init_source="scratch") -> StageProgram:
  s = stage_settings(stage, config, data, init_source)
  pack = packs(config)
  table_of, per_epoch = records.stage_tables(stage, config, data)
  plan = device_epoch.make_plan(len(table_of(0)["lens"]), s.batch_size, config.model.block_size,
                                s.shuffle, mesh.size)
  data_key = device_epoch.data_key(s.seed)
  if pack:
    plan = device_epoch.choose_rows(plan, table_of(records.plan_epoch(stage, config)), data_key,
                                    mesh.size)
  epoch_fn = device_epoch.compile_epoch(mesh, plan, model_cfg=model_config(config, deterministic=False),
                                        opt=s.opt, base_lr=s.learning_rate, schedule=s.schedule,
                                        scan=config.get("epoch_scan", True))
  return StageProgram(s, epoch_fn, plan, table_of, per_epoch, data_key, pack)


def train_stage(stage, config, workdir, data, mesh, init_params, init_source, watch=None):
  """Run (or resume) one training stage, epoch by epoch; returns its final parameters.
  `watch` (preempt.Watch): a signal it recorded stops the stage after the epoch in flight."""
  watch = watch or preempt.Watch()
  prog = stage_program(stage, config, data, mesh, init_source)
  epochs, keep = prog.settings.epochs, prog.settings.keep_every  # keep: birthjax.tools.curve
  spe = prog.plan.steps_per_epoch
  total = epochs * spe
  state = jax.device_put(train.init_state(init_params, prog.settings.opt.make()),
                         sharding.replicated(mesh))
  meta = {"stage": stage, "model": config.model.to_dict(), "total_steps": total,
          "steps_per_epoch": spe, "init": init_source,
          "fingerprint": stage_fingerprint(stage, config, data, init_source)}
  ckpts = checkpoint.StageCheckpoints(os.path.join(workdir, "checkpoints", stage),
                                      keep_period=keep * spe)
  if ckpts.latest_step() is not None:
    refuse_other_config(ckpts, stage, meta["fingerprint"])
    state, _, _ = ckpts.restore(state)
    print(f"{stage}: resumed from step {int(state['step'])} of {total}")
  seed_key = jax.random.key(prog.settings.seed)
  writer = metrics.Writer(workdir, stage)
  bar = metrics.progress(stage, total, int(state["step"]))
  every = max(1, config.checkpoint_every)

  def report(m, step, elapsed):
    writer.scalars(step, {"train/loss": m["loss"], "train/lr": m["lr"],
                          "train/grad_norm": m["grad_norm"],
                          "train/tokens_per_s": m["tokens"] / max(elapsed, 1e-9),
                          "train/packed": m["packed"], "train/rows": m["rows"]})
    bar.set_postfix_str(f"loss {float(m['loss']):.5f} lr {float(m['lr']):.3e}", refresh=False)
    if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
      raise UserError(f"{stage} loss/gradient became non-finite (loss {m['loss']}, grad norm "
                      f"{m['grad_norm']}) at step {step}", ckpts.directory,
                      "lower the learning rate; the last good checkpoint is kept as the latest")

  first = int(state["step"]) // spe
  on_device = jax.device_put(prog.table_of(first), sharding.replicated(mesh))
  for epoch in range(first, epochs):
    t0 = time.time()
    if prog.per_epoch and epoch > first:
      on_device = jax.device_put(prog.table_of(epoch), sharding.replicated(mesh))
    state, ms = prog.epoch_fn(state, on_device, prog.data_key, seed_key, epoch)
    ms = jax.device_get(ms)  # the epoch's metrics, read back once
    dt = (time.time() - t0) / spe
    for i in range(spe):
      report({k: v[i] for k, v in ms.items()}, epoch * spe + i + 1, dt)
    bar.update(spe)
    step = (epoch + 1) * spe
    stop = watch.agreed()  # SIGTERM / SIGINT since the run started: save this epoch and stop
    if (stop or step // every > (step - spe) // every or step == total
        or (keep and (epoch + 1) % keep == 0)):
      ckpts.save(state, {"epoch": epoch + 1}, meta)
    if stop:
      bar.close(), writer.close(), ckpts.close()
      raise preempt.Preempted(stop, stage, step, ckpts.directory)
  if ckpts.latest_step() is None or ckpts.latest_step() < total:
    ckpts.save(state, {"epoch": epochs}, meta)  # a 0-step stage still leaves its checkpoint
  bar.close(), writer.close(), ckpts.close()
  return state["params"]


# ----------------------------------------------------------------------------- evaluation
def evaluate_stage(config, workdir, data, mesh, params) -> dict:
  """Greedy answers to every eval split, written and scored by `evaluate.write_split`
  (predictions, TSV with confidences, accuracy, coverage, abstention); then results.json."""
  model_cfg = model_config(config)
  threshold = float(config.eval.get("abstain_below", 0.0))
  main_process = jax.process_index() == 0
  documents = [data.vocab.decode(d) for d in data.documents]
  results = {}
  for split, (questions, answers) in data.eval_sets.items():
    raw, conf = decode.predict_with_confidence(params, model_cfg, data.vocab, questions,
                                               steps=config.eval.steps,
                                               batch_size=config.eval.batch_size, mesh=mesh,
                                               recite=recite.mode(config.data))
    in_corpus = evaluate.name_in_corpus([subsets.name_of(q) for q in questions], documents)
    result = evaluate.write_split(workdir, split, questions, answers, raw, conf, in_corpus,
                                  threshold, write=main_process)
    if result is not None:
      results[split] = result
  if main_process:
    evaluate.write_results(os.path.join(workdir, "results.json"), results)
  return results


# ----------------------------------------------------------------------------- driver
def write_config(config, workdir, command=None):
  """W/config.json (the whole config) and, given, W/command.json (the config file and the
  --config overrides as typed: what birthjax.compare names a run by)."""
  if jax.process_index() == 0:
    files.atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
    if command is not None:
      files.atomic_write(os.path.join(workdir, "command.json"), json.dumps(command, indent=2) + "\n")


def run(config, workdir: str, command=None):
  # bad input fails here, with one UserError, before a model is built or the workdir written
  validate(config)
  stages = parse_stages(config.stages)
  compile_cache.enable(config.get("compile_cache", ""))
  if config.init_from and not os.path.exists(config.init_from):
    raise UserError("init_from points to nothing", os.path.abspath(config.init_from),
                    "point --config.init_from at a stage folder such as W/checkpoints/finetune "
                    "or a reference .params file, or leave it empty")
  finetuned = os.path.join(workdir, "checkpoints", "finetune")
  if stages[:1] == ["evaluate"] and not config.init_from and not os.path.isdir(finetuned):
    raise UserError("nothing to evaluate: no finetune checkpoint in the workdir",
                    os.path.abspath(finetuned),
                    "run the finetune stage first, or set --config.init_from")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError("the workdir exists and is not a folder", os.path.abspath(workdir),
                    "pass --workdir a folder (new or existing), or move that file away")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the workdir ({e.strerror or e})", os.path.abspath(workdir),
                    "pass --workdir a path where a folder can be created") from None
  with files.workdir_lock(workdir, take=jax.process_index() == 0):
    return run_stages(config, workdir, stages, command)


def run_stages(config, workdir: str, stages: list[str], command=None):
  """run(), in a workdir that exists and that this run holds."""
  if stages:  # parse and check the four files (the TFDS cache is built later, by load)
    input_pipeline.check_data(config.data, config.model.block_size, config.model.vocab_size)
  mesh = sharding.make_mesh()
  params = model.init_params(model_config(config), jax.random.key(config.seed))
  # what the first stage starts from is read (and checked against the model) before anything
  # is written: a checkpoint that does not fit the config stops here, the workdir untouched
  current, source = None, "scratch"
  if stages and config.init_from:
    if os.path.isfile(config.init_from):  # a reference .params file (torch.save of a state dict)
      from birthjax.model import interop
      current = jax.tree.map(jax.numpy.asarray, interop.load_torch_file(config.init_from, params))
    else:
      current, _ = checkpoint.restore_params(config.init_from, params)
    source = os.path.abspath(config.init_from)
  elif stages == ["evaluate"]:
    current, _ = checkpoint.restore_params(finetuned, params)
  print(f"number of parameters: {model.param_count(params)}")
  if not stages:
    write_config(config, workdir, command)
    return None
  data = input_pipeline.load(config.data, config.model.block_size)
  if len(data.vocab) > config.model.vocab_size:
    raise UserError(f"the data's vocabulary has {len(data.vocab)} characters, more than "
                    f"model.vocab_size={config.model.vocab_size}", data.data_dir,
                    f"set --config.model.vocab_size={len(data.vocab)} or more")
  check_resumable(stages, config, workdir, data, source)
  write_config(config, workdir, command)  # only once the workdir's checkpoints are known to fit it
  with preempt.Watch() as watch:  # from here a SIGTERM / SIGINT stops training after an epoch
    for stage in stages:
      if stage in ("pretrain", "finetune"):
        start = current if current is not None else params
        current = train_stage(stage, config, workdir, data, mesh, start, source, watch)
        source = stage
      else:
        return evaluate_stage(config, workdir, data, mesh, current)
  return None

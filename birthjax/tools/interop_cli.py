"""`python -m birthjax.interop export CKPT_DIR --out=FILE.params [--config=configs/X.py[:preset]]`:
the latest parameters of an orbax stage folder as a `.params` file the A5 reference loads
(birthjax.model.interop does the conversion). The model config comes from the checkpoint's meta,
or from --config for checkpoints whose meta lacks it (then both must agree).
"""
from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
from absl import flags

from birthjax.errors import UserError
from birthjax.model.interop import MODEL_FIELDS, _torch, save_torch_file
from birthjax.tools import cli

flags.declare_key_flag(cli.OUT)  # --out: the .params file to write
flags.DEFINE_string("config", None, "export: configs/X.py[:preset]; only for checkpoints whose "
                    "meta lacks the model config")

USAGE = ("python -m birthjax.interop export CKPT_DIR --out=FILE.params "
         "[--config=configs/X.py[:preset]]")


def _config_model(spec: str) -> dict:
  """config.model of `configs/X.py[:preset]` as a dict."""
  file, _, preset = spec.partition(":")
  if not os.path.isfile(file):
    raise UserError("no such config file", file, "pass --config=configs/vanilla.py[:preset]")
  try:
    mod_spec = importlib.util.spec_from_file_location(
        "_interop_config_" + re.sub(r"\W", "_", os.path.basename(file)), file)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    config = mod.get_config(preset or None)
  except Exception as e:  # noqa: BLE001
    raise UserError(f"cannot load the config ({type(e).__name__}: {e})", spec,
                    "pass --config=configs/vanilla.py[:preset]") from None
  return config.model.to_dict()


def _model_cfg(fields: dict, where: str):
  from birthjax.model.config import ModelConfig
  missing = [k for k in MODEL_FIELDS if k not in fields]
  if missing:
    raise UserError(f"the model config lacks {', '.join(missing)}", where,
                    "pass --config=configs/X.py[:preset] of the run that wrote the checkpoint")
  cfg = ModelConfig.from_config(fields)
  if cfg.positions != "learned":
    raise UserError(f"a model.positions={cfg.positions} model has no counterpart in the reference "
                    "(its positions are the learned pos_emb)", where,
                    "export a run with model.positions=learned")
  return cfg


def export(ckpt_dir: str, out: str, config: str | None = None) -> str:
  """Write the latest parameters of an orbax stage folder as a reference `.params` file."""
  _torch()  # fail before the slow restore
  import jax
  from birthjax.train import checkpoint
  from birthjax.model import model
  d = os.path.abspath(ckpt_dir)
  if os.path.isdir(os.path.join(d, "checkpoints")):  # a workdir, not a stage folder
    raise UserError("no checkpoint found (this is a workdir)", d, "pass a stage folder inside it, "
                    f"e.g. {os.path.join(d, 'checkpoints', 'finetune')}")
  fix = "pass a stage folder such as W/checkpoints/finetune"
  if not os.path.isdir(d):
    raise UserError("no checkpoint found", d, fix)
  ckpts = checkpoint.StageCheckpoints(d)
  try:
    if ckpts.latest_step() is None:
      raise UserError("no checkpoint found", d, fix)
    meta = ckpts.latest_meta()  # the newest readable meta
  finally:
    ckpts.close()
  fields = meta.get("model") if isinstance(meta, dict) else None
  if config is not None:
    given = _config_model(config)
    if fields is not None:
      diff = [k for k in MODEL_FIELDS if k != "dropout" and fields.get(k) != given.get(k)]
      if diff:
        raise UserError("the config's model differs from the checkpoint's ("
                        + ", ".join(f"{k}: {given.get(k)!r} vs {fields.get(k)!r}" for k in diff)
                        + ")", config, "drop --config (the checkpoint's own model config is used) "
                        "or pass the config of the run that wrote it")
    fields = given
  if fields is None:
    raise UserError("the checkpoint's meta has no model config", d,
                    "pass --config=configs/X.py[:preset] of the run that wrote it")
  cfg = _model_cfg(fields, d if config is None else config)
  from birthjax.tools import torch_a5  # torch is there: checked above
  torch_a5.gpt_config(cfg)  # a variant the reference has, before the slow restore
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(model.build(cfg).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, cfg.block_size), jax.numpy.int32))["params"]
  like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=dev), shapes)
  try:
    params, _ = checkpoint.restore_params(d, like)
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 - a checkpoint that does not fit the model config
    raise UserError(f"cannot restore the parameters ({type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})", d,
                    "pass the --config of the run that wrote the checkpoint") from None
  params = jax.tree.map(np.asarray, jax.device_get(params))
  path = save_torch_file(params, cfg, out)
  print(f"wrote {path}: {cfg.variant}, {model.param_count(params)} parameters "
        f"(load with model.load_state_dict(torch.load(FILE)))")
  return path


def _check_usage(argv):
  """A UsageError unless argv is `export CKPT_DIR` and --out is given."""
  args, where = argv[1:], cli.where(argv)
  if not args:
    raise cli.UsageError("no subcommand", where, f"usage: {USAGE}")
  if args[0] != "export":
    raise cli.UsageError(f"unknown subcommand {args[0]!r} (there is one: export)", where,
                     f"usage: {USAGE}")
  if len(args) != 2:
    raise cli.UsageError(f"export takes one checkpoint folder, got {len(args) - 1}", where,
                     "pass a stage folder, e.g. runs/vanilla/checkpoints/finetune; "
                     f"usage: {USAGE}")
  if not cli.OUT.value:
    raise cli.UsageError("--out is required", "python -m birthjax.interop export",
                     "pass --out=FILE.params, the file to write")


def main(argv) -> int:
  """argv[1:]: `export CKPT_DIR`; --out and --config come in flags."""
  _check_usage(argv)
  export(argv[2], cli.OUT.value, flags.FLAGS.config)
  return 0

"""Orbax checkpoints of a stage: params, optimizer state + counters, grain data state, meta.

One CheckpointManager per stage folder (W/checkpoints/pretrain, W/checkpoints/finetune),
items saved side by side at each step:
  params  the model parameters (what `init_from` and evaluation restore)
  train   {'opt_state', 'step', 'tokens'}
  data    the grain iterator state (JSON)
  meta    model config, stage fingerprint, total steps (JSON)
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from birthjax.errors import UserError

ITEMS = ("params", "train", "data", "meta")


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class StageCheckpoints:

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, state: dict, data_state: dict, meta: dict):
    step = int(state["step"])
    train = {k: state[k] for k in ("opt_state", "step", "tokens")}
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]), train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)), force=True)

  def meta(self, step=None) -> dict:
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, like_state: dict, step=None):
    """(state, data_state) at `step` (default latest), shaped and sharded like `like_state`."""
    step = self.latest_step() if step is None else step
    train_like = {k: like_state[k] for k in ("opt_state", "step", "tokens")}
    r = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(like_state["params"])),
        train=ocp.args.StandardRestore(_abstract(train_like)), data=ocp.args.JsonRestore()))
    return dict(r["train"], params=r["params"]), r["data"]

  def close(self):
    self.manager.close()


def restore_params(directory: str, like_params):
  """Parameters of the latest checkpoint in a stage folder (for `init_from`)."""
  directory = os.path.abspath(directory)
  ckpts = StageCheckpoints(directory) if os.path.isdir(directory) else None
  if ckpts is None or ckpts.latest_step() is None:
    raise UserError("no checkpoint found", directory,
                    "point --config.init_from at a stage folder such as W/checkpoints/finetune")
  meta = ckpts.meta()
  r = ckpts.manager.restore(ckpts.latest_step(), args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(like_params))))
  ckpts.close()
  return r["params"], meta

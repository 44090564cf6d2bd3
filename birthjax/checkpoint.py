"""Orbax checkpoints of a stage: params, optimizer state + counters, grain data state, meta.

One CheckpointManager per stage folder (W/checkpoints/pretrain, W/checkpoints/finetune),
items saved side by side at each step:
  params  the model parameters (what `init_from` and evaluation restore)
  train   {'opt_state', 'step', 'tokens'}
  data    the grain iterator state (JSON)
  meta    model config, stage fingerprint, total steps, and a SHA-256 of the saved arrays
Orbax raises on a truncated file but restores a flipped byte silently, so every restore
checks the arrays against the checksum; a bad latest checkpoint falls back to the previous
good one with a warning, and no good one is a clear error.
"""
from __future__ import annotations

import hashlib
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from birthjax.errors import UserError

ITEMS = ("params", "train", "data", "meta")


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def tree_checksum(tree) -> str:
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


class StageCheckpoints:

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self):
    return self.manager.latest_step()

  def latest_meta(self):
    """The newest readable meta (None if none): checked before restoring any arrays."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      except Exception:  # unreadable: restore() will say so and fall back
        continue
    return None

  def save(self, state: dict, data_state: dict, meta: dict):
    step = int(state["step"])
    train = {k: state[k] for k in ("opt_state", "step", "tokens")}
    meta = dict(meta, checksums={"params": tree_checksum(state["params"]),
                                 "train": tree_checksum(train)})
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]), train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)), force=True)

  def _restore_checked(self, like: dict, items=("params", "train", "data")):
    # like: {'params': tree} or {'params': tree, 'train': tree}
    """(step, {item: restored} + meta) of the newest checkpoint whose arrays match its checksum."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        args = {k: ocp.args.StandardRestore(_abstract(v)) for k, v in like.items()}
        args.update({k: ocp.args.JsonRestore() for k in ("data", "meta") if k in items + ("meta",)})
        r = dict(self.manager.restore(step, args=ocp.args.Composite(**args)).items())
        sums = r["meta"].get("checksums", {})
        if all(tree_checksum(r[k]) == sums.get(k) for k in like):
          return step, r
        problem = "its arrays do not match the saved checksum"
      except Exception as e:  # truncated or unreadable files
        problem = f"it cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
      logging.warning("checkpoint %s/%d is corrupt: %s", self.directory, step, problem)
      aside = os.path.join(self.directory, f"corrupt.{step}")
      print(f"warning: checkpoint {self.directory}/{step} is corrupt ({problem}); "
            f"moved to {aside}, trying an earlier one")
      if jax.process_index() == 0:
        os.replace(os.path.join(self.directory, str(step)), aside)
      self.manager.reload()
    raise UserError("no intact checkpoint left", self.directory,
                    "delete this folder to restart the stage, or use another --workdir")

  def restore(self, like_state: dict):
    """(state, data_state, meta) of the newest intact checkpoint, shaped like `like_state`."""
    train_like = {k: like_state[k] for k in ("opt_state", "step", "tokens")}
    _, r = self._restore_checked({"params": like_state["params"], "train": train_like})
    return dict(r["train"], params=r["params"]), r["data"], r["meta"]

  def close(self):
    self.manager.close()


def restore_params(directory: str, like_params):
  """Parameters of the newest intact checkpoint of a stage folder (for `init_from`)."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise UserError("checkpoint folder not found", directory,
                    "point --config.init_from at a stage folder such as W/checkpoints/finetune")
  ckpts = StageCheckpoints(directory)
  if ckpts.latest_step() is None:
    raise UserError("no checkpoint found", directory,
                    "point --config.init_from at a stage folder such as W/checkpoints/finetune")
  try:
    _, r = ckpts._restore_checked({"params": like_params}, items=("params",))
  finally:
    ckpts.close()
  return r["params"], r["meta"]

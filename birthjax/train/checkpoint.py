"""Orbax checkpoints of a stage: params, optimizer state + counters, data position, meta.

One CheckpointManager per stage folder (W/checkpoints/pretrain, W/checkpoints/finetune),
items saved side by side at each step:
  params  the model parameters (what `init_from` and evaluation restore)
  train   {'opt_state', 'step', 'tokens'}
  data    where the data stream stands: {'epoch': the next epoch} (JSON)
  meta    model config, stage fingerprint, total steps, and a SHA-256 of the saved arrays
Orbax raises on a truncated file but restores a flipped byte silently, so every restore
checks the arrays against the checksum; a bad latest checkpoint falls back to the previous
good one with a warning, and no good one is a clear error. Only an unreadable file or a
checksum mismatch is corruption (the checkpoint is moved to `corrupt.<step>`): a readable
checkpoint whose arrays do not fit what the config builds (another model size or variant)
is an error naming both shapes, and nothing in its folder is moved or changed.
"""
from __future__ import annotations

import hashlib
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from birthjax.errors import UserError

def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def shapes(tree) -> dict:
  """{'blocks_0/attn/key/kernel': shape, ...} of a tree of arrays (or array metadata)."""
  return {_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def misfit(saved: dict, wanted: dict) -> str | None:
  """What differs between two {array name: shape} maps, in words (None if nothing)."""
  only_saved = sorted(set(saved) - set(wanted))
  only_wanted = sorted(set(wanted) - set(saved))
  other = [k for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
  parts = [f"{k} is {saved[k]} in the checkpoint, {wanted[k]} in the config's model"
           for k in other[:2]] + ([f"{len(other) - 2} more arrays differ in shape"]
                                  if len(other) > 2 else [])
  if only_saved or only_wanted:
    parts.append(f"{len(only_saved)} arrays only in the checkpoint"
                 + (f" (e.g. {only_saved[0]})" if only_saved else "")
                 + f", {len(only_wanted)} only in the config's model"
                 + (f" (e.g. {only_wanted[0]})" if only_wanted else ""))
  return "; ".join(parts) or None


def describe(model: dict | None) -> str:
  """'vanilla n_layer=4 n_head=8 n_embd=256 block_size=128' of a saved model config."""
  if not model:
    return "an unrecorded model"
  keys = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") + (
      ("bottleneck_dim",) if model.get("variant", "vanilla") != "vanilla" else ())
  return " ".join([str(model.get("variant", "vanilla"))] + [f"{k}={model[k]}" for k in keys if k in model])


def tree_checksum(tree) -> str:
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


class StageCheckpoints:

  def __init__(self, directory: str, *, max_to_keep: int = 2, keep_period: int = 0):
    """Keeps the newest `max_to_keep` checkpoints and, with keep_period > 0, every one whose
    step is a multiple of it (pretrain.keep_every: the points of a learning curve)."""
    self.directory = os.path.abspath(directory)
    policies = [ocp.checkpoint_managers.LatestN(max_to_keep)] + (
        [ocp.checkpoint_managers.EveryNSteps(keep_period)] if keep_period > 0 else [])
    handlers = dict(params=ocp.StandardCheckpointHandler(), train=ocp.StandardCheckpointHandler(),
                    data=ocp.JsonCheckpointHandler(), meta=ocp.JsonCheckpointHandler())
    self.manager = ocp.CheckpointManager(
        self.directory, item_handlers=handlers,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            create=True, enable_async_checkpointing=False))

  def steps(self):
    return sorted(self.manager.all_steps())

  def tokens(self, step: int) -> int:
    """The token count saved at `step` (the lr schedule's clock)."""
    r = self.manager.restore(step, args=ocp.args.Composite(train=ocp.args.StandardRestore()))
    return int(r["train"]["tokens"])

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

  def _restore_checked(self, like: dict, items=("params", "train", "data"), step=None):
    # like: {'params': tree} or {'params': tree, 'train': tree}
    """(step, {item: restored} + meta) of the newest checkpoint (or the one at `step`) whose
    arrays match its checksum."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if step is not None and step not in steps:
      raise UserError(f"no checkpoint of step {step} (it holds {sorted(steps)})", self.directory,
                      "pick one of the steps it holds")
    for step in steps if step is None else [step]:
      try:
        self._check_fit(step, like)
        args = {k: ocp.args.StandardRestore(_abstract(v)) for k, v in like.items()}
        args.update({k: ocp.args.JsonRestore() for k in ("data", "meta") if k in items + ("meta",)})
        r = dict(self.manager.restore(step, args=ocp.args.Composite(**args)).items())
        sums = r["meta"].get("checksums", {})
        if all(tree_checksum(r[k]) == sums.get(k) for k in like):
          return step, r
        problem = "its arrays do not match the saved checksum"
      except UserError:  # readable, but not what the config builds: never moved
        raise
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

  def _check_fit(self, step: int, like: dict):
    """A UserError if the parameters saved at `step` are not shaped like `like`'s (what the
    config builds); a metadata file that cannot be read raises as it is (corruption)."""
    saved = self.manager.item_metadata(step)["params"]
    problem = misfit(shapes(saved.tree), shapes(like["params"]))
    if problem:
      try:
        model = self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"].get("model")
      except Exception:  # an unreadable meta: the shapes alone say it
        model = None
      raise UserError(f"the checkpoint ({describe(model)}) does not fit the model this config "
                      f"builds: {problem}",
                      f"{self.directory}/{step}", "pass the model flags the checkpoint was "
                      "trained with (its workdir's config.json), or point at a checkpoint of "
                      "this model; the checkpoint is left as it is")

  def restore(self, like_state: dict):
    """(state, data_state, meta) of the newest intact checkpoint, shaped like `like_state`."""
    train_like = {k: like_state[k] for k in ("opt_state", "step", "tokens")}
    _, r = self._restore_checked({"params": like_state["params"], "train": train_like})
    return dict(r["train"], params=r["params"]), r["data"], r["meta"]

  def close(self):
    self.manager.close()


def restore_params(directory: str, like_params, step=None):
  """Parameters of the newest intact checkpoint of a stage folder (for `init_from`), or of the
  one at `step`."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise UserError("checkpoint folder not found", directory,
                    "point --config.init_from at a stage folder such as W/checkpoints/finetune")
  ckpts = StageCheckpoints(directory)
  if ckpts.latest_step() is None:
    raise UserError("no checkpoint found", directory,
                    "point --config.init_from at a stage folder such as W/checkpoints/finetune")
  try:
    _, r = ckpts._restore_checked({"params": like_params}, items=("params",), step=step)
  finally:
    ckpts.close()
  return r["params"], r["meta"]

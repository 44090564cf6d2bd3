"""TensorBoard scalars through tensorboardX (no TensorFlow) and the per-stage tqdm bar."""
from __future__ import annotations

import os

import jax
from tqdm import tqdm


class Writer:
  """Scalars to W/tb/<stage>; only process 0 writes."""

  def __init__(self, workdir: str, stage: str):
    self._w = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # imports torch when installed: only when training
      self._w = SummaryWriter(os.path.join(workdir, "tb", stage))

  def scalars(self, step: int, values: dict):
    if self._w:
      for k, v in values.items():
        self._w.add_scalar(k, float(v), step)

  def close(self):
    if self._w:
      self._w.close()


def progress(stage: str, total: int, initial: int):
  return tqdm(total=total, initial=initial, desc=stage, dynamic_ncols=True,
              disable=jax.process_index() != 0, mininterval=1.0)

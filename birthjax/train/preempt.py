"""Preemption: SIGTERM or SIGINT while `run.run` runs its stages lets the epoch program in
flight finish (a signal that comes while a stage compiles stops it after its next epoch),
saves a checkpoint, prints one line saying where, and stops with exit code 128 + the signal
(143 for SIGTERM, 130 for SIGINT); the same command resumes bit for bit. A signal during
evaluation lets it finish (there is nothing left to resume).

The first signal is recorded and the previous handlers come back, so a second signal stops
the process at once (during a save too: orbax writes a temporary folder and renames it, so
the previous checkpoint stays intact). With several processes (jax.distributed) every
process stops after the same epoch: each epoch end gathers the signals all processes
received.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """A stage stopped by a signal, after saving; main.py prints `line` and exits with `code`."""

  def __init__(self, signum: int, stage: str, step: int, where: str):
    self.code = 128 + signum
    self.line = (f"{stage}: stopped by {signal.Signals(signum).name} after step {step}, "
                 f"checkpoint saved in {where}; rerun the same command to resume")
    super().__init__(self.line)


class Watch:
  """Context manager recording the first SIGTERM/SIGINT (`signum`, 0 if none)."""

  def __init__(self):
    self.signum, self.previous = 0, {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signals reach only this thread
      self.previous = {s: signal.signal(s, self._record) for s in SIGNALS}
    return self

  def _record(self, signum, frame):
    del frame
    self.signum = self.signum or signum
    self._restore()

  def _restore(self):
    for s, handler in self.previous.items():
      signal.signal(s, handler)
    self.previous = {}

  def __exit__(self, *exc):
    self._restore()

  def agreed(self) -> int:
    """The signal any process received (0: none), the same on every process."""
    if jax.process_count() == 1:
      return self.signum
    return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))

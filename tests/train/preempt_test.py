"""Preemption (birthjax/train/preempt.py): `python main.py ...` sent SIGTERM or SIGINT mid-training
finishes the epoch in flight, saves it, prints one line and exits 143 / 130; the same command
then resumes from exactly that step and ends bitwise equal (CPU) to an uninterrupted run. A
second SIGTERM right after the first (during the save) still leaves a checkpoint to resume.

Real subprocesses, the sizes of kill_resume_test.py (pretraining 2 steps an epoch x 4 epochs,
finetuning 2 x 2). Each signal is sent 0-0.2 s after the run has saved its first pretraining
checkpoint (the test fails if the run ended first); it stops pretraining or finetuning,
whichever is running or compiling then.
"""
import os
import random
import re
import signal
import time

import pytest

from tests.kill_resume_test import (FINETUNE_STEPS, PRETRAIN_STEPS, _read, assert_same_as_reference,
                                    listing, steps)  # runs, reference: conftest.py, shared


def _signal_in_pretraining(runs, workdir, signals, rng):
  """Start the command, send `signals` (a random 0-0.2 s after the first checkpoint), return
  (exit code, stdout)."""
  p = runs.start(workdir)
  end = time.time() + 150
  while not steps(workdir, "pretrain"):
    assert p.poll() is None, _read(p.log + ".err")[-2000:]
    assert time.time() < end, "no pretraining checkpoint in 150 s"
    time.sleep(0.005)
  time.sleep(rng.uniform(0.0, 0.2))
  assert p.poll() is None
  for s in signals:
    os.kill(p.pid, s)
    time.sleep(0.05)
  rc = p.wait(timeout=120)
  return rc, _read(p.log + ".out")


@pytest.mark.parametrize("signals, code", [((signal.SIGTERM,), 143), ((signal.SIGINT,), 130)],
                         ids=["sigterm", "sigint"])
def test_signal_saves_the_epoch_and_resumes_bitwise(reference, runs, signals, code):
  workdir = os.path.join(runs.root, f"signal{code}")
  rc, out = _signal_in_pretraining(runs, workdir, signals, random.Random(code))
  assert rc == code, out
  name = signal.Signals(signals[0]).name
  lines = [l for l in out.splitlines() if f"stopped by {name}" in l]
  assert len(lines) == 1, out
  m = re.search(r"(\w+): stopped by \w+ after step (\d+), checkpoint saved in (\S+);", lines[0])
  stage, stopped = m.group(1), int(m.group(2))
  assert m.group(3) == os.path.join(workdir, "checkpoints", stage), lines[0]
  assert steps(workdir, stage)[-1] == stopped  # the epoch in flight was saved: nothing lost
  print(lines[0])
  if code == 130:  # SIGINT takes SIGTERM's path; resuming is checked once, below, for SIGTERM
    return
  out = runs.finish(runs.start(workdir))
  total = PRETRAIN_STEPS if stage == "pretrain" else FINETUNE_STEPS
  assert f"{stage}: resumed from step {stopped} of {total}" in out, out
  assert_same_as_reference(reference, workdir)


def test_a_second_signal_during_the_save_leaves_a_checkpoint(reference, runs):
  workdir = os.path.join(runs.root, "twice")
  rc, out = _signal_in_pretraining(runs, workdir, (signal.SIGTERM, signal.SIGTERM), random.Random(2))
  assert rc in (143, -signal.SIGTERM), (rc, out)  # saved and stopped, or killed by the second
  assert steps(workdir, "pretrain"), listing(workdir, "pretrain")
  runs.finish(runs.start(workdir))
  assert_same_as_reference(reference, workdir)

"""Reliability: `python main.py ...` killed with SIGKILL at any point of pretraining or finetuning,
then started again with the same command, ends bitwise equal (CPU) to an uninterrupted run.

Real subprocesses (one CPU device each, XLA_FLAGS=''), the smoke model on a 31-person synthetic
world: pretraining 32 documents / 16 = 2 steps an epoch x 4 epochs, finetuning 20 questions / 10
= 2 steps x 2 epochs, a checkpoint every 2 steps, i.e. at every epoch's end (orbax writes
`<step>.orbax-checkpoint-tmp`, then renames it to `<step>`). The reference is one uninterrupted run of the same command in another workdir.
Every run shares a persistent XLA compilation cache, filled by the reference before any kill
(killed runs only read it): the resumed runs use the cached executables, the reference the
freshly compiled ones.

Compared bitwise: the final parameters of both stages, the final checkpoints' SHA-256 of the
parameters and of {opt_state, step, tokens} (so the optimizer state too), dev.predictions,
test.predictions and results.json.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

import jax
import numpy as np
import pytest

from birthjax.train import checkpoint
from birthjax.model import model
from birthjax import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from configs import vanilla  # noqa: E402

TMP = ".orbax-checkpoint-tmp"
PRETRAIN_STEPS, FINETUNE_STEPS = 8, 4
SIZES = ("--config.checkpoint_every=2", "--config.pretrain.epochs=4", "--config.finetune.epochs=2",
         "--config.data.synthetic_people=31", "--config.pretrain.batch_size=16",
         "--config.finetune.batch_size=10")
OUTPUTS = ("dev.predictions", "test.predictions", "results.json")


class Runs:
  """Launches the one command (only --workdir differs) and kills it by pid."""

  def __init__(self, root):
    self.root, self.launches = root, {}
    self.cache = os.path.join(root, "tfds")
    jit_cache = os.path.join(root, "jit")
    # unbuffered: a killed start's stdout ('resumed from step ...') is on disk up to the kill
    self.env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
                    JAX_COMPILATION_CACHE_DIR=jit_cache,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

  def start(self, workdir):
    n = self.launches[workdir] = self.launches.get(workdir, 0) + 1
    log = f"{workdir}.{n}"  # .out, .err
    argv = [sys.executable, "main.py", "--config=configs/vanilla.py:smoke", f"--workdir={workdir}",
            "--config.data.source=synthetic", f"--config.data.cache_dir={self.cache}", *SIZES]
    with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
      p = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=err)
    p.log = log
    return p

  def finish(self, p, timeout=180):
    """Wait for a run to end by itself; its stdout (asserting it succeeded)."""
    rc = p.wait(timeout=timeout)
    out, err = _read(p.log + ".out"), _read(p.log + ".err")
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr (tail):\n{err[-3000:]}"
    return out


def _read(path):
  with open(path, errors="replace") as f:
    return f.read()


def kill_when(p, cond, timeout=120):
  """SIGKILL p (by pid) as soon as cond() holds; False if p ended first."""
  end = time.time() + timeout
  while p.poll() is None:
    if cond():
      os.kill(p.pid, signal.SIGKILL)
      assert p.wait(timeout=30) == -signal.SIGKILL
      return True
    assert time.time() < end, (f"condition not met in {timeout}s; stderr:\n"
                               f"{_read(p.log + '.err')[-2000:]}")
    time.sleep(0.002)
  return False


def listing(workdir, stage):
  d = os.path.join(workdir, "checkpoints", stage)
  return sorted(os.listdir(d)) if os.path.isdir(d) else []


def steps(workdir, stage):
  return sorted(int(n) for n in listing(workdir, stage) if n.isdigit())


def tmp_dirs(workdir, stage):
  return [n for n in listing(workdir, stage) if TMP in n]


def final_state(workdir):
  """{stage: (params, meta checksums, fingerprint)} of each stage's newest intact checkpoint."""
  like = model.init_params(run.model_config(vanilla.get_config("smoke")), jax.random.key(0))
  out = {}
  for stage in ("pretrain", "finetune"):
    params, meta = checkpoint.restore_params(os.path.join(workdir, "checkpoints", stage), like)
    out[stage] = (params, meta["checksums"], meta["fingerprint"])
  return out


def assert_same_as_reference(reference, workdir):
  ref_dir, ref_state = reference
  assert steps(workdir, "pretrain")[-1] == PRETRAIN_STEPS
  assert steps(workdir, "finetune")[-1] == FINETUNE_STEPS
  got = final_state(workdir)
  for stage in ("pretrain", "finetune"):
    (a, a_sums, a_fp), (b, b_sums, b_fp) = ref_state[stage], got[stage]
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                    err_msg=f"{stage} {jax.tree_util.keystr(path)}")
    assert (a_sums, a_fp) == (b_sums, b_fp), stage  # optimizer state, step, tokens too
  for name in OUTPUTS:
    assert _read(os.path.join(workdir, name)) == _read(os.path.join(ref_dir, name)), name


def run_reference(runs):
  """(workdir, final state) of one uninterrupted run (the `reference` fixture, conftest.py)."""
  workdir = os.path.join(runs.root, "reference")
  p = runs.start(workdir)
  out = runs.finish(p)
  assert "resumed" not in out
  # a run prints its own lines, not library INFO (those need --verbosity=0)
  noise = ("Unable to initialize backend", "Downloading and preparing", "downloaded and prepared")
  assert not [n for n in noise if n in out + _read(p.log + ".err")], out
  assert steps(workdir, "pretrain") == [PRETRAIN_STEPS - 2, PRETRAIN_STEPS]
  assert steps(workdir, "finetune") == [FINETUNE_STEPS - 2, FINETUNE_STEPS]
  return workdir, final_state(workdir)


def _torn_copy(src, dst, drop):
  """A half-written step: a copy of checkpoint `src` without `drop` (items or files)."""
  shutil.copytree(src, dst)
  for name in drop:
    path = os.path.join(dst, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def test_kill_mid_save_in_pretraining_then_in_finetuning(reference, runs, random_kills):
  """(a)+(c) killed mid-epoch while a pretraining checkpoint is being written, with more torn
  leftovers planted; (b) killed in finetuning; the third start finishes, bitwise equal.
  (random_kills: only so that loop runs alongside.)"""
  workdir = os.path.join(runs.root, "chain")
  pre, ft = (os.path.join(workdir, "checkpoints", s) for s in ("pretrain", "finetune"))

  # 1: pretraining, past checkpoint 2 (epoch 0's end), killed while a later one is being written
  p = runs.start(workdir)
  assert kill_when(p, lambda: "2" in listing(workdir, "pretrain") and
                   any(n != f"2{TMP}" for n in tmp_dirs(workdir, "pretrain")))
  torn = tmp_dirs(workdir, "pretrain")
  last = steps(workdir, "pretrain")[-1]
  assert torn and last < PRETRAIN_STEPS and not os.path.exists(ft), listing(workdir, "pretrain")
  torn_step = int(torn[0].split(".")[0])
  assert torn_step == last + 2, (torn, last)  # the next checkpoint of the cadence

  # what a kill mid-save leaves elsewhere: a temporary folder of a step the cadence never
  # saves again, and (filesystems without atomic rename) a step folder with no commit marker
  # and an item missing
  last_dir = os.path.join(pre, str(last))
  _torn_copy(last_dir, os.path.join(pre, f"{last + 1}{TMP}"), ["train"])
  _torn_copy(last_dir, os.path.join(pre, str(torn_step + 2)),
             ["train"] + [n for n in os.listdir(last_dir) if n.startswith("_CHECKPOINT_METADATA")
                          or n == "commit_success.txt"])

  # 2: resumes pretraining from `last`, finishes it; killed in finetuning past its checkpoint 2
  p = runs.start(workdir)
  assert kill_when(p, lambda: "2" in listing(workdir, "finetune"))
  out = _read(p.log + ".out")
  assert f"checkpoints/pretrain/{torn_step + 2} is corrupt" in out, out
  assert f"pretrain: resumed from step {last} of {PRETRAIN_STEPS}" in out, out
  assert steps(workdir, "pretrain")[-1] == PRETRAIN_STEPS
  assert steps(workdir, "finetune")[-1] < FINETUNE_STEPS, listing(workdir, "finetune")
  assert f"{torn_step}{TMP}" not in listing(workdir, "pretrain")  # rewritten as step torn_step
  assert not os.path.exists(os.path.join(workdir, "dev.predictions"))
  ft_last = steps(workdir, "finetune")[-1]
  # a torn temporary folder of finetuning's next checkpoint as well
  _torn_copy(os.path.join(ft, str(ft_last)), os.path.join(ft, f"{ft_last + 2}{TMP}"), ["params"])

  # 3: the same command once more runs to the end
  out = runs.finish(runs.start(workdir))
  assert f"pretrain: resumed from step {PRETRAIN_STEPS} of {PRETRAIN_STEPS}" in out, out
  assert f"finetune: resumed from step {ft_last} of {FINETUNE_STEPS}" in out, out
  assert "is corrupt" not in out, out
  assert tmp_dirs(workdir, "finetune") == [], listing(workdir, "finetune")
  assert f"corrupt.{torn_step + 2}" in listing(workdir, "pretrain")  # moved aside, kept
  kept = checkpoint.StageCheckpoints(pre)  # the leftover temporary folder is no step
  kept_steps = list(kept.manager.all_steps())
  kept.close()
  assert kept_steps == [PRETRAIN_STEPS - 2, PRETRAIN_STEPS], listing(workdir, "pretrain")
  assert_same_as_reference(reference, workdir)


def _random_kills(runs, workdir, state):
  """SIGKILL at seeded random times, restarting each time, until a start runs to the end."""
  rng = random.Random(224)
  entries = lambda: {(s, n) for s in ("pretrain", "finetune") for n in listing(workdir, s)}
  for attempt in range(3):
    before = entries()
    p = state["proc"] = runs.start(workdir)
    if attempt == 2:  # the budget for kills is spent: this start finishes
      runs.finish(p)
      return
    delay, first_write = rng.uniform(0.0, 3.0), []

    def due():
      if not first_write:
        if not entries() - before:
          return False
        first_write.append(time.time())
      return time.time() - first_write[0] >= delay

    if not kill_when(p, due):
      runs.finish(p)
      return
    state["kills"].append((round(delay, 2),
                           {s: listing(workdir, s) for s in ("pretrain", "finetune")},
                           os.path.exists(os.path.join(workdir, "results.json"))))


@pytest.fixture(scope="module")
def random_kills(reference, runs):
  """Runs _random_kills in a thread from when the reference is done: on 2 cores it overlaps
  the other test's runs (each start is mostly one busy thread) and saves ~30 s."""
  workdir = os.path.join(runs.root, "random")
  state = {"kills": [], "proc": None, "error": None}

  def loop():
    try:
      _random_kills(runs, workdir, state)
    except BaseException:  # noqa: B036 -- reported by the test
      state["error"] = traceback.format_exc()

  thread = threading.Thread(target=loop, daemon=True)
  thread.start()
  yield workdir, thread, state
  thread.join(timeout=300)
  if thread.is_alive() and state["proc"] is not None and state["proc"].poll() is None:
    os.kill(state["proc"].pid, signal.SIGKILL)  # only the process this loop started


def test_random_kills_until_the_run_completes(reference, random_kills):
  """(c) SIGKILL at seeded random times, restarting each time (every start resumes), until a
  start runs to the end. Each kill comes 0-3 s after the start's first checkpoint write
  begins (about the rest of a smoke run); checkpoint writes take most of a smoke run's
  training time, so kills mostly land in one (the folders printed then hold a
  `*.orbax-checkpoint-tmp`)."""
  workdir, thread, state = random_kills
  thread.join(timeout=400)
  assert not thread.is_alive(), "the kill/restart loop did not end in 400 s"
  assert state["error"] is None, state["error"]
  assert state["kills"], "no kill landed before the run finished: the test would prove nothing"
  print("\nkills (delay after the first write; checkpoint folders after the kill; results.json):",
        *state["kills"], sep="\n  ")
  assert_same_as_reference(reference, workdir)

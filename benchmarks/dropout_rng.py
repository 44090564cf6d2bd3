"""Dropout bits: model.dropout_rng='hash' (birthjax/model/fastrng.py) vs JAX's own key impls.

  python benchmarks/dropout_rng.py [--steps=9] [--warmup=2] [--masks=9] [--epochs=0]
      [--data_dir=...] [--json=PATH]

Times the full A5 pretraining train step (vanilla, vocab 256, 4 layers, 8 heads, 256 wide,
block 128, dropout 0.1; batch 128 rows x 127 positions, half of each row's targets PAD)
with the dropout key drawn four ways, in one process, round-robin:
  threefry    JAX's default (the key train_step derives, unchanged)
  hash        birthjax.model.fastrng (model.dropout_rng='hash')
  rbg         jax.random's 'rbg' impl: threefry split/fold_in, XLA RngBitGenerator bits
  unsafe_rbg  'unsafe_rbg': RngBitGenerator for the bits and for split/fold_in too
The rbg keys are 4 uint32 words drawn from the step's threefry key (jax.random.bits) and
wrapped with jax.random.wrap_key_data(impl=...), inside the jitted step: `fastrng.rewrap`
is patched here (this file only) to accept the two extra names. Also times one
[64, 8, 128, 128] jax.random.bernoulli mask per impl and checks that each impl's mask is
reproducible (the same key twice under jit; jit vs eager). With --epochs=N, also N
on-device epochs (birthjax.train.device_epoch.compile_epoch, packed) per impl, round-robin
(compiles for minutes per impl on a CPU).

A background training run (a process whose command line has main.py) is paused with
SIGSTOP while timing and resumed with SIGCONT afterwards, also on error; a watchdog
process resumes it if this one dies without cleaning up.
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Paused, background_runs  # noqa: E402
from birthjax.model import fastrng, model  # noqa: E402
from birthjax import sharding
from birthjax.train import optim, train
from birthjax.data.vocab import PAD  # noqa: E402

IMPLS = ("threefry", "hash", "rbg", "unsafe_rbg")
MASK_SHAPE = (64, 8, 128, 128)
_rewrap = fastrng.rewrap


def rewrap(key, impl: str):
  """fastrng.rewrap, plus 'rbg' / 'unsafe_rbg': a key of that impl from 4 words of `key`."""
  if impl in ("rbg", "unsafe_rbg"):
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl=impl)
  return _rewrap(key, impl)


fastrng.rewrap = rewrap  # train.train_step looks it up at trace time


# ----------------------------------------------------------------------------- the step
A5 = dict(vocab_size=256, variant="vanilla", n_layer=4, n_head=8, n_embd=256, block_size=128,
          dropout=0.1, deterministic=False)
OPT = optim.Settings()
SCHED = optim.Schedule(512 * 20, 200 * 2938 * 128)
LR = 6e-3


def a5_batch(rows=128, width=127, seed=0):
  """Random ids in 2..255; each row's last half of targets PAD (as short documents are)."""
  r = np.random.default_rng(seed)
  x = r.integers(2, 256, (rows, width), dtype=np.int32)
  y = r.integers(2, 256, (rows, width), dtype=np.int32)
  y[:, width // 2:] = PAD
  return {"x": x, "y": y, "row_mask": np.ones(rows, bool)}


def fresh_state(host_params, mesh):
  """A train state in new device buffers (states are donated: none may share a buffer)."""
  state = train.init_state(jax.tree.map(jnp.array, host_params), OPT.make())
  state = jax.tree.map(lambda a: jnp.array(a, copy=True), state)
  return jax.device_put(state, sharding.replicated(mesh))


def compiled_steps(mesh, batch):
  """{impl: (compiled step, state)}: one AOT-compiled train step per dropout impl."""
  out = {}
  params = model.init_params(model.ModelConfig(**dict(A5, deterministic=True)), jax.random.key(0))
  params = jax.tree.map(np.asarray, params)  # host copies: each state gets its own buffers
  for impl in IMPLS:
    cfg = model.ModelConfig(**A5, dropout_rng=impl)
    step = train.compile_train_step(mesh, model_cfg=cfg, opt=OPT, base_lr=LR, schedule=SCHED)
    state = fresh_state(params, mesh)
    t = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(0)).compile()
    print(f"  compiled step[{impl}] in {time.perf_counter() - t:.1f} s", flush=True)
    out[impl] = [compiled, state]
  return out


def round_robin(fns, rounds, warmup):
  """({name: [wall s]}, {name: [process CPU s]}): each fn called once a round, in rotating
  order, after `warmup` rounds. CPU seconds (all threads of this process) are less
  sensitive than wall time to other work on a shared machine."""
  wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
  names = list(fns)
  for r in range(warmup + rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for k in order:
      t, c = time.perf_counter(), time.process_time()
      fns[k]()
      dt, dc = time.perf_counter() - t, time.process_time() - c
      if r >= warmup:
        wall[k].append(dt)
        cpu[k].append(dc)
  return wall, cpu


def paired_ratio(times, k, ref="hash"):
  """Median over rounds of t[k] / t[ref] (same round: robust to drifting load)."""
  return statistics.median(a / b for a, b in zip(times[k], times[ref]))


def table(title, times, unit=1.0, unit_name="s"):
  """Print and return medians and ratios to hash of wall and CPU times ((wall, cpu) dicts).
  '/ hash': median over median; 'paired': median over rounds of the same round's ratio."""
  wall, cpu = times
  ref, cref = statistics.median(wall["hash"]), statistics.median(cpu["hash"])
  print(f"\n{title}")
  print(f"  {'impl':<11} {'wall ' + unit_name:>10} {'min':>9} {'/ hash':>7} {'paired':>7}"
        f" | {'cpu ' + unit_name:>10} {'/ hash':>7} {'paired':>7}  n")
  rows = {}
  for k, ts in wall.items():
    med, cmed = statistics.median(ts), statistics.median(cpu[k])
    rows[k] = {"median_s": med, "min_s": min(ts), "ratio_to_hash": med / ref,
               "paired_ratio_to_hash": paired_ratio(wall, k), "cpu_median_s": cmed,
               "cpu_ratio_to_hash": cmed / cref, "cpu_paired_ratio_to_hash": paired_ratio(cpu, k),
               "n": len(ts), "all_s": ts, "all_cpu_s": cpu[k]}
    r = rows[k]
    print(f"  {k:<11} {med / unit:>10.3f} {min(ts) / unit:>9.3f} {med / ref:>7.3f} "
          f"{r['paired_ratio_to_hash']:>7.3f} | {cmed / unit:>10.3f} {cmed / cref:>7.3f} "
          f"{r['cpu_paired_ratio_to_hash']:>7.3f}  {len(ts)}")
  return rows


# ----------------------------------------------------------------------------- masks
def impl_key(impl, seed=0):
  return jax.jit(lambda k: rewrap(k, impl))(jax.random.key(seed))


def mask_fn(shape=MASK_SHAPE):
  return jax.jit(lambda k: jax.random.bernoulli(k, 0.9, shape))


def step_masks_fn(rows=128, width=127, cfg=A5):
  """jit(seed key, step -> keep counts): every dropout mask one train step draws (embedding,
  then per layer attention weights, attention proj, MLP), each from its own fold_in key as
  flax's make_rng gives them; the step's RNG work without the model."""
  d, h, layers, p = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], 1.0 - cfg["dropout"]
  shapes = [(rows, width, d)] + [(rows, h, width, width), (rows, width, d),
                                 (rows, width, d)] * layers

  def masks(impl, seed_key, step):
    key = rewrap(jax.random.fold_in(seed_key, step), impl)
    return [jnp.sum(jax.random.bernoulli(jax.random.fold_in(key, i), p, s), dtype=jnp.int32)
            for i, s in enumerate(shapes)]
  return jax.jit(masks, static_argnums=0), sum(int(np.prod(s)) for s in shapes)


def reproducibility(shape=(8, 8, 128, 128)):
  """{impl: checks}: same key twice under jit, jit vs eager, another key differs, keep rate."""
  f = mask_fn(shape)
  out = {}
  for impl in IMPLS:
    k, k2 = impl_key(impl, 0), impl_key(impl, 1)
    a, b = np.asarray(f(k)), np.asarray(f(k))
    eager = np.asarray(jax.random.bernoulli(k, 0.9, shape))
    stepped = jax.random.fold_in(k, 7)  # fold_in of the impl (flax's make_rng uses it)
    out[impl] = {"jit_twice_equal": bool((a == b).all()),
                 "jit_vs_eager_equal": bool((a == eager).all()),
                 "other_key_differs": bool((a != np.asarray(f(k2))).any()),
                 "fold_in_differs": bool((a != np.asarray(f(stepped))).any()),
                 "keep_rate": float(a.mean())}
  return out


# ----------------------------------------------------------------------------- epochs
def epoch_fns(mesh, data_dir):
  """{impl: [compiled epoch, state]}: on-device pretraining epochs as main.py builds them
  (run.stage_program: config.device_epochs, packed), one per dropout impl."""
  from configs import vanilla
  from birthjax.data import input_pipeline
  from birthjax import run
  config = vanilla.get_config()
  config.data.dir = data_dir
  data = input_pipeline.load(config.data, config.model.block_size)
  params = model.init_params(model.ModelConfig(**dict(A5, deterministic=True)), jax.random.key(0))
  params = jax.tree.map(np.asarray, params)
  out, prog = {}, None
  for impl in IMPLS:
    config.model.dropout_rng = impl
    prog = run.stage_program("pretrain", config, data, mesh)
    arrays = jax.device_put(prog.table_of(0), sharding.replicated(mesh))
    state = fresh_state(params, mesh)
    t = time.perf_counter()
    compiled = prog.epoch_fn.lower(state, arrays, prog.data_key, jax.random.key(0), 0).compile()
    print(f"  compiled epoch[{impl}] in {time.perf_counter() - t:.1f} s", flush=True)
    out[impl] = [compiled, state]
  return out, arrays, prog.data_key, prog.plan


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=9, help="timed train steps per impl")
  p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
  p.add_argument("--masks", type=int, default=9, help="timed bernoulli masks per impl")
  p.add_argument("--epochs", type=int, default=0, help="timed on-device epochs per impl (0: none)")
  p.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "data", "cs224n_a5"))
  p.add_argument("--json", default="")
  a = p.parse_args()

  print(f"jax {jax.__version__}, devices {jax.devices()}, "
        f"jax_threefry_partitionable={jax.config.jax_threefry_partitionable}, "
        f"cpus {os.cpu_count()}", flush=True)
  print("main.py processes (pid, nice, stat):",
        [r[:3] for r in background_runs()] or "none", flush=True)
  mesh = sharding.make_mesh()
  batch = sharding.put_batch(a5_batch(), mesh)
  result = {"jax": jax.__version__, "threefry_partitionable": jax.config.jax_threefry_partitionable}

  print("reproducibility of a bernoulli mask per impl (CPU):", flush=True)
  result["reproducible"] = rep = reproducibility()
  for k, v in rep.items():
    print(f"  {k:<11} {v}")

  print("compiling ...", flush=True)
  steps = compiled_steps(mesh, batch)
  masks = {impl: (mask_fn(), impl_key(impl)) for impl in IMPLS}
  for f, k in masks.values():
    f(k).block_until_ready()
  step_masks, n_bits = step_masks_fn()
  for impl in IMPLS:
    jax.block_until_ready(step_masks(impl, jax.random.key(0), 0))
  seed_key = jax.random.key(0)

  def step_call(impl):
    def go():
      compiled, state = steps[impl]
      state, m = compiled(state, batch, seed_key)
      jax.block_until_ready(m)
      steps[impl][1] = state
    return go

  epochs = None
  if a.epochs:
    print("compiling on-device epochs ...", flush=True)
    epochs, arrays, dkey, plan = epoch_fns(mesh, a.data_dir)
    counter = {impl: 0 for impl in IMPLS}

    def epoch_call(impl):
      def go():
        compiled, state = epochs[impl]
        state, m = compiled(state, arrays, dkey, seed_key, counter[impl])
        jax.block_until_ready(m)
        epochs[impl][1] = state
        counter[impl] += 1
      return go

  with Paused():
    print(f"load average before timing: {os.getloadavg()}", flush=True)
    step_times = round_robin({k: step_call(k) for k in IMPLS}, a.steps, a.warmup)
    mask_times = round_robin({k: (lambda f=f, key=key: f(key).block_until_ready())
                              for k, (f, key) in masks.items()}, a.masks, 2)
    step_mask_times = round_robin(
        {k: (lambda k=k: jax.block_until_ready(step_masks(k, seed_key, 3))) for k in IMPLS},
        a.masks, 2)
    epoch_times = None
    if epochs:
      epoch_times = round_robin({k: epoch_call(k) for k in IMPLS}, a.epochs, 1)

  result["train_step"] = table(
      "train step (batch 128 x 127, vanilla A5, dropout 0.1), round-robin:", step_times)
  result["bernoulli_mask"] = table(f"one jax.random.bernoulli {list(MASK_SHAPE)} mask, jitted:",
                                   mask_times, 1e-3, "ms")
  result["step_masks"] = table(
      f"all dropout masks of one train step ({n_bits / 1e6:.0f}M bernoulli draws), jitted:",
      step_mask_times)
  if epoch_times:
    result["device_epoch"] = table(
        f"on-device pretraining epoch ({plan.steps_per_epoch} steps, packed rows "
        f"{plan.small_rows}/{plan.rows}):", epoch_times)
  ts = result["train_step"]
  within = {how: [k for k in ("rbg", "unsafe_rbg") if ts[k][field] <= 1.10]
            for how, field in (("wall, median/median", "ratio_to_hash"),
                               ("wall, paired", "paired_ratio_to_hash"),
                               ("cpu, median/median", "cpu_ratio_to_hash"),
                               ("cpu, paired", "cpu_paired_ratio_to_hash"))}
  print("\nbuilt-in impls within 10% of hash on the train step:")
  for how, ks in within.items():
    print(f"  {how:<20} {ks or 'none'}")
  result["within_10pct_of_hash"] = within
  if a.json:
    with open(a.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()

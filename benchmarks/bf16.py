"""float32 vs bfloat16 (ModelConfig.dtype) side by side, alternating, in one run: a jitted
forward+backward of the full A5 model (vocab 256, 4 layers, 8 heads, 256 dims, block 128,
dropout 0.1 on) at batch 64, and a plain (8192x256)@(256x1024) matmul. Medians of --reps.

  python benchmarks/bf16.py [--reps=7] [--batch=64] [--arrangements] [--hlo=DIR]

--arrangements also times other bf16 layouts (monkeypatched here, not in the library):
'bias_bf16+gelu_bf16': the plain flax convention, nn.Dense(dtype=bf16) (the bias added in
bf16, its gradient a bf16 sum, which XLA:CPU splits into rounded reduce-windows: what
birthjax.model.layers._MixedDense avoids) and GELU on bf16 values; 'gelu_bf16': only the latter;
'resid_f32': the residual stream (embeddings, block outputs) float32, the Dense layers,
GELU's output and attention in bf16.
--hlo=DIR writes each compiled step's HLO and prints a count of its ops by kind and dtype.
The process CPU time column is the steadier one on a machine shared with other jobs.
"""
import argparse
import collections
import contextlib
import dataclasses
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from flax.linen.dtypes import promote_dtype as flax_promote_dtype  # noqa: E402

from birthjax.model import layers, loss, model  # noqa: E402

A5 = model.ModelConfig(vocab_size=256, n_layer=4, n_head=8, n_embd=256, block_size=128,
                       dropout=0.1, deterministic=False)


@contextlib.contextmanager
def arrangement(name):
  """Patch the bf16 layout for one compile ('library': birthjax's own, unpatched)."""
  saved = model.compute_dtype, layers.gelu, layers._keep_bias
  if "bias_bf16" in name:  # flax's plain Dense: bias cast to bf16, its gradient a bf16 sum
    layers._keep_bias = flax_promote_dtype
  if "resid_f32" in name:  # embeddings stay float32: every residual add promotes to float32
    model.compute_dtype = lambda cfg: jnp.dtype(jnp.float32)
  if "gelu_bf16" in name:  # GELU on the bf16 values (XLA rounds each step of erf to bf16)
    layers.gelu = lambda x: layers.nn.gelu(x, approximate=False)
  try:
    yield
  finally:
    model.compute_dtype, layers.gelu, layers._keep_bias = saved


def fwd_bwd(cfg, arr, batch):
  net = model.build(cfg)

  def loss_fn(params, x, y, key):
    return loss.mean_cross_entropy(net.apply({"params": params}, x, rngs={"dropout": key}), y)

  with arrangement(arr):
    fn = jax.jit(jax.value_and_grad(loss_fn))
    params = model.init_params(dataclasses.replace(cfg, dtype="float32"), jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, cfg.block_size)), jnp.int32)
    y = jnp.roll(x, -1, axis=1)
    compiled = fn.lower(params, x, y, jax.random.key(1)).compile()
  run = lambda: jax.block_until_ready(compiled(params, x, y, jax.random.key(1)))
  run()
  return run, compiled


def matmul(dtype):
  a = jnp.ones((8192, 256), dtype)
  b = jnp.ones((256, 1024), dtype)
  f = jax.jit(lambda a, b: a @ b)
  run = lambda: f(a, b).block_until_ready()
  run()
  return run


def timed(run):
  """(wall s, process CPU s): on a shared machine the CPU time of all of XLA's threads is
  the steadier measure of the work (the wall time also holds the other jobs' slices)."""
  t, c = time.perf_counter(), time.process_time()
  run()
  return time.perf_counter() - t, time.process_time() - c


def op_census(hlo: str):
  """{op(dtype): count} of the compiled HLO's instructions, inside fused computations too."""
  count = collections.Counter()
  for m in re.finditer(r"= (\w+)\[[^\]]*\][^ ]* (\w[\w-]*)\(", hlo):
    count[f"{m.group(2)}({m.group(1)})"] += 1
  return count


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--arrangements", action="store_true")
  ap.add_argument("--hlo", default="")
  args = ap.parse_args()
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")
  cases = [("float32", "library"), ("bfloat16", "library")]
  if args.arrangements:
    cases += [("bfloat16", a) for a in ("bias_bf16+gelu_bf16", "gelu_bf16", "resid_f32")]
  runs = {}
  for dt, arr in cases:
    run, compiled = fwd_bwd(dataclasses.replace(A5, dtype=dt), arr, args.batch)
    label = dt if arr == "library" else f"{dt}/{arr}"
    runs[f"fwd+bwd {label}"] = run
    if args.hlo:
      os.makedirs(args.hlo, exist_ok=True)
      text = compiled.as_text()
      with open(os.path.join(args.hlo, label.replace("/", "_") + ".hlo"), "w") as f:
        f.write(text)
      top = op_census(text).most_common(12)
      print(f"  {label} HLO ops: " + ", ".join(f"{k} {v}" for k, v in top))
  times = {k: [] for k in runs}
  for _ in range(args.reps):  # alternating: every case once per round
    for k, run in runs.items():
      times[k].append(timed(run))
  # the matmuls alternate on their own: right after a 5 s step the float32 one measured 3x
  # slower (its fresh 32 MB output; page faults, presumably)
  mm = {f"matmul {dt}": matmul(jnp.dtype(dt)) for dt in ("float32", "bfloat16")}
  times.update({k: [] for k in mm})
  for _ in range(3 * args.reps):
    for k, run in mm.items():
      times[k].append(timed(run))
  flops = 2 * 8192 * 256 * 1024
  med = {k: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
         for k, ts in times.items()}
  print(f"{'':36s} {'wall median':>12s} {'wall min':>10s} {'cpu median':>11s}")
  for k, ts in times.items():
    (wall, cpu), base = med[k], med["fwd+bwd float32"]
    extra = (f"{flops / wall / 1e9:6.1f} GFLOP/s wall, {flops / cpu / 1e9:6.1f} per cpu-s"
             if k.startswith("matmul") else
             f"{base[0] / wall:5.2f}x wall, {base[1] / cpu:5.2f}x cpu vs float32")
    print(f"{k:36s} {wall * 1e3:9.1f} ms {min(w for w, _ in ts) * 1e3:7.1f} ms "
          f"{cpu * 1e3:8.1f} ms  {extra}")


if __name__ == "__main__":
  main()

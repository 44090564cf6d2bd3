"""How fast can an A5 train step be on this machine? The model's own matmul shapes timed
alone (float32 and bfloat16), and the step time they bound from below.

  python benchmarks/step_bound.py [--rows=64] [--vs-torch | --torch-step=SECONDS] [--reps=7]

A train step of R rows of T = 127 tokens (packed A5 pretraining at batch 128: ~64 rows;
the torch reference trains 128 unpacked rows) is, in matmuls, for each of the 4 layers the
qkv, output, and MLP projections (N x 256 @ 256 x 768, 256 x 256, 256 x 1024, 1024 x 256,
N = R T tokens), the head (256 x 256) and attention (R x 8 heads of 127 x 32 @ 32 x 127 and
127 x 127 @ 127 x 32), each forward once and backward twice (the input and weight
gradients). Timing each shape forward alone, at its own rate, and summing x3 gives the
time a step needs for its matmuls alone, at the speed this machine runs those shapes
(elementwise work, dropout, LayerNorm, softmax and the optimizer come on top). With
--vs-torch (the PyTorch reference's train step at batch 128, unpacked, timed in the same
run, as benchmarks/speed.py does) or --torch-step, it prints the ratio torch / bound: the
most any engine could be faster than that step, on this machine, before anything but
matmuls is counted. birthjax's own compiled train step on a packed batch of the same shape
is timed beside it (when it is faster than the bound, the shapes run faster inside the
fused program than alone, and the bound is only indicative).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

D, H, L, T, VOCAB = 256, 8, 4, 127, 256


def shapes(rows):
  """(name, batch, m, k, n, count a step) of one forward pass's matmuls."""
  n = rows * T
  return [("qkv", 1, n, D, 3 * D, L), ("attn out", 1, n, D, D, L), ("mlp up", 1, n, D, 4 * D, L),
          ("mlp down", 1, n, 4 * D, D, L), ("head", 1, n, D, VOCAB, 1),
          ("scores", rows * H, T, D // H, T, L), ("values", rows * H, T, T, D // H, L)]


def rate(batch, m, k, n, dtype, reps):
  a = jnp.ones((batch, m, k), dtype)
  b = jnp.ones((batch, k, n), dtype)
  f = jax.jit(lambda a, b: jnp.einsum("bmk,bkn->bmn", a, b, preferred_element_type=dtype))
  f(a, b).block_until_ready()
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def torch_step(reps):
  import numpy as np
  import torch
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import speed
  from configs import vanilla
  torch.set_num_threads(os.cpu_count() or 1)
  _, step = speed.torch_model(vanilla.get_config())
  rng = np.random.default_rng(0)
  xy = (rng.integers(2, VOCAB, (128, T)), rng.integers(2, VOCAB, (128, T)))
  step(xy)
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    step(xy)
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def engine_step(rows, reps, dtype="float32"):
  """birthjax's compiled train step (the A5 vanilla model, dropout on) on a packed batch of
  `rows` full rows, one example a row: median seconds."""
  import numpy as np
  from birthjax import run, sharding
  from birthjax.model import model
  from birthjax.train import optim, train
  from configs import vanilla
  config = vanilla.get_config()
  config.model.dtype = dtype
  mesh = sharding.make_mesh()
  cfg = run.model_config(config, deterministic=False)
  opt, _ = run.stage_optim(config.pretrain)
  rng = np.random.default_rng(0)
  batch = {"x": rng.integers(2, VOCAB, (rows, T)).astype(np.int32),
           "y": rng.integers(2, VOCAB, (rows, T)).astype(np.int32),
           "segments": np.ones((rows, T), np.int32), "positions": np.tile(np.arange(T), (rows, 1)),
           "row_examples": np.ones(rows, np.int32)}
  batch = sharding.put_batch(batch, mesh)
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=1e-3,
                                  schedule=optim.Schedule(1, 10))
  state = jax.device_put(train.init_state(model.init_params(cfg, jax.random.key(0)), opt.make()),
                         sharding.replicated(mesh))
  key = jax.random.key(0)
  state, _ = jax.block_until_ready(step(state, batch, key))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch, key))
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--rows", type=int, default=64)
  p.add_argument("--torch-step", type=float, default=0.0, help="seconds, measured elsewhere")
  p.add_argument("--vs-torch", action="store_true", help="time the torch reference step here")
  p.add_argument("--reps", type=int, default=7)
  a = p.parse_args()
  if a.vs_torch:
    a.torch_step = torch_step(a.reps)
    print(f"torch reference step, batch 128 x {T}, unpacked: {a.torch_step:.3f} s (median)")
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); step of {a.rows} rows "
        f"x {T} tokens")
  print("| shape | matmul | f32 GFLOP/s | bf16 GFLOP/s |\n|---|---|---|---|")
  total = {jnp.float32: 0.0, jnp.bfloat16: 0.0}
  flops = 0
  for name, batch, m, k, n, count in shapes(a.rows):
    f = 2 * batch * m * k * n
    flops += 3 * count * f
    cells = []
    for dtype in total:
      s = rate(batch, m, k, n, dtype, a.reps)
      total[dtype] += 3 * count * s
      cells.append(f"{f / s / 1e9:.0f}")
    print(f"| {name} | {batch} x {m}x{k} @ {k}x{n} | {cells[0]} | {cells[1]} |")
  big = {dt: 2 * 2048 ** 3 / rate(1, 2048, 2048, 2048, dt, a.reps) / 1e9 for dt in total}
  print(f"matmul peak (2048^3): f32 {big[jnp.float32]:.0f}, bf16 {big[jnp.bfloat16]:.0f} GFLOP/s")
  print(f"a step's matmuls: {flops / 1e9:.1f} GFLOP (forward + 2 backward)")
  for dtype, name in ((jnp.float32, "f32"), (jnp.bfloat16, "bf16")):
    real = engine_step(a.rows, a.reps, "float32" if dtype == jnp.float32 else "bfloat16")
    line = (f"bound {name}: {total[dtype]:.3f} s a step ({flops / total[dtype] / 1e9:.0f} GFLOP/s); "
            f"birthjax's step at this shape {real:.3f} s ({total[dtype] / real:.2f} of it matmuls at "
            "their lone speed)")
    if a.torch_step:
      line += f"; torch {a.torch_step:.2f} s / bound = {a.torch_step / total[dtype]:.2f}x"
    print(line)


if __name__ == "__main__":
  main()

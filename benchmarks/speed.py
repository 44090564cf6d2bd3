"""Speed of the A5 recipe on this machine: training epochs and dev decoding as `main.py` runs
them (the defaults, or the flags given); optionally side by side with the PyTorch reference
model (birthjax.tools.torch_a5), alternating, in one run.

  python benchmarks/speed.py [--variant=vanilla|perceiver|perceiver_ar] [--dtype=float32|bfloat16]
      [--dropout-rng=hash|threefry] [--no-pack] [--vs-torch] [--epochs=3] [--json=PATH]

A stage's step time is a compiled epoch's time over its steps (median of --epochs epochs,
after one to compile). GFLOP/s: XLA's cost analysis of one train step at the epoch's packed
shape, scaled by the rows each step trained, over the measured time. The matmul peaks
(2048^3, float32 and bfloat16) are timed in the same run. The json keeps `train_step_s`
(pretraining) and `decode_dev_s`, with `dtype`.
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

from birthjax.infer import decode  # noqa: E402
from birthjax.train import device_epoch, optim, train
from birthjax.data import input_pipeline
from birthjax.model import model
from birthjax import run, sharding


def timed(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


def matmul_peak(dtype):
  a = jnp.ones((2048, 2048), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  return 2 * 2048 ** 3 / statistics.median(timed(lambda: f(a).block_until_ready())[1] for _ in range(5))


def step_flops(config, prog, mesh):
  """XLA's FLOPs of one train step on a batch of the plan's largest trained shape."""
  c = prog.plan
  rows = c.rows or c.rows_per_batch
  t = c.block_size - 1
  batch = {"x": np.full((rows, t), 2, np.int32), "y": np.full((rows, t), 2, np.int32)}
  if c.rows:
    batch.update(segments=np.ones((rows, t), np.int32), positions=np.tile(np.arange(t), (rows, 1)),
                 row_examples=np.ones(rows, np.int32))
  else:
    batch["row_mask"] = np.ones(rows, bool)
  cfg = run.model_config(config, deterministic=False)
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=prog.settings.opt, base_lr=1e-3,
                                  schedule=optim.Schedule(1, 10))
  state = train.init_state(model.init_params(cfg, jax.random.key(0)), prog.settings.opt.make())
  cost = step.lower(state, sharding.put_batch(batch, mesh), jax.random.key(0)).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"], rows


def time_stage(config, stage, data, mesh, epochs, between=None):
  """{'step_s', 'epoch_s', 'steps', 'gflops', 'first_epoch_s'}: the stage's compiled epochs
  as run.train_stage runs them; between(batches) runs before each timed epoch, given the
  first epoch's (x, y) unpacked (for the torch model)."""
  prog = run.stage_program(stage, config, data, mesh)
  cfg = run.model_config(config, deterministic=False)
  state = jax.device_put(train.init_state(model.init_params(cfg, jax.random.key(0)),
                                          prog.settings.opt.make()), sharding.replicated(mesh))
  arrays = jax.device_put(prog.table_of(0), sharding.replicated(mesh))
  seed_key = jax.random.key(prog.settings.seed)
  (state, m), first = timed(lambda: jax.block_until_ready(
      prog.epoch_fn(state, arrays, prog.data_key, seed_key, 0)))
  key = device_epoch.keys(prog.data_key, 0)[1]
  batches = [tuple(np.asarray(a) for a in device_epoch.make_batch(prog.plan, arrays, key, idx)[:2])
             for idx in device_epoch.epoch_indices(prog.plan, prog.data_key, 0)]
  ts, rows = [], []
  for e in range(1, epochs + 1):
    if between:
      between(batches)
    (state, m), dt = timed(lambda: jax.block_until_ready(
        prog.epoch_fn(state, arrays, prog.data_key, seed_key, e)))
    ts.append(dt)
    rows.append(np.asarray(m["rows"]))
  flops, at_rows = step_flops(config, prog, mesh)
  epoch_s, spe = statistics.median(ts), prog.plan.steps_per_epoch
  return {"step_s": epoch_s / spe, "epoch_s": epoch_s, "steps": spe, "first_epoch_s": first,
          "gflops": flops * float(np.mean(rows)) / at_rows * spe / epoch_s / 1e9}


def torch_model(config):
  import torch
  from birthjax.tools import torch_a5
  m = config.model
  tc = torch_a5.GPTConfig(256, m.block_size, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd,
                          perceiver=m.variant == "perceiver", bottleneck_dim=m.bottleneck_dim)
  net = torch_a5.GPT(tc)
  opt = torch.optim.AdamW(net.parameters(), lr=6e-3, betas=(0.9, 0.95), weight_decay=0.1)

  def step(xy):
    x, y = (torch.from_numpy(a).long() for a in xy)
    net.train()
    _, loss = net(x, y)
    net.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return float(loss)
  return net, step


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--variant", default="vanilla", choices=["vanilla", "perceiver", "perceiver_ar"])
  p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
  p.add_argument("--dropout-rng", default=None, choices=["threefry", "hash"])
  p.add_argument("--no-pack", action="store_true", help="--config.pack=False")
  p.add_argument("--vs-torch", action="store_true")
  p.add_argument("--epochs", type=int, default=3, help="timed epochs a stage (median)")
  p.add_argument("--json", default="")
  p.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "data", "cs224n_a5"))
  p.add_argument("--torch_decode_questions", type=int, default=500,
                 help="questions the reference loop decodes, 100 at a time between birthjax's "
                      "dev-set decodes (fewer: scaled to the dev set)")
  a = p.parse_args()
  from configs import vanilla
  config = vanilla.get_config()
  config.model.variant = a.variant
  if a.dtype:
    config.model.dtype = a.dtype
  if a.dropout_rng:
    config.model.dropout_rng = a.dropout_rng
  config.pack = not a.no_pack
  config.data.dir = a.data_dir
  data = input_pipeline.load(config.data, config.model.block_size)
  mesh = sharding.make_mesh()
  peaks = {d: matmul_peak(d) for d in (jnp.float32, jnp.bfloat16)}
  dtype = config.model.get("dtype", "float32")
  print(f"devices: {jax.devices()}  matmul peak (2048^3): float32 {peaks[jnp.float32] / 1e9:.1f}, "
        f"bfloat16 {peaks[jnp.bfloat16] / 1e9:.1f} GFLOP/s  dtype: {dtype}  dropout_rng: "
        f"{config.model.dropout_rng}  pack: {config.pack}")
  out = {"dtype": dtype, "dropout_rng": config.model.dropout_rng, "pack": config.pack,
         "matmul_peak_f32_gflops": peaks[jnp.float32] / 1e9,
         "matmul_peak_bf16_gflops": peaks[jnp.bfloat16] / 1e9}
  if a.vs_torch:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    tnet, tstep = torch_model(config)
  peak = peaks[jnp.bfloat16 if dtype == "bfloat16" else jnp.float32]
  print("| stage, batch | step s | examples/s | GFLOP/s | of matmul peak | epoch s (first, compiling) "
        "| torch step s | torch / birthjax |")
  print("|---|---|---|---|---|---|---|---|")
  for stage, bs in (("pretrain", 128), ("finetune", 256)):
    tt = []

    def between(batches):  # torch steps on the same examples (unpacked) alternate with epochs
      for xy in batches[len(tt):len(tt) + 3]:
        tt.append(timed(lambda: tstep(xy))[1])
    r = time_stage(config, stage, data, mesh, a.epochs, between if a.vs_torch else None)
    cells = [f"{stage} b{bs}", f"{r['step_s']:.3f}", f"{bs / r['step_s']:.1f}", f"{r['gflops']:.1f}",
             f"{r['gflops'] * 1e9 / peak:.2f}", f"{r['epoch_s']:.1f} ({r['first_epoch_s']:.1f})"]
    if tt:
      tmed = statistics.median(tt)
      cells += [f"{tmed:.2f}", f"{tmed / r['step_s']:.2f}x"]
      out[f"torch_{stage}_step_s"] = tmed
    print("| " + " | ".join(cells + [""] * (8 - len(cells))) + " |")
    out.update({f"{stage}_step_s": r["step_s"], f"{stage}_gflops": r["gflops"],
                f"{stage}_first_epoch_s": r["first_epoch_s"]})
  out["train_step_s"] = out["pretrain_step_s"]
  # dev decoding: all 500 questions, greedy, 32 characters
  qs, _ = data.eval_sets["dev"]
  cfg = run.model_config(config)
  params = model.init_params(cfg, jax.random.key(0))
  _, first = timed(lambda: decode.predict(params, cfg, data.vocab, qs, mesh=mesh))  # + compile
  n = max(1, min(a.torch_decode_questions, len(qs))) if a.vs_torch else 0
  chunks = [qs[i:i + 100] for i in range(0, n, 100)] or [[]] * 5
  if a.vs_torch:
    from birthjax.tools import torch_a5
    tnet.eval()
  ts, tdt = [], 0.0
  for chunk in chunks:  # birthjax's whole dev set, then the reference loop on 100 questions
    ts.append(timed(lambda: decode.predict(params, cfg, data.vocab, qs, mesh=mesh))[1])
    t0 = time.perf_counter()
    for q in chunk:
      x = torch.tensor(data.vocab.encode(q + "\u2047"), dtype=torch.long)[None]
      torch_a5.sample(tnet, x, 32, sample=False)
    tdt += time.perf_counter() - t0
  dt = statistics.median(ts)
  out.update(decode_dev_s=dt, decode_dev_first_call_s=first)
  line = (f"dev decode (500 questions, 32 chars): birthjax {dt:.2f} s, median of {len(ts)} "
          f"(first call, compiling: {first:.1f} s)")
  if a.vs_torch:
    tdt *= len(qs) / n
    out["torch_decode_dev_s"] = tdt
    line += (f"; reference loop {tdt:.1f} s ({n} questions{', scaled' if n < len(qs) else ''}, "
             f"alternating); ratio {tdt / dt:.0f}x")
  print(line)
  if a.json:
    with open(a.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()

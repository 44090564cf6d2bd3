"""Speed of the A5 recipe on this machine: train steps, one epoch, dev decoding; optionally
side by side with the PyTorch reference model (birthjax.torch_a5), alternating, in one run.

  python benchmarks/speed.py [--variant=vanilla|perceiver] [--vs-torch] [--device-epochs]
      [--dropout-rng=threefry|hash] [--json=PATH]

`train_step_s` in the json is the pretraining step of the path the flags select: the host
packed step, or with --device-epochs the on-device epoch's step (the fastest configured path
is --device-epochs --dropout-rng=hash, i.e. --config.device_epochs=True
--config.model.dropout_rng=hash).

FLOP/s are XLA's cost analysis of the compiled step over the measured time; the matmul peak
is a 2048^3 float32 matmul timed in the same run. Medians of --steps timed steps.
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "configs"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from birthjax import decode, device_epoch, input_pipeline, model, run, sharding, train  # noqa: E402


def timed(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


def matmul_peak():
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  return 2 * 2048 ** 3 / statistics.median(timed(lambda: f(a).block_until_ready())[1] for _ in range(5))


def jax_stage(config, stage, data, mesh, n, pack):
  """(median step s, FLOPs of one step, compiled step fn, state, batches) for a stage."""
  c = config[stage]
  mk = input_pipeline.pretrain_batches if stage == "pretrain" else (
      lambda d, c, **kw: input_pipeline.finetune_batches(d, c, 1, **kw))
  batches = mk(data, c, block_size=config.model.block_size, seed=0, pad_to_multiple=mesh.size,
               pack=pack)
  cfg = run.model_config(config, deterministic=False)
  opt = (("weight_decay", c.weight_decay), ("decay_rule", c.decay_rule), ("grad_clip", c.grad_clip))
  sched = (("warmup_tokens", c.warmup_tokens), ("final_tokens", c.final_tokens), ("clamp", False))
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=c.learning_rate, schedule=sched)
  params = model.init_params(cfg, jax.random.key(0))
  state = jax.device_put(train.init_state(params, train.make_tx(opt)), sharding.replicated(mesh))
  key = jax.random.key(0)
  full = [sharding.put_batch(batches[i], mesh) for i in range(min(n, len(batches) - 1))]
  flops = step.lower(state, full[0], key).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, list) else flops)["flops"]
  state, m = step(state, full[0], key)  # compile + warm up
  jax.block_until_ready(m)
  n_records = len(data.documents) if stage == "pretrain" else len(data.finetune)
  return step, state, key, full, flops, input_pipeline.steps_per_epoch(n_records, c.batch_size)


def device_epoch_time(config, stage, data, mesh, epochs=3, between=None):
  """(median seconds of one on-device epoch, its steps): config.device_epochs=True, packed.
  between(): called before each timed epoch (the torch steps that alternate with it)."""
  c = config[stage]
  records = data.documents if stage == "pretrain" else data.finetune
  plan = device_epoch.make_plan(stage, len(records), c.batch_size, config.model.block_size,
                                c.shuffle, mesh.size)
  arrays = (device_epoch.pretrain_arrays if stage == "pretrain" else
            device_epoch.finetune_arrays)(records, config.model.block_size)
  key = device_epoch.data_key(0)
  if config.model.variant == "vanilla":
    plan = device_epoch.choose_rows(plan, arrays, key, mesh.size)
  cfg = run.model_config(config, deterministic=False)
  opt = (("weight_decay", c.weight_decay), ("decay_rule", c.decay_rule), ("grad_clip", c.grad_clip))
  sched = (("warmup_tokens", c.warmup_tokens), ("final_tokens", c.final_tokens), ("clamp", False))
  fn = device_epoch.compile_epoch(mesh, plan, model_cfg=cfg, opt=opt, base_lr=c.learning_rate,
                                  schedule=sched)
  params = model.init_params(cfg, jax.random.key(0))
  state = jax.device_put(train.init_state(params, train.make_tx(opt)), sharding.replicated(mesh))
  arrays = jax.device_put(arrays, sharding.replicated(mesh))
  state, m = fn(state, arrays, key, jax.random.key(0), 0)  # compile + warm up
  jax.block_until_ready(m)
  ts = []
  for e in range(1, epochs + 1):
    if between:
      between()
    (state, m), dt = timed(lambda: jax.block_until_ready(fn(state, arrays, key, jax.random.key(0), e)))
    ts.append(dt)
  return statistics.median(ts), plan.steps_per_epoch


def torch_model(config):
  import torch
  from birthjax import torch_a5
  m = config.model
  tc = torch_a5.GPTConfig(256, m.block_size, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd,
                          perceiver=m.variant == "perceiver", bottleneck_dim=m.bottleneck_dim)
  net = torch_a5.GPT(tc)
  opt = torch.optim.AdamW(net.parameters(), lr=6e-3, betas=(0.9, 0.95), weight_decay=0.1)

  def step(batch):
    x, y = torch.from_numpy(batch["x"]).long(), torch.from_numpy(batch["y"]).long()
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
  p.add_argument("--vs-torch", action="store_true")
  p.add_argument("--json", default="")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--device-epochs", action="store_true",
                 help="also time whole on-device epochs (config.device_epochs; compiles for minutes on CPU)")
  p.add_argument("--dropout-rng", default="threefry", choices=["threefry", "hash"],
                 help="config.model.dropout_rng of the birthjax steps (hash: birthjax/fastrng.py)")
  p.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "data", "cs224n_a5"))
  p.add_argument("--torch_decode_questions", type=int, default=500,
                 help="questions the reference loop decodes, 100 at a time between birthjax's "
                      "dev-set decodes (fewer: scaled to the dev set)")
  a = p.parse_args()
  import vanilla
  config = vanilla.get_config()
  config.model.variant = a.variant
  config.model.dropout_rng = a.dropout_rng
  config.data.dir = a.data_dir
  data = input_pipeline.load(config.data, config.model.block_size)
  mesh = sharding.make_mesh()
  peak = matmul_peak()
  print(f"devices: {jax.devices()}  matmul peak (2048^3 f32): {peak / 1e9:.1f} GFLOP/s  "
        f"dropout_rng: {a.dropout_rng}")
  out = {"dropout_rng": a.dropout_rng, "device_epochs": a.device_epochs}
  if a.vs_torch:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    tnet, tstep = torch_model(config)
  rows, torch_batches = [], {}
  for stage, bs in (("pretrain", 128), ("finetune", 256)):
    for pack in ([True, False] if a.variant == "vanilla" else [False]):
      step, state, key, batches, flops, spe = jax_stage(config, stage, data, mesh, a.steps + 1, pack)
      unpacked = input_pipeline.pretrain_batches if stage == "pretrain" else (
          lambda d, c, **kw: input_pipeline.finetune_batches(d, c, 1, **kw))
      host = unpacked(data, config[stage], block_size=128, seed=0)  # the torch model's batches
      ts, tt = [], []
      for i in range(a.steps):
        b = batches[1 + i % (len(batches) - 1)]
        (state, m), dt = timed(lambda: jax.block_until_ready(step(state, b, key)))
        ts.append(dt)
        if a.vs_torch and pack == (a.variant == "vanilla"):
          tt.append(timed(lambda: tstep(host[1 + i]))[1])
      med = statistics.median(ts)
      name = f"{stage} b{bs}{' packed' if pack else ''}"
      row = [name, med, bs / med, flops / med / 1e9, flops / med / peak, med * spe]
      if tt:
        tmed = statistics.median(tt)
        row += [tmed, tmed / med]
        torch_batches[stage] = host
        if stage == "pretrain":
          out["torch_train_step_s"] = tmed
      rows.append(row)
      if stage == "pretrain" and pack == (a.variant == "vanilla"):
        out.update(train_step_s=med, examples_per_s=bs / med, host_train_step_s=med)
  if a.device_epochs:
    for stage, bs in (("pretrain", 128), ("finetune", 256)):
      tt, host = [], torch_batches.get(stage, [])

      def between():  # torch steps alternate with the timed epochs, as with the host steps
        for b in host[len(tt) + 1:len(tt) + 4]:
          tt.append(timed(lambda: tstep(b))[1])
      epoch_s, spe = device_epoch_time(config, stage, data, mesh, between=between if host else None)
      row = [f"{stage} b{bs} on-device epoch", epoch_s / spe, bs * spe / epoch_s, None, None, epoch_s]
      if tt:
        tmed = statistics.median(tt)
        row += [tmed, tmed * spe / epoch_s]
        if stage == "pretrain":
          out["torch_train_step_s"] = tmed
      rows.append(row)
      if stage == "pretrain":
        out.update(device_epoch_step_s=epoch_s / spe, device_epoch_s=epoch_s,
                   train_step_s=epoch_s / spe, examples_per_s=bs * spe / epoch_s)
  print("| stage, batch | step s | examples/s | GFLOP/s | of peak | epoch s (host: est.) | torch step s | torch/jax |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    cells = [r[0]] + ["" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}" for v in r[1:]]
    print("| " + " | ".join(cells + [""] * (8 - len(cells))) + " |")
  # dev decoding: all 500 questions, greedy, 32 characters
  qs, _ = data.eval_sets["dev"]
  cfg = run.model_config(config)
  params = model.init_params(cfg, jax.random.key(0))
  _, first = timed(lambda: decode.predict(params, cfg, data.vocab, qs, mesh=mesh))  # + compile
  n = max(1, min(a.torch_decode_questions, len(qs))) if a.vs_torch else 0
  chunks = [qs[i:i + 100] for i in range(0, n, 100)] or [[]] * 5
  if a.vs_torch:
    from birthjax import torch_a5
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

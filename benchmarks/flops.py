"""XLA cost-analysis FLOPs of the compiled forward pass: vanilla vs the Perceiver variants.

Full A5 model (vocab 256, 4 layers, 8 heads, 256 dims, block 128), input length l = 128,
eval mode. FLOPs are what XLA's cost analysis counts for the optimized HLO of the default
backend (matmuls as 2*M*N*K plus elementwise work); nothing is run, only compiled.

  python benchmarks/flops.py [--batch 1]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from birthjax import model  # noqa: E402

VOCAB = 256
M_VALUES = (16, 32, 64)


def _flops(cost) -> float:
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    return sum(float(c.get("flops", 0.0)) for c in cost)
  return float(cost["flops"])


def forward_cost(cfg: model.ModelConfig, batch: int = 1) -> tuple[int, float]:
  """(parameter count, forward FLOPs) of the jitted forward on [batch, block_size] ids."""
  x = jax.ShapeDtypeStruct((batch, cfg.block_size), jnp.int32)
  params = jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]
  fwd = jax.jit(lambda p, idx: model.build(cfg).apply({"params": p}, idx))
  return model.param_count(params), _flops(fwd.lower(params, x).compile().cost_analysis())


def rows(batch: int = 1):
  """[(variant, m or None, params, flops)]: vanilla, then each variant at each m."""
  out = [("vanilla", None, *forward_cost(model.ModelConfig(vocab_size=VOCAB), batch))]
  for variant in ("perceiver", "perceiver_ar"):
    for m in M_VALUES:
      cfg = model.ModelConfig(vocab_size=VOCAB, variant=variant, bottleneck_dim=m)
      out.append((variant, m, *forward_cost(cfg, batch)))
  return out


def table(results, batch: int) -> str:
  base = results[0][3]
  lines = [f"Forward FLOPs (XLA cost analysis, {jax.default_backend()}), batch {batch}, l = 128",
           "", "| variant | m | params | forward MFLOP | ratio to vanilla |",
           "|---|---:|---:|---:|---:|"]
  for variant, m, n, flops in results:
    lines.append(f"| {variant} | {'-' if m is None else m} | {n:,} | {flops / 1e6:,.1f} | "
                 f"{flops / base:.3f} |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
  args = ap.parse_args(argv)
  print(table(rows(args.batch), args.batch))


if __name__ == "__main__":
  main()

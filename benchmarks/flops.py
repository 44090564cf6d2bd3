"""XLA cost-analysis FLOPs of the compiled forward pass: vanilla vs the Perceiver variants.

Default: the full A5 model (vocab 256, 4 layers, 8 heads, 256 dims, block 128), input
length l = 128, eval mode, each variant at m = 16, 32, 64. FLOPs are what XLA's cost analysis
counts for the optimized HLO of the default backend (matmuls as 2*M*N*K plus elementwise
work); nothing is run, only compiled. The counting lives in birthjax/tools/complexity.py.

--sweep: the same model at fixed m (--m, default 32) as l grows (64 ... 1024, block_size = l),
measured next to the closed-form matmul count (see birthjax.tools.complexity) and their ratio;
`python -m birthjax.analysis complexity --out=DIR` prints the same table and plots it.

  python benchmarks/flops.py [--batch 1] [--sweep [--m 32]]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from birthjax.tools import complexity  # noqa: E402
from birthjax.model import model
from birthjax.tools.complexity import forward_cost  # noqa: E402,F401  (kept importable from here)

VOCAB = 256
M_VALUES = (16, 32, 64)


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
  ap.add_argument("--sweep", action="store_true",
                  help="FLOPs vs input length l (64..1024) at fixed m, measured and closed form")
  ap.add_argument("--m", type=int, default=32, help="bottleneck_dim for --sweep (default 32)")
  args = ap.parse_args(argv)
  if args.sweep:
    results = complexity.sweep(batch=args.batch, m=args.m)
    print(complexity.sweep_table(results, args.batch, m=args.m))
  else:
    print(table(rows(args.batch), args.batch))


if __name__ == "__main__":
  main()

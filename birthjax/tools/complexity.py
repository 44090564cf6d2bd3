"""Forward-pass FLOPs of the three variants: measured (XLA cost analysis) and closed form.

Measured: `jax.jit(apply).lower(params, ids).compile().cost_analysis()["flops"]` for the
default backend, eval mode, ids of shape [batch, l]; nothing is run, only compiled. XLA
counts a matmul as 2*M*N*K plus its elementwise work (LayerNorm, softmax, GELU, masks, bias
adds, residuals); masked attention scores are counted in full (no causal saving).

Closed form (matmuls only; D = n_embd, V = vocab, l = input length, m = bottleneck_dim,
L = n_layer, per batch row; a [M,K] x [K,N] product is 2*M*N*K):
  one pre-LN block with Q query rows attending to K key rows
      q and output projections   2 * 2*Q*D*D        = 4*Q*D^2
      k and v projections        2 * 2*K*D*D        = 4*K*D^2
      scores q k^T, all heads    2*Q*K*D   (H heads of D/H dims)
      weighted sum att @ v       2*Q*K*D
      MLP D -> 4D -> D           2 * 2*Q*D*4D       = 16*Q*D^2
      block(Q, K)                = 20*Q*D^2 + 4*K*D^2 + 4*Q*K*D
  head (Linear D -> V)           2*R*D*V  for R output rows
  vanilla       L*block(l, l) + head(l)             = L*(24*l*D^2 + 4*l^2*D) + 2*l*D*V
  perceiver     block(m, l) [down] + (L-2)*block(m, m) + block(l, m) [up] + head(l)
                = 24*(l+m)*D^2 + 8*l*m*D + (L-2)*(24*m*D^2 + 4*m^2*D) + 2*l*D*V
  perceiver_ar  block(m, l) [first layer, m query rows] + (L-1)*block(m, m) + head(m)
So vanilla grows as l^2 (its attention) while both latent variants grow linearly in l, and
their middle layers (block(m, m)) do not depend on l at all. Embedding lookups, the latent
gather and scatter are not matmuls and are left out; the elementwise work XLA also counts
is the gap between the two counts (the ratio column of `sweep_table`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from birthjax.model import model

VARIANTS = ("vanilla", "perceiver", "perceiver_ar")


def _flops(cost) -> float:
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    return sum(float(c.get("flops", 0.0)) for c in cost)
  return float(cost["flops"])


def forward_cost(cfg: model.ModelConfig, batch: int = 1, length: int | None = None):
  """(parameter count, forward FLOPs) of the jitted forward on [batch, length] ids
  (length defaults to block_size)."""
  x = jax.ShapeDtypeStruct((batch, length or cfg.block_size), jnp.int32)
  params = jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]
  fwd = jax.jit(lambda p, idx: model.build(cfg).apply({"params": p}, idx))
  return model.param_count(params), _flops(fwd.lower(params, x).compile().cost_analysis())


def block_flops(q: int, k: int, d: int) -> int:
  """Matmul FLOPs of one pre-LN block: Q query rows attending to K key/value rows."""
  return 20 * q * d * d + 4 * k * d * d + 4 * q * k * d


def closed_form(cfg: model.ModelConfig, length: int, batch: int = 1) -> int:
  """Matmul FLOPs of the forward pass on [batch, length] ids (formula in the docstring)."""
  d, v, n, l = cfg.n_embd, cfg.vocab_size, cfg.n_layer, length
  m = cfg.bottleneck_dim if cfg.variant != "perceiver_ar" else min(cfg.bottleneck_dim, l)
  if cfg.variant == "vanilla":
    total = n * block_flops(l, l, d) + 2 * l * d * v
  elif cfg.variant == "perceiver":
    total = (block_flops(m, l, d) + (n - 2) * block_flops(m, m, d) + block_flops(l, m, d)
             + 2 * l * d * v)
  elif cfg.variant == "perceiver_ar":
    total = block_flops(m, l, d) + (n - 1) * block_flops(m, m, d) + 2 * m * d * v
  else:
    raise ValueError(f"unknown variant {cfg.variant!r}")
  return batch * total


def sweep_config(variant: str, length: int, *, m: int = 32, n_layer: int = 4, n_embd: int = 256,
                 n_head: int = 8, vocab: int = 256) -> model.ModelConfig:
  """The model config of one sweep point: block_size = length (the model needs l <= block)."""
  return model.ModelConfig(vocab_size=vocab, variant=variant, n_layer=n_layer, n_head=n_head,
                           n_embd=n_embd, block_size=length, bottleneck_dim=m)


def sweep(lengths=(64, 128, 256, 512, 1024), variants=VARIANTS, batch: int = 1, **cfg_kw):
  """[(variant, l, measured FLOPs, closed-form FLOPs)] for every variant and length."""
  out = []
  for variant in variants:
    for length in lengths:
      cfg = sweep_config(variant, length, **cfg_kw)
      out.append((variant, length, forward_cost(cfg, batch)[1], float(closed_form(cfg, length, batch))))
  return out


def sweep_table(results, batch: int = 1, m: int = 32, n_layer: int = 4, n_embd: int = 256) -> str:
  """Markdown table of `sweep` results, with each variant's growth from the previous l."""
  lines = [f"Forward FLOPs vs input length l (XLA cost analysis, {jax.default_backend()}; closed form: "
           f"matmuls only), batch {batch}, m = {m}, n_layer = {n_layer}, n_embd = {n_embd}",
           "", "| variant | l | measured MFLOP | closed form MFLOP | measured / closed | "
           "growth from l/2 (measured) |", "|---|---:|---:|---:|---:|---:|"]
  prev = {}
  for variant, length, meas, closed in results:
    growth = f"{meas / prev[variant]:.2f}x" if variant in prev else "-"
    prev[variant] = meas
    lines.append(f"| {variant} | {length} | {meas / 1e6:,.1f} | {closed / 1e6:,.1f} | "
                 f"{meas / closed:.3f} | {growth} |")
  return "\n".join(lines)


def plot_sweep(results, title: str):
  """Log-log FLOPs vs l: measured as markers, closed form as lines, one colour per variant;
  returns the figure (birthjax.tools.analysis saves it)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 5))
  for i, variant in enumerate(dict.fromkeys(r[0] for r in results)):
    rows = [r for r in results if r[0] == variant]
    ls = [r[1] for r in rows]
    ax.plot(ls, [r[3] for r in rows], "-", color=f"C{i}", label=f"{variant} (closed form)")
    ax.plot(ls, [r[2] for r in rows], "o", color=f"C{i}", label=f"{variant} (XLA measured)")
  ax.set_xscale("log", base=2)
  lengths = sorted({r[1] for r in results})
  ax.set_xticks(lengths, [str(l) for l in lengths])
  ax.set_yscale("log")
  ax.set_xlabel("input length l (tokens)")
  ax.set_ylabel("forward FLOPs (batch 1)")
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig

"""Building blocks shared by every variant: Dense/LayerNorm with the reference's init,
multi-head attention (self or cross, any mask), the MLP and the pre-LN block.

All attention goes through `attention.attend`; variants differ only in where queries,
keys and values come from and which mask is passed.

Mixed precision (`ModelConfig.dtype`, flax's dtype/param_dtype convention): with 'bfloat16'
the Dense matmuls and the activations between them (residual stream from the embeddings
on, q/k/v, attention and MLP outputs) are bfloat16; parameters (param_dtype), hence
gradients, optimizer state and checkpoints, stay float32, and so are computed: the token +
position sum (cast once), LayerNorm (flax: float32 statistics, result cast to `dtype`),
GELU (cast up and down), Dense biases (added to the matmul's result in float32, see
_MixedDense), attention scores and softmax (birthjax.model.attention), the logits (the head's
matmul accumulates into float32: bf16 logits would tie) and the loss. 'float32' is the
reference's arithmetic, unchanged (the same compiled programs).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from birthjax.model import attention
from birthjax.model.config import ModelConfig, compute_dtype

init_normal = nn.initializers.normal(stddev=0.02)
def _keep_bias(inputs, kernel, bias, dtype):
  return inputs.astype(dtype), kernel.astype(dtype), bias


class _MixedDense(nn.Dense):
  """nn.Dense in a low-precision `dtype`: inputs and kernel cast to it for the matmul, the
  float32 bias added in float32 and the sum cast to `out_dtype` (default `dtype`). A bias
  added in bf16 makes its gradient, a sum over every row, a bf16 reduction, which XLA:CPU
  runs as 32x32 reduce-windows rounded to bf16 after every add: ~10% of the A5 bf16 step's
  op time (profiled; benchmarks/bf16.py 'bias_bf16'), and 8192 rows summed in bf16."""
  out_dtype: object = None

  @nn.compact
  def __call__(self, inputs):
    return super().__call__(inputs).astype(self.out_dtype or self.dtype)


def Dense(features, name, use_bias=True, dtype=jnp.float32, out_dtype=None):
  """nn.Dense computing in `dtype` (float32: the plain flax layer, out_dtype moot); with
  out_dtype the matmul accumulates into and returns that dtype (the head: float32 logits,
  not bf16 ones, which tie)."""
  if jnp.dtype(dtype) == jnp.float32:
    return nn.Dense(features, use_bias=use_bias, kernel_init=init_normal, name=name)
  # the f32 dot of bf16 inputs widened first: XLA:CPU has no bf16 x bf16 -> f32 DotThunk
  dot = None if out_dtype is None else (
      lambda x, k, *a, **kw: jax.lax.dot_general(x.astype(out_dtype), k.astype(out_dtype), *a, **kw))
  return _MixedDense(features, use_bias=use_bias, kernel_init=init_normal, dtype=dtype,
                     param_dtype=jnp.float32, promote_dtype=_keep_bias, dot_general=dot,
                     out_dtype=out_dtype, name=name)


def LayerNorm(name, dtype=jnp.float32):
  """Statistics and normalization in float32 whatever the input; the result in `dtype`."""
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                      name=name)  # torch's eps; flax defaults to 1e-6


def gelu(x):
  """torch's exact (erf) GELU, computed in float32 whatever x's dtype, the result in x's.
  (bf16 GELU: XLA rounds each step of its erf to bf16, ~110 more converts in the A5 step;
  benchmarks/bf16.py measured float32 GELU 0-7% faster.)"""
  return nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


def Dropout(cfg: ModelConfig):
  return nn.Dropout(cfg.dropout, deterministic=cfg.deterministic)


class Attention(nn.Module):
  """Multi-head attention: queries from x_q, keys/values from x_kv, any [Q, K] mask.

  Decoding (birthjax.infer.kv_cache) passes `cache` (an attention.Cache) and no mask: x_q
  and x_kv are then [N, D], the new rows of every group of the batch, flat; each group's
  keys/values go into its cache and its queries attend to that cache. Returns (output
  [N', D], the cache with the new keys/values).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxQxD, x_BxKxD, mask_QxK, cache: attention.Cache | None = None,
               rope=None):
    """`rope`: (query positions, key positions) with model.positions='rope', [B, Q] and
    [B, K] (decoding: [N'] and [N], the flat rows'): q and k are rotated by them."""
    c, dt = self.cfg, compute_dtype(self.cfg)
    split = (lambda t: t) if cache is not None else (  # decoding: per group (below)
        lambda t: t.reshape(t.shape[0], t.shape[1], c.n_head, -1).transpose(0, 2, 1, 3))
    q = split(Dense(c.n_embd, "query", dtype=dt)(x_BxQxD))
    k = split(Dense(c.n_embd, "key", dtype=dt)(x_BxKxD))
    v = split(Dense(c.n_embd, "value", dtype=dt)(x_BxKxD))
    if rope is not None:  # [B, H, T, Dh] (positions [B, 1, T]) or flat [N, D] ([N, H, Dh])
      turn = (lambda t, p: attention.rotary(t, p[:, None])) if cache is None else (
          lambda t, p: attention.rotary(t.reshape(t.shape[0], c.n_head, -1), p[:, None]
                                        ).reshape(t.shape))
      q, k = turn(q, rope[0]), turn(k, rope[1])
    if cache is not None:
      y, cache = self._attend_cached(q, k, v, cache)
      return Dropout(c)(Dense(c.n_embd, "proj", dtype=dt)(y)), cache
    rng = None if c.deterministic or c.dropout == 0 else self.make_rng("dropout")
    y = attention.attend(q, k, v, mask_QxK, dropout_rate=c.dropout, dropout_rng=rng,
                         deterministic=c.deterministic)
    b, q_len = y.shape[0], y.shape[2]
    y = y.transpose(0, 2, 1, 3).reshape(b, q_len, c.n_embd)
    return Dropout(c)(Dense(c.n_embd, "proj", dtype=dt)(y))

  def _attend_cached(self, q_NxD, k_NxD, v_NxD, cache: attention.Cache):
    """Attention's decoding step (no dropout): per group, its new keys/values written at
    cache.write (the same column for every row), its queries attending to all its parts."""
    c = self.cfg
    qs = cache.split(q_NxD, cache.queries, c.n_head)
    ks, vs = (cache.split(t, cache.shapes, c.n_head) for t in (k_NxD, v_NxD))
    part, col = cache.write
    parts, ys = [], []
    for g, (q, k, v) in enumerate(zip(qs, ks, vs)):
      new = list(cache.parts[g])
      new[part] = tuple(jax.lax.dynamic_update_slice(buf, t.astype(buf.dtype), (0, 0, col, 0))
                        for buf, t in zip(new[part], (k, v)))
      parts.append(tuple(new))
      y = attention.attend_parts(q, [(kc, vc, m) for (kc, vc), m in zip(new, cache.group_masks(g))])
      ys.append(y.transpose(0, 2, 1, 3).reshape(-1, c.n_embd))
    return jnp.concatenate(ys), dataclasses.replace(cache, parts=tuple(parts))


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c, dt = self.cfg, compute_dtype(self.cfg)
    h = gelu(Dense(4 * c.n_embd, "fc", dtype=dt)(x_BxTxD))
    return Dropout(c)(Dense(c.n_embd, "proj", dtype=dt)(h))


class Block(nn.Module):
  """Pre-LN block: x + attn(LN(x)); x + mlp(LN(x)).

  With `x_kv`, queries come from x and keys/values from LN(x_kv) (same LN): the first
  Perceiver-AR layer is a vanilla layer computed for a subset of query positions.
  With `cache` (decoding; Attention's): x is [N, D], every group's new rows, and the block
  goes on past the keys/values only at the cache's queries (cache.pick); returns (x, cache).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxQxD, mask_QxK=None, x_BxKxD=None, *, cache: attention.Cache | None = None,
               positions=None):
    """`positions` ([B, T]; decoding: [N]) with model.positions='rope' (self-attention)."""
    dt = compute_dtype(self.cfg)
    ln1 = LayerNorm("ln1", dt)
    h_q = ln1(x_BxQxD)
    h_kv = h_q if x_BxKxD is None else ln1(x_BxKxD)
    attn = Attention(self.cfg, name="attn")
    if cache is None:
      y = attn(h_q, h_kv, mask_QxK, rope=None if positions is None else (positions, positions))
    else:
      x_BxQxD, h_q = cache.pick(x_BxQxD), cache.pick(h_q)
      rope = None if positions is None else (cache.pick(positions), positions)
      y, cache = attn(h_q, h_kv, None, cache, rope=rope)
    x_BxQxD = x_BxQxD + y
    x_BxQxD = x_BxQxD + MLP(self.cfg, name="mlp")(LayerNorm("ln2", dt)(x_BxQxD))
    return x_BxQxD if cache is None else (x_BxQxD, cache)


def embed(module: nn.Module, cfg: ModelConfig, idx_BxT, positions_BxT=None):
  """Token + learned position embeddings (positions 0..T-1, or given), then dropout.

  Called inside a variant's compact __call__, so `tok_emb` and `pos_emb` are top-level
  parameters of every variant, as in the reference. The sum is taken in float32 and is
  the residual stream, in the compute dtype. With model.positions='rope' there is no
  `pos_emb`: positions enter in attention (attention.rotary).
  """
  tok_BxTxD = nn.Embed(cfg.vocab_size, cfg.n_embd, embedding_init=init_normal,
                       param_dtype=jnp.float32, name="tok_emb")(idx_BxT)
  if cfg.positions == "rope":
    return Dropout(cfg)(tok_BxTxD.astype(compute_dtype(cfg)))
  pos_1xLxD = module.param("pos_emb", nn.initializers.zeros, (1, cfg.block_size, cfg.n_embd))
  pos = pos_1xLxD[:, :idx_BxT.shape[1]] if positions_BxT is None else pos_1xLxD[0][positions_BxT]
  return Dropout(cfg)((tok_BxTxD + pos).astype(compute_dtype(cfg)))


def head(cfg: ModelConfig, x_BxTxD):
  """Final LayerNorm and the bias-free Linear head. The logits are float32 in any compute
  dtype: in bfloat16 the head's matmul (bf16 inputs) accumulates into float32."""
  dt = compute_dtype(cfg)
  return Dense(cfg.vocab_size, "head", use_bias=False, dtype=dt, out_dtype=jnp.float32)(
      LayerNorm("ln_f", dt)(x_BxTxD))

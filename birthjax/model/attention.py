"""The one place attention math lives: attend(q, k, v, mask) and the mask builders.

Vanilla and (later) Perceiver variants differ only in where q, k, v come from and which
mask is passed; `Cache` is the layout of a decoding KV cache (groups of rows, each
reading its cache in parts), which birthjax.model.layers.Attention writes and reads.
Scores of masked pairs are set to -1e10 before the softmax (the A5
reference's masked_fill), computed in float32.

With bfloat16 q, k, v (ModelConfig.dtype='bfloat16') the scores q k^T come out of the
matmul in float32 (preferred_element_type; no bfloat16 rounding before the softmax), the
softmax is float32, its weights are cast to v's dtype for the weights @ v matmul.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e10


def causal_mask(t: int) -> jax.Array:
  """[t, t] bool, True where query i may attend to key j (j <= i)."""
  return jnp.tril(jnp.ones((t, t), bool))


def _einsum(spec: str, a, b, out_dtype=None):
  """jnp.einsum(spec, a, b) (its result in out_dtype, default the inputs'); a `b` of batch 1
  (a shared cache part) serves every row of `a`, read once instead of broadcast."""
  if b.shape[0] == 1 < a.shape[0]:
    lhs, rhs = spec.split(",")
    rhs, out = rhs.split("->")
    spec, b = f"{lhs},{rhs[1:]}->{out}", b[0]
  if out_dtype is not None and jnp.dtype(out_dtype) != a.dtype:
    # XLA:CPU has no bf16 x bf16 -> f32 dot inside loops (DotThunk): widen the inputs
    # instead, the same result (bf16 values are exact in f32, the sum in f32 either way)
    a, b = a.astype(out_dtype), b.astype(out_dtype)
  return jnp.einsum(spec, a, b)


def _scores(q_BxHxQxD, k_BxHxKxD, mask_QxK):
  """float32 q k^T / sqrt(D), NEG_INF where the mask is False. Keys of batch 1 are shared
  by every row (read once)."""
  att_BxHxQxK = _einsum("bhqd,bhkd->bhqk", q_BxHxQxD, k_BxHxKxD, jnp.float32)
  att_BxHxQxK = att_BxHxQxK * (1.0 / jnp.sqrt(q_BxHxQxD.shape[-1]))
  return jnp.where(mask_QxK, att_BxHxQxK, NEG_INF)


def attend(q_BxHxQxD, k_BxHxKxD, v_BxHxKxD, mask_QxK, *, dropout_rate: float = 0.0,
           dropout_rng=None, deterministic: bool = True):
  """Softmax(q k^T / sqrt(D), masked) (dropout on the weights) @ v -> [B, H, Q, D]."""
  att_BxHxQxK = _scores(q_BxHxQxD, k_BxHxKxD, mask_QxK)
  att_BxHxQxK = jax.nn.softmax(att_BxHxQxK, axis=-1).astype(v_BxHxKxD.dtype)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, att_BxHxQxK.shape)
    att_BxHxQxK = jnp.where(keep, att_BxHxQxK / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhqk,bhkd->bhqd", att_BxHxQxK, v_BxHxKxD)


def rotary(x, positions, base: float = 10000.0):
  """Rotary position embedding (RoFormer; the 2024 A5 handout's convention): the pairs
  (x[2i], x[2i+1]) of the last axis rotated by the angle position * base^(-2i/D), in
  float32. `positions` broadcasts against x.shape[:-1] (e.g. [B, 1, T] for [B, H, T, D]).
  Scores of rotated queries and keys depend on positions only through their difference."""
  d = x.shape[-1]
  inv = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  angle = jnp.asarray(positions, jnp.float32)[..., None] * inv
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], d // 2, 2)
  a, b = pairs[..., 0], pairs[..., 1]
  return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape).astype(x.dtype)


def attend_parts(q_BxHxQxD, parts):
  """`attend` (no dropout) over keys/values given as parts [(k, v, mask), ...] along the key
  axis, without concatenating them: one softmax over all parts' scores (decoding caches).
  A part of batch 1 is shared by every row. The parts' weights @ v are summed in float32
  (one rounding to v's dtype at the end, as attend's single matmul)."""
  scores = [_scores(q_BxHxQxD, k, m) for k, _, m in parts]
  att = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
  cuts = [int(x) for x in np.cumsum([s.shape[-1] for s in scores])[:-1]]
  out = sum(_einsum("bhqk,bhkd->bhqd", a.astype(v.dtype), v, jnp.float32)
            for a, (_, v, _) in zip(jnp.split(att, cuts, axis=-1), parts))
  return out.astype(parts[0][1].dtype)


@dataclasses.dataclass(frozen=True)
class Cache:
  """One attention layer's KV cache while decoding rows in groups (birthjax.infer.kv_cache
  lays them out). A call's new inputs are the rows of one flat [N, D] array (group g's
  R x Q rows in order, so the dense layers run once on all groups); attention runs per group.

  parts[g]: group g's cache, ((k, v), ...) along the key axis, each [R, H, S_part, Dh] (or
    batch 1: shared by every row), read as one cache whose columns are the parts' in order
    (never concatenated: `attend_parts`);
  masks[g]: per part, [R or 1, 1, Q, S_part] bool, or True: the columns each new query sees;
  write: (part, column): the new inputs' keys/values go to that part of every group, at
    column..column+Q-1 of every row (a plain in-place update);
  keep[g]: None, or [R] positions: queries, and all after them, only at those (a prefill
    reads nothing else), one a row;
  shapes[g]: (R, Q) of group g's new inputs (set by the model from its tokens).
  """
  parts: tuple
  masks: tuple
  write: tuple
  keep: tuple | None = None
  shapes: tuple = ()

  @property
  def queries(self):
    """(R, Q) of each group's queries (Q = 1 with keep)."""
    return self.shapes if self.keep is None else tuple((r, 1) for r, _ in self.shapes)

  def pick(self, x_NxD):
    """The rows of x (every group's new inputs, flat) that are queries."""
    if self.keep is None:
      return x_NxD
    starts = np.cumsum([0] + [r * q for r, q in self.shapes])[:-1].tolist()
    return x_NxD[jnp.concatenate([s + jnp.arange(r) * q + k
                                  for s, (r, q), k in zip(starts, self.shapes, self.keep)])]

  @staticmethod
  def split(t_NxC, shapes, n_head):
    """Flat rows -> per group [R, H, Q, C / H] (shapes: (R, Q) of each group)."""
    cuts = np.cumsum([r * q for r, q in shapes])[:-1].tolist()
    return [t.reshape(r, q, n_head, -1).transpose(0, 2, 1, 3)
            for t, (r, q) in zip(jnp.split(t_NxC, cuts), shapes)]

  def group_masks(self, g):
    """Group g's masks, at its queries' positions."""
    if self.keep is None:
      return self.masks[g]
    (r, q), k = self.shapes[g], self.keep[g]
    return tuple(m if m is True else jnp.take_along_axis(
        jnp.broadcast_to(m, (r, 1, q, m.shape[-1])), k[:, None, None, None], axis=2)
        for m in self.masks[g])

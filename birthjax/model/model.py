"""The A5 GPT in Flax linen and `build(cfg)`, which picks the variant.

Parameter names follow the reference's torch state dict (tok_emb, pos_emb, blocks_i/{ln1,
attn/{key,query,value,proj}, ln2, mlp/{fc,proj}}, ln_f, head) so checkpoints map one to
one. Init as the reference: normal(0.02) weights, zero biases, LN 1/0, pos_emb zeros.

Every variant is called as `apply(params, idx_BxT, end_B=None)` and returns [B, T, V]
logits; `end_B` (one past the last position to predict, per row) matters only to
Perceiver-AR, whose predicted positions are a window of m positions ending there. The
vanilla GPT also decodes with a KV cache through the same call and the same Blocks
(`cache=`, laid out by birthjax.infer.kv_cache).
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from birthjax.model import attention
from birthjax.model import perceiver
from birthjax.model.config import ModelConfig
from birthjax.model.layers import Block, embed, head

__all__ = ["ModelConfig", "GPT", "build", "init_params", "param_count", "VARIANTS"]


class GPT(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, idx_BxT, end_B=None, *, positions_BxT=None, segments_BxT=None, cache=None):
    """Packed rows (birthjax.packing) give positions and segments: attention stays causal
    and inside each segment.

    Decoding with a KV cache (birthjax.infer.kv_cache; deterministic): idx_BxT and
    positions_BxT are per-group tuples ([R, Q] tokens of each group of rows, positions
    broadcastable to them), `cache` one attention.Cache per layer. The embeddings, dense
    layers and head run once on every group's rows together, attention per group, in these
    same Blocks. Returns (per group [R, Q, V] logits, Q = 1 where the cache keeps one
    position a row; the caches with the new keys/values)."""
    del end_B
    c = self.cfg
    if cache is not None:
      shapes = tuple(t.shape for t in idx_BxT)
      flat = lambda ts: jnp.concatenate([jnp.broadcast_to(t, s).reshape(-1)
                                         for t, s in zip(ts, shapes)])[None]
      pos_N = flat(positions_BxT)
      x_NxD = embed(self, c, flat(idx_BxT), pos_N)[0]
      rope = pos_N[0] if c.positions == "rope" else None
      new = []
      for i in range(c.n_layer):
        x_NxD, layer = Block(c, name=f"blocks_{i}")(
            x_NxD, cache=dataclasses.replace(cache[i], shapes=shapes), positions=rope)
        new.append(layer)
      queries = new[-1].queries
      logits = jnp.split(head(c, x_NxD), np.cumsum([r * q for r, q in queries])[:-1].tolist())
      return tuple(l.reshape(r, q, -1) for l, (r, q) in zip(logits, queries)), tuple(new)
    x_BxTxD = embed(self, c, idx_BxT, positions_BxT)
    mask = attention.causal_mask(idx_BxT.shape[1])
    if segments_BxT is not None:
      same_BxTxT = segments_BxT[:, :, None] == segments_BxT[:, None, :]
      mask = (mask & same_BxTxT)[:, None]  # [B, 1, T, T]
    rope = None
    if c.positions == "rope":
      rope = (positions_BxT if positions_BxT is not None
              else jnp.arange(idx_BxT.shape[1])[None])
    for i in range(c.n_layer):
      x_BxTxD = Block(c, name=f"blocks_{i}")(x_BxTxD, mask, positions=rope)
    return head(c, x_BxTxD)


def _variants():
  return {"vanilla": GPT, "perceiver": perceiver.Perceiver, "perceiver_ar": perceiver.PerceiverAR}


VARIANTS = ("vanilla", "perceiver", "perceiver_ar")


def build(cfg: ModelConfig) -> nn.Module:
  return _variants()[cfg.variant](cfg)


def init_params(cfg: ModelConfig, rng) -> dict:
  x = jnp.zeros((1, cfg.block_size), jnp.int32)
  return _init(cfg)(rng, x)["params"]


@functools.lru_cache(maxsize=32)
def _init(cfg):
  """jit(init), one compilation per config."""
  return jax.jit(build(cfg).init)


def param_count(params) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))

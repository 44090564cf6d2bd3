"""Building blocks shared by every variant: Dense/LayerNorm with the reference's init,
multi-head attention (self or cross, any mask), the MLP and the pre-LN block.

All attention goes through `attention.attend`; variants differ only in where queries,
keys and values come from and which mask is passed.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn

from birthjax import attention

init_normal = nn.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  variant: str = "vanilla"  # 'vanilla' | 'perceiver' | 'perceiver_ar'
  n_layer: int = 4
  n_head: int = 8
  n_embd: int = 256
  block_size: int = 128
  dropout: float = 0.1
  dropout_rng: str = "threefry"  # 'threefry' | 'hash' (birthjax.fastrng): how dropout bits are drawn
  bottleneck_dim: int = 64  # m: latents of the perceiver variants
  deterministic: bool = True  # False while training (dropout on)


def Dense(features, name, use_bias=True):
  return nn.Dense(features, use_bias=use_bias, kernel_init=init_normal, name=name)


def LayerNorm(name):
  return nn.LayerNorm(epsilon=1e-5, name=name)  # torch's eps; flax defaults to 1e-6


def Dropout(cfg: ModelConfig):
  return nn.Dropout(cfg.dropout, deterministic=cfg.deterministic)


class Attention(nn.Module):
  """Multi-head attention: queries from x_q, keys/values from x_kv, any [Q, K] mask.

  (Decoding with a KV cache, birthjax.decode, applies these same submodules to cached keys.)
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxQxD, x_BxKxD, mask_QxK):
    c = self.cfg
    split = lambda t: t.reshape(t.shape[0], t.shape[1], c.n_head, -1).transpose(0, 2, 1, 3)
    q = split(Dense(c.n_embd, "query")(x_BxQxD))
    k = split(Dense(c.n_embd, "key")(x_BxKxD))
    v = split(Dense(c.n_embd, "value")(x_BxKxD))
    rng = None if c.deterministic or c.dropout == 0 else self.make_rng("dropout")
    y = attention.attend(q, k, v, mask_QxK, dropout_rate=c.dropout, dropout_rng=rng,
                         deterministic=c.deterministic)
    b, q_len = y.shape[0], y.shape[2]
    y = y.transpose(0, 2, 1, 3).reshape(b, q_len, c.n_embd)
    return Dropout(c)(Dense(c.n_embd, "proj")(y))


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c = self.cfg
    h = nn.gelu(Dense(4 * c.n_embd, "fc")(x_BxTxD), approximate=False)  # torch's exact GELU
    return Dropout(c)(Dense(c.n_embd, "proj")(h))


class Block(nn.Module):
  """Pre-LN block: x + attn(LN(x)); x + mlp(LN(x)).

  With `x_kv`, queries come from x and keys/values from LN(x_kv) (same LN): the first
  Perceiver-AR layer is a vanilla layer computed for a subset of query positions.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxQxD, mask_QxK, x_BxKxD=None):
    ln1 = LayerNorm("ln1")
    h_q = ln1(x_BxQxD)
    h_kv = h_q if x_BxKxD is None else ln1(x_BxKxD)
    x_BxQxD = x_BxQxD + Attention(self.cfg, name="attn")(h_q, h_kv, mask_QxK)
    x_BxQxD = x_BxQxD + MLP(self.cfg, name="mlp")(LayerNorm("ln2")(x_BxQxD))
    return x_BxQxD

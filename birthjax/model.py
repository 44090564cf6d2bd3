"""The A5 GPT in Flax linen: token + learned position embeddings, pre-LN blocks, LN, head.

Parameter names follow the reference's torch state dict (tok_emb, pos_emb, blocks_i/{ln1,
attn/{key,query,value,proj}, ln2, mlp/{fc,proj}}, ln_f, head) so checkpoints map one to
one. Init as the reference: normal(0.02) weights, zero biases, LN 1/0, pos_emb zeros.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from birthjax import attention

_init = nn.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  variant: str = "vanilla"
  n_layer: int = 4
  n_head: int = 8
  n_embd: int = 256
  block_size: int = 128
  dropout: float = 0.1
  deterministic: bool = True  # False while training (dropout on)


def Dense(features, name, use_bias=True):
  return nn.Dense(features, use_bias=use_bias, kernel_init=_init, name=name)


def LayerNorm(name):
  return nn.LayerNorm(epsilon=1e-5, name=name)  # torch's eps; flax defaults to 1e-6


class Attention(nn.Module):
  """Multi-head attention: queries from x_q, keys/values from x_kv, any mask."""
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
    y = y.transpose(0, 2, 1, 3).reshape(x_BxQxD.shape)
    y = Dense(c.n_embd, "proj")(y)
    return nn.Dropout(c.dropout, deterministic=c.deterministic)(y)


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c = self.cfg
    h = nn.gelu(Dense(4 * c.n_embd, "fc")(x_BxTxD), approximate=False)  # torch's exact GELU
    return nn.Dropout(c.dropout, deterministic=c.deterministic)(Dense(c.n_embd, "proj")(h))


class Block(nn.Module):
  """Pre-LN transformer block: x + attn(LN(x)); x + mlp(LN(x))."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, mask_TxT):
    h = LayerNorm("ln1")(x_BxTxD)
    x_BxTxD = x_BxTxD + Attention(self.cfg, name="attn")(h, h, mask_TxT)
    return x_BxTxD + MLP(self.cfg, name="mlp")(LayerNorm("ln2")(x_BxTxD))


class GPT(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, idx_BxT):
    c = self.cfg
    t = idx_BxT.shape[1]
    tok_BxTxD = nn.Embed(c.vocab_size, c.n_embd, embedding_init=_init, name="tok_emb")(idx_BxT)
    pos_1xLxD = self.param("pos_emb", nn.initializers.zeros, (1, c.block_size, c.n_embd))
    x_BxTxD = nn.Dropout(c.dropout, deterministic=c.deterministic)(tok_BxTxD + pos_1xLxD[:, :t])
    mask_TxT = attention.causal_mask(t)
    for i in range(c.n_layer):
      x_BxTxD = Block(c, name=f"blocks_{i}")(x_BxTxD, mask_TxT)
    x_BxTxD = LayerNorm("ln_f")(x_BxTxD)
    return Dense(c.vocab_size, "head", use_bias=False)(x_BxTxD)


VARIANTS = {"vanilla": GPT}


def build(cfg: ModelConfig) -> nn.Module:
  return VARIANTS[cfg.variant](cfg)


def init_params(cfg: ModelConfig, rng) -> dict:
  x = jnp.zeros((1, cfg.block_size), jnp.int32)
  return jax.jit(build(cfg).init)(rng, x)["params"]


def param_count(params) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))

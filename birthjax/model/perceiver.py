"""Latent-bottleneck variants: the A5 Perceiver (exact) and a Perceiver-AR adaptation.

Shapes: B batch, T input length (<= block_size l = 128), D n_embd, M bottleneck_dim m.

A5 Perceiver (`variant='perceiver'`), following the handout's hints:
  x_BxTxD  = tok_emb + pos_emb (dropout)
  down_block: a learned basis C_1xMxD (xavier-uniform with torch's fan rule for a 3-D
      tensor: fan_in = M*D, fan_out = D); causal cross-attention with queries LN1(C) and
      keys/values x (mask_MxT = first M rows of the TxT lower triangle: latent i sees
      inputs 0..i), residual onto C; then LN2 -> MLP -> residual          -> lat_BxMxD
  blocks_0..n_layer-3: causal self-attention blocks over the M latents     -> lat_BxMxD
  up_block: queries x, keys/values LN1(lat) (mask_TxM = first M columns of the TxT lower
      triangle: position t sees latents 0..min(t, M-1)), residual onto x; LN2 -> MLP
      -> residual                                                          -> x_BxTxD
  ln_f, head                                                               -> logits_BxTxV
  Cost O(T*M + L*M^2) attention, but the output at t >= M never sees inputs M..t-1 (it
  sees them only through its own query x_t): the context loss that tests document.

Perceiver-AR (`variant='perceiver_ar'`, after Hawthorne et al. 2022): the latents are the
last M positions of the window to predict, anchored at `end_B` (one past the last position
to predict; default T): positions p = start..start+M-1, start = clip(end - M, 0, T - M).
  x_BxTxD  = tok_emb + pos_emb (dropout)
  blocks_0: a vanilla pre-LN block computed only for the M query rows: queries LN1(x_p),
      keys/values LN1(x_0..T-1), mask: row p sees inputs j <= p (per row of the batch)
  blocks_1..n_layer-1: causal self-attention blocks over the M latents
  ln_f, head -> logits for the M positions, scattered into zeros_BxTxV
So the output at every predicted position p depends on all inputs 0..p and none after
p; the cost is O(T*M + L*M^2); parameters are exactly vanilla's (no learned latents).
Training anchors each row's window at its last target: targets of the row that fall
before the window (only span-corrupted documents longer than M) are left out of the loss.
Decoding anchors the window at the prompt's end, so nothing changes for the user.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from birthjax.model import attention
from birthjax.model.config import ModelConfig, compute_dtype
from birthjax.model.layers import MLP, Attention, Block, LayerNorm, embed, head
from birthjax.data.vocab import PAD


def torch_xavier_uniform(key, shape, dtype=jnp.float32):
  """torch.nn.init.xavier_uniform_: fan_in = shape[1]*rf, fan_out = shape[0]*rf, rf = prod(shape[2:])."""
  rf = math.prod(shape[2:])
  bound = math.sqrt(6.0 / (shape[1] * rf + shape[0] * rf))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def down_mask(m: int, t: int):
  """[M, T]: the first M rows of the T x T lower triangle (latent i sees inputs 0..i)."""
  return jnp.arange(t)[None, :] <= jnp.arange(m)[:, None]


def up_mask(t: int, m: int):
  """[T, M]: the first M columns of the T x T lower triangle (position i sees latents 0..i)."""
  return jnp.arange(m)[None, :] <= jnp.arange(t)[:, None]


class DownProjectBlock(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c, (b, t, d) = self.cfg, x_BxTxD.shape
    m = c.bottleneck_dim
    dt = compute_dtype(c)
    C_1xMxD = self.param("C", torch_xavier_uniform, (1, m, d))  # float32, as every parameter
    q_BxMxD = jnp.broadcast_to(LayerNorm("ln1", dt)(C_1xMxD), (b, m, d))
    attn_BxMxD = Attention(c, name="attn")(q_BxMxD, x_BxTxD, down_mask(m, t))
    lat_BxMxD = C_1xMxD.astype(dt) + attn_BxMxD  # the latents' residual stream: compute dtype
    return lat_BxMxD + MLP(c, name="mlp")(LayerNorm("ln2", dt)(lat_BxMxD))


class UpProjectBlock(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, lat_BxMxD, x_BxTxD):
    c, t, m = self.cfg, x_BxTxD.shape[1], lat_BxMxD.shape[1]
    dt = compute_dtype(c)
    kv_BxMxD = LayerNorm("ln1", dt)(lat_BxMxD)
    x_BxTxD = x_BxTxD + Attention(c, name="attn")(x_BxTxD, kv_BxMxD, up_mask(t, m))
    return x_BxTxD + MLP(c, name="mlp")(LayerNorm("ln2", dt)(x_BxTxD))


class Perceiver(nn.Module):
  """The A5 Perceiver: down-projection, n_layer - 2 latent blocks, up-projection."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, idx_BxT, end_B=None):
    del end_B
    c = self.cfg
    x_BxTxD = embed(self, c, idx_BxT)
    lat_BxMxD = DownProjectBlock(c, name="down_block")(x_BxTxD)
    mask_MxM = attention.causal_mask(c.bottleneck_dim)
    for i in range(c.n_layer - 2):
      lat_BxMxD = Block(c, name=f"blocks_{i}")(lat_BxMxD, mask_MxM)
    return head(c, UpProjectBlock(c, name="up_block")(lat_BxMxD, x_BxTxD))


def window(end_B, t: int, m: int):
  """Positions [B, M] of the Perceiver-AR latents: M consecutive positions ending at end."""
  m = min(m, t)
  start_B = jnp.clip(end_B - m, 0, t - m)
  return start_B[:, None] + jnp.arange(m)[None, :]


class PerceiverAR(nn.Module):
  """Perceiver-AR: M latents at the predicted positions, cross-attending to every input."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, idx_BxT, end_B=None):
    c, (b, t) = self.cfg, idx_BxT.shape
    end_B = jnp.broadcast_to(t if end_B is None else end_B, (b,))
    pos_BxM = window(end_B, t, c.bottleneck_dim)
    x_BxTxD = embed(self, c, idx_BxT)
    lat_BxMxD = jnp.take_along_axis(x_BxTxD, pos_BxM[..., None], axis=1)
    mask_Bx1xMxT = (jnp.arange(t)[None, None, :] <= pos_BxM[:, :, None])[:, None]
    lat_BxMxD = Block(c, name="blocks_0")(lat_BxMxD, mask_Bx1xMxT, x_BxTxD)
    mask_MxM = attention.causal_mask(pos_BxM.shape[1])
    for i in range(1, c.n_layer):
      lat_BxMxD = Block(c, name=f"blocks_{i}")(lat_BxMxD, mask_MxM)
    logits_BxMxV = head(c, lat_BxMxD)
    zeros_BxTxV = jnp.zeros((b, t, logits_BxMxV.shape[-1]), logits_BxMxV.dtype)
    return jax.vmap(lambda z, p, l: z.at[p].set(l))(zeros_BxTxV, pos_BxM, logits_BxMxV)


def training_window(cfg: ModelConfig, y_BxT):
  """(end_B, targets_BxT) for a training batch: Perceiver-AR's window ends at each row's
  last target and targets outside it become PAD; other variants predict everywhere."""
  if cfg.variant != "perceiver_ar":
    return None, y_BxT
  t = y_BxT.shape[1]
  idx_T = jnp.arange(t)
  last_B = jnp.max(jnp.where(y_BxT != PAD, idx_T, -1), axis=1)
  end_B = jnp.where(last_B >= 0, last_B + 1, t)
  pos_BxM = window(end_B, t, cfg.bottleneck_dim)
  inside = (idx_T[None, :] >= pos_BxM[:, :1]) & (idx_T[None, :] <= pos_BxM[:, -1:])
  return end_B, jnp.where(inside, y_BxT, PAD)

"""The published CS224N 2023 A5 reference model in PyTorch (`model.py`, `attention.py`,
`utils.sample`), for checking birthjax against it and for moving weights between the two.

An optional extra: this module imports torch (`pip install -r requirements-interop.txt`);
nothing else in birthjax imports it. The code follows the reference line by line, so the
state dict names and numerics are the reference's:

  tok_emb.weight, pos_emb, blocks.N.{ln1,ln2}.{weight,bias},
  blocks.N.attn.{key,query,value,proj}.{weight,bias}, blocks.N.attn.mask (a buffer),
  blocks.N.mlp.{0,2}.{weight,bias}, ln_f.{weight,bias}, head.weight
  and, for the perceiver, down_block.{C, ln1, attn, ln2, mlp}, up_block.{ln1, attn, ln2, mlp}.

One difference in form only: the reference's GPT temporarily sets `config.block_size` to
`bottleneck_dim` while building the latent blocks (and resets it); here the config is copied
instead of mutated, with the same result.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from birthjax.errors import UserError

__all__ = ["GPTConfig", "gpt_config", "CausalSelfAttention", "CausalCrossAttention", "Block",
           "DownProjectBlock", "UpProjectBlock", "GPT", "sample", "top_k_logits"]


class GPTConfig:
  """The reference's config: dropout 0.1 everywhere, perceiver off unless asked."""

  def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, embd_pdrop=0.1,
               resid_pdrop=0.1, attn_pdrop=0.1, perceiver=False, bottleneck_dim=None):
    self.vocab_size, self.block_size = vocab_size, block_size
    self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
    self.embd_pdrop, self.resid_pdrop, self.attn_pdrop = embd_pdrop, resid_pdrop, attn_pdrop
    self.perceiver, self.bottleneck_dim = perceiver, bottleneck_dim

  def __repr__(self):
    return f"GPTConfig({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _causal_buffer(block_size):
  return torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)


class CausalCrossAttention(nn.Module):
  """Queries from x_q, keys/values from x_kv; mask[:, :, :Tq, :Tk] of a block x block tril."""

  def __init__(self, config):
    super().__init__()
    assert config.n_embd % config.n_head == 0
    self.key = nn.Linear(config.n_embd, config.n_embd)
    self.query = nn.Linear(config.n_embd, config.n_embd)
    self.value = nn.Linear(config.n_embd, config.n_embd)
    self.attn_drop = nn.Dropout(config.attn_pdrop)
    self.resid_drop = nn.Dropout(config.resid_pdrop)
    self.proj = nn.Linear(config.n_embd, config.n_embd)
    self.register_buffer("mask", _causal_buffer(config.block_size))
    self.n_head = config.n_head

  def forward(self, x_kv, x_q):
    Bk, Tk, Ck = x_kv.size()
    Bq, Tq, Cq = x_q.size()
    k = self.key(x_kv).view(Bk, Tk, self.n_head, Ck // self.n_head).transpose(1, 2)
    q = self.query(x_q).view(Bq, Tq, self.n_head, Cq // self.n_head).transpose(1, 2)
    v = self.value(x_kv).view(Bk, Tk, self.n_head, Ck // self.n_head).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    B = max(Bk, Bq)  # the down block's queries come from C, batch 1: broadcast
    att = att.masked_fill(self.mask[:, :, :Tq, :Tk] == 0, -1e10)
    att = F.softmax(att, dim=-1)
    att = self.attn_drop(att)
    y = att @ v
    y = y.transpose(1, 2).contiguous().view(B, Tq, Cq)
    return self.resid_drop(self.proj(y))


class CausalSelfAttention(CausalCrossAttention):
  """Multi-head masked self-attention with a projection at the end: the same layers and
  mask buffer as the reference's class, computed as cross-attention of x to itself."""

  def forward(self, x, layer_past=None):
    return super().forward(x, x)


def _mlp(config):
  return nn.Sequential(
      nn.Linear(config.n_embd, 4 * config.n_embd),
      nn.GELU(),
      nn.Linear(4 * config.n_embd, config.n_embd),
      nn.Dropout(config.resid_pdrop),
  )


class Block(nn.Module):
  """An unassuming Transformer block (pre-LN)."""

  def __init__(self, config):
    super().__init__()
    self.ln1 = nn.LayerNorm(config.n_embd)
    self.ln2 = nn.LayerNorm(config.n_embd)
    self.attn = CausalSelfAttention(config)
    self.mlp = _mlp(config)

  def forward(self, x):
    x = x + self.attn(self.ln1(x))
    x = x + self.mlp(self.ln2(x))
    return x


class DownProjectBlock(nn.Module):
  """Inputs [B, T, n] -> latents [B, m, n]: C + attn(kv=x, q=ln1(C)), then the MLP."""

  def __init__(self, config):
    super().__init__()
    self.C = nn.Parameter(torch.empty(1, config.bottleneck_dim, config.n_embd))
    nn.init.xavier_uniform_(self.C)
    self.ln1 = nn.LayerNorm(config.n_embd)
    self.ln2 = nn.LayerNorm(config.n_embd)
    self.attn = CausalCrossAttention(config)
    self.mlp = _mlp(config)

  def forward(self, x_input):
    x = self.C + self.attn(x_input, self.ln1(self.C))
    x = x + self.mlp(self.ln2(x))
    return x


class UpProjectBlock(nn.Module):
  """Latents [B, m, n] and inputs [B, T, n] -> [B, T, n]: x + attn(kv=ln1(y), q=x), MLP."""

  def __init__(self, config):
    super().__init__()
    self.ln1 = nn.LayerNorm(config.n_embd)
    self.ln2 = nn.LayerNorm(config.n_embd)
    self.attn = CausalCrossAttention(config)
    self.mlp = _mlp(config)

  def forward(self, y, x_input):
    x = x_input + self.attn(self.ln1(y), x_input)
    x = x + self.mlp(self.ln2(x))
    return x


class GPT(nn.Module):
  """The full GPT language model, with a context size of block_size."""

  def __init__(self, config):
    super().__init__()
    self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
    self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
    self.drop = nn.Dropout(config.embd_pdrop)
    self.perceiver = config.perceiver
    if config.perceiver:
      self.down_block = DownProjectBlock(config)
      latent = copy.copy(config)
      latent.block_size = config.bottleneck_dim  # the latent blocks' masks are m x m
      self.blocks = nn.Sequential(*[Block(latent) for _ in range(config.n_layer - 2)])
      self.up_block = UpProjectBlock(config)
    else:
      self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
    self.ln_f = nn.LayerNorm(config.n_embd)
    self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
    self.block_size = config.block_size
    self.apply(self._init_weights)

  def _init_weights(self, module):
    if isinstance(module, (nn.Linear, nn.Embedding)):
      module.weight.data.normal_(mean=0.0, std=0.02)
      if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
      module.bias.data.zero_()
      module.weight.data.fill_(1.0)

  def get_block_size(self):
    return self.block_size

  def forward(self, idx, targets=None):
    b, t = idx.size()
    assert t <= self.block_size, f"Cannot forward, model block size ({t}, {self.block_size}) is exhausted."
    token_embeddings = self.tok_emb(idx)
    position_embeddings = self.pos_emb[:, :t, :]
    x_input = self.drop(token_embeddings + position_embeddings)
    x = self.down_block(x_input) if self.perceiver else x_input
    x = self.blocks(x)
    if self.perceiver:
      x = self.up_block(x, x_input)
    x = self.ln_f(x)
    logits = self.head(x)
    loss = None
    if targets is not None:
      loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=0)
    return logits, loss


def top_k_logits(logits, k):
  v, _ = torch.topk(logits, k)
  out = logits.clone()
  out[out < v[:, [-1]]] = -float("Inf")
  return out


@torch.no_grad()
def sample(model, x, steps, temperature=1.0, sample=False, top_k=None):
  """The reference's utils.sample: feed the last block_size tokens of x [B, T], append the
  argmax (sample=False, as A5's evaluation uses it) or a draw; returns x [B, T + steps]."""
  block_size = model.get_block_size()
  model.eval()
  for _ in range(steps):
    x_cond = x if x.size(1) <= block_size else x[:, -block_size:]  # crop context if needed
    logits, _ = model(x_cond)
    logits = logits[:, -1, :] / temperature
    if top_k is not None:
      logits = top_k_logits(logits, top_k)
    probs = F.softmax(logits, dim=-1)
    if sample:
      ix = torch.multinomial(probs, num_samples=1)
    else:
      _, ix = torch.topk(probs, k=1, dim=-1)
    x = torch.cat((x, ix), dim=1)
  return x


def gpt_config(model_cfg):
  """The reference's GPTConfig of a birthjax 'vanilla' or 'perceiver' ModelConfig."""
  if model_cfg.variant not in ("vanilla", "perceiver"):
    raise UserError(f"the A5 reference has no {model_cfg.variant!r} model", "model.variant",
                    "use a 'vanilla' or 'perceiver' model (Perceiver-AR exists only in birthjax)")
  perceiver = model_cfg.variant == "perceiver"
  return GPTConfig(model_cfg.vocab_size, model_cfg.block_size, model_cfg.n_layer,
                   model_cfg.n_head, model_cfg.n_embd, embd_pdrop=model_cfg.dropout,
                   resid_pdrop=model_cfg.dropout, attn_pdrop=model_cfg.dropout,
                   perceiver=perceiver,
                   bottleneck_dim=model_cfg.bottleneck_dim if perceiver else None)

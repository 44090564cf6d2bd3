"""Greedy decoding of the vanilla GPT with a KV cache (birthjax.infer.decode's default path for
rows that need no crop), laid out for a CPU, where it is bound by reading the cache. The
model is model.GPT itself, called with `cache=` (layers.Block / layers.Attention write and
read the cache: one definition of a block for training and decoding); this module only lays
out the rows and caches (attention.Cache) and runs the steps:

* the prompts' common prefix ("Where was ") runs once and is one cache part (batch 1) that
  every row reads (`attention.attend_parts` broadcasts it);
* rows are sorted by length into groups, each with a cache as wide as its own longest
  prompt; the embeddings, dense layers and head still run on all rows at once;
* the generated tokens' keys/values go to one cache part per PHASE steps, written at the
  same column for every row (an in-place update), so a step reads only parts written;
* the prefill's last layer computes keys/values at every prompt position and the rest only
  at each row's last one (attention.Cache.keep).

A5 dev set (500 questions, 32 characters) on 2 CPU cores (the machine of README's Speed
table): 0.84-0.95 s, first call 11-14 s with the compile (one padded cache: 3.5 s on a slower CPU).
Tests: tests/infer/decode_cache_test.py (tokens and log-probs against the reference loop, and
against the full forward passes on the A5 dev questions).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from birthjax.model import attention, loss, model
from birthjax import sharding
from birthjax.model.config import ModelConfig, compute_dtype


def round_up(x: int, q: int) -> int:
  return -(-x // q) * q


def _cached_blocks(params, c: ModelConfig, tokens, caches, masks, write, positions, keep=None):
  """model.GPT (its own call, with `cache`) over groups of rows, each with its own KV cache
  (the name, kept from when this was the blocks alone, is what tests/model/dtype_test.py spies on).

  tokens[g]: [R, Q] new tokens of group g, at positions[g] (broadcastable to them).
  caches[g][layer]: that layer's cache as parts ((k, v), ...), each [R, H, S_part, Dh], read
  as one cache whose columns are the parts' in order (never concatenated); masks[g]: per
  part, [R, 1, Q, S_part] the columns each query sees. write = (part, column): the keys and
  values of the Q new inputs go to that part at column..column+Q-1, the same for every row
  (a plain in-place update). The embeddings, dense layers and head run once on all groups'
  rows together (they are row-wise); attention runs per group. With keep[g] ([R]
  positions), the last layer computes only its keys and values for every position and goes
  on for each row's kept position alone (a prefill reads nothing else). Returns ([R, Q, V]
  logits per group, Q = 1 with keep; updated caches). The layout: attention.Cache.
  """
  net = model.GPT(dataclasses.replace(c, deterministic=True))
  layer_caches = tuple(attention.Cache(tuple(g[i] for g in caches), tuple(masks), write,
                                       tuple(keep) if keep is not None and i == c.n_layer - 1 else None)
                       for i in range(c.n_layer))
  positions = [jnp.minimum(p, c.block_size - 1) for p in positions]
  logits, layer_caches = net.apply({"params": params}, tuple(tokens), positions_BxT=positions,
                                   cache=layer_caches)
  return logits, tuple(tuple(layer.parts[g] for layer in layer_caches) for g in range(len(tokens)))


PHASE = 16  # generated keys/values: one cache part per 16 steps (see greedy_generate_scored)


@functools.partial(jax.jit, static_argnames=("model_cfg", "steps", "prefix_len", "phase"))
def decode_cached(params, prefix, suffixes, lens, *, model_cfg, steps, prefix_len, phase):
  """Greedy tokens [R, steps] and their float32 log-probs, per group, of vanilla GPT.

  Every prompt of the batch starts with `prefix` ([P] tokens, P = prefix_len): its keys and
  values are computed once and shared. Rows are in groups (sorted by length by the caller);
  group g's prompts continue with suffixes[g] ([R, W - P]; row r's prompt is its first
  lens[g][r] tokens, right-padded). A group's cache is in parts, read as one (never
  concatenated): the prefix (one part for all rows), its suffixes (W - P columns), then one
  part per `phase` steps for the generated tokens: step s writes its input (the
  token of step s - 1, at position lens + s - 1) at the same column of every row, and
  attends to the prompt and the phases so far, so short prompts and early steps do not read
  columns that hold nothing yet.
  """
  c = model_cfg
  dh = c.n_embd // c.n_head
  dtype = compute_dtype(c)  # the cache holds keys/values as the model computes them
  groups = range(len(suffixes))
  zeros = lambda r, s: jnp.zeros((r, c.n_head, s, dh), dtype)
  shared = [()] * c.n_layer  # per layer: the prefix's (k, v) part, [1, H, P, Dh], or nothing
  if prefix_len:  # the shared prefix, once; every row reads it (a batch-1 part, broadcast)
    _, pre = _cached_blocks(params, c, [prefix[None]], [(((zeros(1, prefix_len),) * 2,),) * c.n_layer],
                            [(attention.causal_mask(prefix_len)[None, None],)], (0, 0),
                            [jnp.arange(prefix_len)])
    shared = [(layer[0],) for layer in pre[0]]
  n_shared = len(shared[0])
  # prefill: each group's suffix ([R, W - P], positions P..W-1) into its own part, causal
  caches = [tuple(shared[i] + ((zeros(s.shape[0], s.shape[1]),) * 2,) for i in range(c.n_layer))
            for s in suffixes]
  masks = [(True,) * n_shared + (jnp.tril(jnp.ones((s.shape[1],) * 2, bool))[None, None],)
           for s in suffixes]
  logits, prompt = _cached_blocks(params, c, suffixes, caches, masks, (n_shared, 0),
                                  [prefix_len + jnp.arange(s.shape[1])[None] for s in suffixes],
                                  keep=[n - 1 - prefix_len for n in lens])  # the prompts' ends
  # [group][layer] = the prompt's parts; a step sees the prefix and each row's own suffix
  prompt_masks = [(True,) * n_shared + ((jnp.arange(s.shape[1]) < (n - prefix_len)[:, None])[:, None, None],)
                  for s, n in zip(suffixes, lens)]
  logits = [l[:, 0] for l in logits]
  toks = [jnp.argmax(l, axis=-1).astype(jnp.int32) for l in logits]
  outs = [jnp.zeros((t.shape[0], steps), jnp.int32).at[:, 0].set(t) for t in toks]
  lps = [jnp.zeros((t.shape[0], steps), jnp.float32).at[:, 0].set(loss.chosen_logprob(l, t))
         for l, t in zip(logits, toks)]
  done = [[] for _ in groups]  # [group][phase][layer] = (k, v) of finished phases

  def step(lo, s, carry):
    toks, current, outs, lps = carry
    col = s - lo  # the column of this phase's part that the input token goes to
    cur_mask = (jnp.arange(phase) <= col)[None, None, None]
    caches = [tuple(prompt[g][i] + tuple(ph[i] for ph in done[g]) + (current[g][i],)
                    for i in range(c.n_layer)) for g in groups]
    masks = [prompt_masks[g] + (True,) * len(done[g]) + (cur_mask,) for g in groups]
    write = (len(prompt_masks[0]) + len(done[0]), col)
    logits, caches = _cached_blocks(params, c, [t[:, None] for t in toks], caches, masks, write,
                                    [(n + s - 1)[:, None] for n in lens])
    current = [tuple(layer[-1] for layer in g) for g in caches]
    logits = [l[:, 0] for l in logits]
    toks = [jnp.argmax(l, axis=-1).astype(jnp.int32) for l in logits]
    outs = [jax.lax.dynamic_update_slice(o, t[:, None], (0, s)) for o, t in zip(outs, toks)]
    lps = [jax.lax.dynamic_update_slice(p, loss.chosen_logprob(l, t)[:, None], (0, s))
           for p, l, t in zip(lps, logits, toks)]
    return toks, current, outs, lps

  for lo in range(1, steps, phase):
    current = [tuple((zeros(s.shape[0], phase),) * 2 for _ in range(c.n_layer)) for s in suffixes]
    toks, current, outs, lps = jax.lax.fori_loop(lo, min(lo + phase, steps),
                                                 functools.partial(step, lo),
                                                 (toks, current, outs, lps))
    for g in groups:
      done[g].append(current[g])
  return outs, lps


def generate(params, model_cfg, prompts, rows, mesh, steps, groups):
  """[(ids, logprobs)] of each prompt through decode_cached: `rows` rows (the prompts, then
  copies of the shortest) sorted by length into `groups` equal groups, each group's prompt
  width its longest prompt (not rounded: each eval set compiles its own widths anyway, and
  on the A5 dev set rounding to 4 cost 2.7%), the batch's common prefix shared."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  order = [order[0]] * (rows - len(prompts)) + order  # padding rows first: shortest prompt
  if groups is None:  # default: up to 16 groups of at least 32 rows (compiles grow with groups)
    groups = min(16, rows // 32)
  groups = max(1, min(groups, rows // mesh.size))
  while rows % (groups * mesh.size):
    groups -= 1
  p = prefix_len = min(len(common_prefix(prompts)), min(len(x) for x in prompts) - 1)
  per = rows // groups
  suffixes, lens = [], []
  for g in range(groups):
    members = order[g * per:(g + 1) * per]
    width = max(len(prompts[i]) for i in members)
    buf = np.zeros((per, width - p), np.int32)
    for j, i in enumerate(members):
      buf[j, :len(prompts[i]) - p] = prompts[i][p:]
    suffixes.append(buf)
    lens.append(np.array([len(prompts[i]) for i in members], np.int32))
  arrays = sharding.put_batch({"suffixes": suffixes, "lens": lens}, mesh)
  prefix = jax.device_put(np.asarray(prompts[0][:p], np.int32), sharding.replicated(mesh))
  outs, lps = jax.device_get(decode_cached(params, prefix, arrays["suffixes"], arrays["lens"],
                                            model_cfg=model_cfg, steps=steps, prefix_len=prefix_len,
                                            phase=PHASE))
  got = [None] * len(prompts)
  for g in range(groups):
    for j, i in enumerate(order[g * per:(g + 1) * per]):
      got[i] = (np.asarray(outs[g][j]), np.asarray(lps[g][j]))
  return got


def common_prefix(prompts) -> np.ndarray:
  first = np.asarray(prompts[0])
  n = min(len(p) for p in prompts)
  for p in prompts[1:]:
    diff = np.nonzero(np.asarray(p[:n]) != first[:n])[0]
    n = int(diff[0]) if len(diff) else n
  return first[:n]

"""Greedy decoding of the vanilla GPT with a KV cache (birthjax.infer.decode's default path for
rows that need no crop), laid out for a CPU, where it is bound by reading the cache:

* the prompts' common prefix ("Where was ") runs once and is one cache part (batch 1) that
  every row reads (`attention.attend_parts` broadcasts it);
* rows are sorted by length into groups, each with a cache as wide as its own longest
  prompt; the dense layers still run on all rows at once;
* the generated tokens' keys/values go to one cache part per PHASE steps, written at the
  same column for every row (an in-place update), so a step reads only parts written.

A5 dev set (500 questions, 32 characters) on 2 CPU cores (the machine of README's Speed
table): 0.84-0.95 s, first call 11-14 s with the compile (one padded cache: 3.5 s on a slower CPU).
Tests: tests/decode_cache_test.py (tokens and log-probs against the reference loop).
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from birthjax.model import attention, layers, loss
from birthjax import sharding
from birthjax.model.layers import MLP, Dense, LayerNorm, ModelConfig, compute_dtype


def round_up(x: int, q: int) -> int:
  return -(-x // q) * q


def _dense(c: ModelConfig, p, x):
  return Dense(p["kernel"].shape[-1], None, use_bias="bias" in p,
               dtype=compute_dtype(c)).apply({"params": p}, x)


def _layer_norm(c: ModelConfig, p, x):
  return LayerNorm(None, compute_dtype(c)).apply({"params": p}, x)


def _cached_blocks(params, c: ModelConfig, xs, caches, writes, masks, keep=None):
  """model.GPT's blocks over groups of rows, each group with its own KV cache.

  xs[g]: [R, Q, D] new inputs of group g. caches[g][layer]: that layer's cache as parts
  ((k, v), ...), each [R, H, S_part, Dh], read as one cache whose columns are the parts'
  in order (never concatenated); masks[g]: per part, [R, 1, Q, S_part] the columns each
  query sees. writes[g] = (part, column): the keys/values of the Q new inputs go to that
  part at column..column+Q-1, the same for every row (a plain in-place update). The dense
  layers run once on all groups' rows together (they are row-wise); attention runs per
  group. Same parameters and layers as model.GPT, deterministic. Returns ([R, Q, D] per
  group, updated caches). With keep[g] ([R] positions), the last layer computes only its
  keys and values for every position and goes on for each row's kept position alone (a
  prefill reads nothing else): then the outputs are [R, 1, D].
  """
  shapes = [x.shape[:2] for x in xs]
  cuts = np.cumsum([r * q for r, q in shapes])[:-1].tolist()
  flat = jnp.concatenate([x.reshape(-1, c.n_embd) for x in xs])
  heads = lambda t, r, q: t.reshape(r, q, c.n_head, -1).transpose(0, 2, 1, 3)
  new = [list(g) for g in caches]
  for i in range(c.n_layer):
    pb = params[f"blocks_{i}"]
    h = _layer_norm(c, pb["ln1"], flat)
    k, v = (jnp.split(_dense(c, pb["attn"][n], h), cuts) for n in ("key", "value"))
    if keep is not None and i == c.n_layer - 1:  # queries (and all after) at the kept positions
      starts = [0] + cuts
      idx = jnp.concatenate([s0 + jnp.arange(r) * n + kp for s0, (r, n), kp in zip(starts, shapes, keep)])
      h, flat = h[idx], flat[idx]
      pick = lambda m, r, n, kp: m if m is True else jnp.take_along_axis(
          jnp.broadcast_to(m, (r, 1, n, m.shape[-1])), kp[:, None, None, None], axis=2)
      masks = [tuple(pick(m, r, n, kp) for m in ms) for ms, (r, n), kp in zip(masks, shapes, keep)]
      queries = [(r, 1) for r, _ in shapes]
    else:
      queries = shapes
    q = jnp.split(_dense(c, pb["attn"]["query"], h), np.cumsum([r * n for r, n in queries])[:-1].tolist())
    ys = []
    for g, ((r, n), (_, nq)) in enumerate(zip(shapes, queries)):
      parts = list(new[g][i])
      part, col = writes[g]
      parts[part] = tuple(jax.lax.dynamic_update_slice(buf, heads(t[g], r, n).astype(buf.dtype),
                                                       (0, 0, col, 0))
                          for buf, t in zip(parts[part], (k, v)))
      new[g][i] = tuple(parts)
      y = attention.attend_parts(heads(q[g], r, nq), [(kc, vc, m) for (kc, vc), m in zip(parts, masks[g])])
      ys.append(y.transpose(0, 2, 1, 3).reshape(r * nq, c.n_embd))
    flat = flat + _dense(c, pb["attn"]["proj"], jnp.concatenate(ys))
    flat = flat + MLP(c).apply({"params": pb["mlp"]}, _layer_norm(c, pb["ln2"], flat))
  cuts = np.cumsum([r * n for r, n in queries])[:-1].tolist()
  out = [f.reshape(r, n, c.n_embd) for f, (r, n) in zip(jnp.split(flat, cuts), queries)]
  return out, tuple(tuple(g) for g in new)


class _Embed(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, idx, pos):
    return layers.embed(self, self.cfg, idx, pos)


class _Head(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    return layers.head(self.cfg, x)


def _embed(params, c: ModelConfig, idx, pos):
  """layers.embed (no dropout) with the GPT's tok_emb and pos_emb, at positions `pos`."""
  p = {k: params[k] for k in ("tok_emb", "pos_emb")}
  return _Embed(dataclasses.replace(c, deterministic=True)).apply(
      {"params": p}, idx, jnp.minimum(pos, c.block_size - 1))


def _head(params, c: ModelConfig, x):
  """layers.head with the GPT's ln_f and head."""
  return _Head(c).apply({"params": {k: params[k] for k in ("ln_f", "head")}}, x)


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
    x = _embed(params, c, prefix[None], jnp.arange(prefix_len))
    _, pre = _cached_blocks(params, c, [x], [(((zeros(1, prefix_len),) * 2,),) * c.n_layer],
                            [(0, 0)], [(attention.causal_mask(prefix_len)[None, None],)])
    shared = [(layer[0],) for layer in pre[0]]
  n_shared = len(shared[0])
  # prefill: each group's suffix ([R, W - P], positions P..W-1) into its own part, causal
  xs = [_embed(params, c, s, prefix_len + jnp.arange(s.shape[1])[None]) for s in suffixes]
  caches = [tuple(shared[i] + ((zeros(s.shape[0], s.shape[1]),) * 2,) for i in range(c.n_layer))
            for s in suffixes]
  masks = [(True,) * n_shared + (jnp.tril(jnp.ones((s.shape[1],) * 2, bool))[None, None],)
           for s in suffixes]
  last, prompt = _cached_blocks(params, c, xs, caches, [(n_shared, 0)] * len(xs), masks,
                               keep=[n - 1 - prefix_len for n in lens])  # [R, 1, D]: the prompts' ends
  # [group][layer] = the prompt's parts; a step sees the prefix and each row's own suffix
  prompt_masks = [(True,) * n_shared + ((jnp.arange(s.shape[1]) < (n - prefix_len)[:, None])[:, None, None],)
                  for s, n in zip(suffixes, lens)]
  logits = [_head(params, c, h)[:, 0] for h in last]
  toks = [jnp.argmax(l, axis=-1).astype(jnp.int32) for l in logits]
  outs = [jnp.zeros((t.shape[0], steps), jnp.int32).at[:, 0].set(t) for t in toks]
  lps = [jnp.zeros((t.shape[0], steps), jnp.float32).at[:, 0].set(loss.chosen_logprob(l, t))
         for l, t in zip(logits, toks)]
  done = [[] for _ in groups]  # [group][phase][layer] = (k, v) of finished phases

  def step(lo, s, carry):
    toks, current, outs, lps = carry
    col = s - lo  # the column of this phase's part that the input token goes to
    xs = [_embed(params, c, t[:, None], (n + s - 1)[:, None]) for t, n in zip(toks, lens)]
    cur_mask = (jnp.arange(phase) <= col)[None, None, None]
    caches = [tuple(prompt[g][i] + tuple(ph[i] for ph in done[g]) + (current[g][i],)
                    for i in range(c.n_layer)) for g in groups]
    masks = [prompt_masks[g] + (True,) * len(done[g]) + (cur_mask,) for g in groups]
    write = (len(prompt_masks[0]) + len(done[0]), col)
    hs, caches = _cached_blocks(params, c, xs, caches, [write] * len(xs), masks)
    current = [tuple(layer[-1] for layer in g) for g in caches]
    logits = [_head(params, c, h)[:, 0] for h in hs]
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

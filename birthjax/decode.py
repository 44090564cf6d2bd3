"""Batched greedy decoding, exactly the reference's `sample(..., sample=False)`.

The reference, per prompt: crop the sequence to its last block_size tokens, run the model,
append the argmax at the last position, `steps` times. The prediction is the text between
the first and second MASK of the completion (to its end without a second MASK); the
prompt ends with the first.

Two batched paths give the reference's tokens (rows are independent; the batch is
sharded on the mesh's 'data' axis; each whole decode is one jitted call):

* Full recompute (every variant): each prompt is left-aligned in a buffer and every step
  runs the model on each row's last `w` tokens (positions restarting at 0, as the
  reference's crop) and appends the argmax at the row's last position. With `w =
  block_size` always (`bucket=False`) this is the original loop. Every variant's output
  at position p depends only on inputs 0..p (vanilla and Perceiver-AR by their masks; the
  A5 Perceiver because latent i sees inputs 0..i, the latent blocks are causal and
  position p sees latents 0..p; Perceiver-AR's latent window, anchored at the row's end,
  starts at max(end - m, 0) for any width >= end), so any window that still holds all of
  a row's tokens gives the same logits. With `bucket=True` prompts are sorted by length
  and batched, and each step uses the smallest width (a multiple of block_size / 8) that
  holds the longest row of its batch, block_size once a row must be cropped.
* KV cache (vanilla, the default there): the prompts are run once (prefill, causal: the
  padding after a row's end changes nothing before it), each layer keeps the keys and
  values of every position, and each further step runs only the newest token of each row
  at its own position, attending to its cached positions. Positions are absolute, so this
  cannot follow the reference's crop: only rows that never need it (prompt_len + steps - 1
  <= block_size) take this path, the others the full recompute. On a CPU this path is
  bound by reading the caches, so (`_decode_cached`) the prompts' common prefix ("Where
  was ") is computed once; rows are sorted by length into `groups` groups, each with a
  cache as wide as its own longest prompt; and the generated tokens' keys go to one cache
  part per 8 steps, written at the same column for every row, so a step reads only parts
  already written. The dense layers still run on all rows at once.

Both paths compute the reference's logits up to float rounding (sums over different
lengths or in another order), so greedy tokens agree except at exact near-ties.

Both also return the float32 log-softmax of each chosen token (`greedy_generate_scored`),
so the confidence of an answer, the probability of the greedy answer string (its tokens
and the MASK that closes it), costs no second pass (`predict_with_confidence`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from birthjax import attention, examples, model, sharding
from birthjax.layers import MLP, Dense, LayerNorm, ModelConfig
from birthjax.vocab import MASK, Vocab


def _chosen_logprob(logits_BxV, tok_B):
  """float32 log-softmax of each row's chosen token (the argmax is taken on the raw logits)."""
  lp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(lp_BxV, tok_B[:, None].astype(jnp.int32), axis=1)[:, 0]


# ----------------------------------------------------------------------------- full recompute
@functools.partial(jax.jit, static_argnames=("model_cfg", "phases"))
def _decode_full(params, buf_BxW, len_B, *, model_cfg, phases):
  """`phases`: ((width, n_steps), ...): n_steps steps on windows of `width` tokens each.
  Returns (buffer with the tokens appended, float32 log-probability of each appended token at
  its position)."""
  net = model.build(model_cfg)

  def step(w, _, carry):
    buf, lp, lens = carry
    start = jnp.maximum(lens - w, 0)
    window = jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (w,)))(buf, start)
    logits = net.apply({"params": params}, window, lens - start)  # end: Perceiver-AR's window
    last = jnp.take_along_axis(logits, (lens - 1 - start)[:, None, None], axis=1)[:, 0]
    nxt = jnp.argmax(last, axis=-1).astype(buf.dtype)
    set_at = jax.vmap(lambda row, i, v: row.at[i].set(v))
    return set_at(buf, lens, nxt), set_at(lp, lens, _chosen_logprob(last, nxt)), lens + 1

  carry = (buf_BxW, jnp.zeros(buf_BxW.shape, jnp.float32), len_B)
  for w, n in phases:
    carry = jax.lax.fori_loop(0, n, functools.partial(step, w), carry)
  return carry[0], carry[1]


def _phases(max_len: int, steps: int, block_size: int, quantum: int):
  """Window widths per step: the longest row's length rounded up to `quantum`, at most
  block_size (rows longer are cropped to it), grouped into runs of equal width."""
  first = min(_round_up(max_len, quantum), block_size)  # rounded: fewer distinct compiles
  phases = []
  for s in range(steps):
    w = min(_round_up(first + s, quantum), block_size)
    if phases and phases[-1][0] == w:
      phases[-1][1] += 1
    else:
      phases.append([w, 1])
  return tuple((w, n) for w, n in phases)


# ----------------------------------------------------------------------------- KV cache
def _dense(p, x):
  return Dense(p["kernel"].shape[-1], None, use_bias="bias" in p).apply({"params": p}, x)


def _layer_norm(p, x):
  return LayerNorm(None).apply({"params": p}, x)


def _cached_blocks(params, c: ModelConfig, xs, caches, writes, masks):
  """model.GPT's blocks over groups of rows, each group with its own KV cache.

  xs[g]: [R, Q, D] new inputs of group g. caches[g][layer]: that layer's cache as parts
  ((k, v), ...), each [R, H, S_part, Dh], read as one cache whose columns are the parts'
  in order (never concatenated); masks[g]: per part, [R, 1, Q, S_part] the columns each
  query sees. writes[g] = (part, column): the keys/values of the Q new inputs go to that
  part at column..column+Q-1, the same for every row (a plain in-place update). The dense
  layers run once on all groups' rows together (they are row-wise); attention runs per
  group. Same parameters and layers as model.GPT, deterministic. Returns ([R, Q, D] per
  group, updated caches).
  """
  shapes = [x.shape[:2] for x in xs]
  cuts = np.cumsum([r * q for r, q in shapes])[:-1].tolist()
  flat = jnp.concatenate([x.reshape(-1, c.n_embd) for x in xs])
  heads = lambda t, r, q: t.reshape(r, q, c.n_head, -1).transpose(0, 2, 1, 3)
  new = [list(g) for g in caches]
  for i in range(c.n_layer):
    pb = params[f"blocks_{i}"]
    h = _layer_norm(pb["ln1"], flat)
    q, k, v = (jnp.split(_dense(pb["attn"][n], h), cuts) for n in ("query", "key", "value"))
    ys = []
    for g, (r, n) in enumerate(shapes):
      parts = list(new[g][i])
      part, col = writes[g]
      parts[part] = tuple(jax.lax.dynamic_update_slice(buf, heads(t[g], r, n).astype(buf.dtype),
                                                       (0, 0, col, 0))
                          for buf, t in zip(parts[part], (k, v)))
      new[g][i] = tuple(parts)
      y = attention.attend_parts(heads(q[g], r, n), [(kc, vc, m) for (kc, vc), m in zip(parts, masks[g])])
      ys.append(y.transpose(0, 2, 1, 3).reshape(r * n, c.n_embd))
    flat = flat + _dense(pb["attn"]["proj"], jnp.concatenate(ys))
    flat = flat + MLP(c).apply({"params": pb["mlp"]}, _layer_norm(pb["ln2"], flat))
  out = [f.reshape(r, n, c.n_embd) for f, (r, n) in zip(jnp.split(flat, cuts), shapes)]
  return out, tuple(tuple(g) for g in new)


def _embed(params, c: ModelConfig, idx, pos):
  """model.embed without dropout: token + learned position embeddings."""
  return params["tok_emb"]["embedding"][idx] + params["pos_emb"][0][jnp.minimum(pos, c.block_size - 1)]


def _head(params, x):
  return _dense(params["head"], _layer_norm(params["ln_f"], x))


_PHASE = 8  # generated keys/values: one cache part per 8 steps


@functools.partial(jax.jit, static_argnames=("model_cfg", "steps", "prefix_len"))
def _decode_cached(params, prefix, suffixes, lens, *, model_cfg, steps, prefix_len):
  """Greedy tokens [R, steps] and their float32 log-probs, per group, of vanilla GPT.

  Every prompt of the batch starts with `prefix` ([P] tokens, P = prefix_len): its keys and
  values are computed once and shared. Rows are in groups (sorted by length by the caller);
  group g's prompts continue with suffixes[g] ([R, W - P]; row r's prompt is its first
  lens[g][r] tokens, right-padded). A group's cache is in parts, read as one (never
  concatenated): the prefix (one part for all rows), its suffixes (W - P columns), then one
  part per phase of _PHASE steps for the generated tokens: step s writes its input (the
  token of step s - 1, at position lens + s - 1) at the same column of every row, and
  attends to the prompt and the phases so far, so short prompts and early steps do not read
  columns that hold nothing yet.
  """
  c = model_cfg
  dh = c.n_embd // c.n_head
  dtype = params["blocks_0"]["attn"]["key"]["kernel"].dtype
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
  hs, prompt = _cached_blocks(params, c, xs, caches, [(n_shared, 0)] * len(xs), masks)
  # [group][layer] = the prompt's parts; a step sees the prefix and each row's own suffix
  prompt_masks = [(True,) * n_shared + ((jnp.arange(s.shape[1]) < (n - prefix_len)[:, None])[:, None, None],)
                  for s, n in zip(suffixes, lens)]
  last = [jnp.take_along_axis(h, (n - 1 - prefix_len)[:, None, None], axis=1) for h, n in zip(hs, lens)]
  logits = [_head(params, h)[:, 0] for h in last]
  toks = [jnp.argmax(l, axis=-1).astype(jnp.int32) for l in logits]
  outs = [jnp.zeros((t.shape[0], steps), jnp.int32).at[:, 0].set(t) for t in toks]
  lps = [jnp.zeros((t.shape[0], steps), jnp.float32).at[:, 0].set(_chosen_logprob(l, t))
         for l, t in zip(logits, toks)]
  done = [[] for _ in groups]  # [group][phase][layer] = (k, v) of finished phases

  def step(lo, s, carry):
    toks, current, outs, lps = carry
    col = s - lo  # the column of this phase's part that the input token goes to
    xs = [_embed(params, c, t[:, None], (n + s - 1)[:, None]) for t, n in zip(toks, lens)]
    cur_mask = (jnp.arange(_PHASE) <= col)[None, None, None]
    caches = [tuple(prompt[g][i] + tuple(ph[i] for ph in done[g]) + (current[g][i],)
                    for i in range(c.n_layer)) for g in groups]
    masks = [prompt_masks[g] + (True,) * len(done[g]) + (cur_mask,) for g in groups]
    write = (len(prompt_masks[0]) + len(done[0]), col)
    hs, caches = _cached_blocks(params, c, xs, caches, [write] * len(xs), masks)
    current = [tuple(layer[-1] for layer in g) for g in caches]
    logits = [_head(params, h)[:, 0] for h in hs]
    toks = [jnp.argmax(l, axis=-1).astype(jnp.int32) for l in logits]
    outs = [jax.lax.dynamic_update_slice(o, t[:, None], (0, s)) for o, t in zip(outs, toks)]
    lps = [jax.lax.dynamic_update_slice(p, _chosen_logprob(l, t)[:, None], (0, s))
           for p, l, t in zip(lps, logits, toks)]
    return toks, current, outs, lps

  for lo in range(1, steps, _PHASE):
    current = [tuple((zeros(s.shape[0], _PHASE),) * 2 for _ in range(c.n_layer)) for s in suffixes]
    toks, current, outs, lps = jax.lax.fori_loop(lo, min(lo + _PHASE, steps),
                                                 functools.partial(step, lo),
                                                 (toks, current, outs, lps))
    for g in groups:
      done[g].append(current[g])
  return outs, lps


# ----------------------------------------------------------------------------- host side
def _round_up(x: int, q: int) -> int:
  return -(-x // q) * q


def _rows(n: int, batch_size: int, multiple: int) -> int:
  """Rows of a bucketed batch holding n prompts: multiple * a power of two (few shapes)."""
  per_device = -(-n // multiple)
  return min(batch_size, multiple * (1 << (per_device - 1).bit_length()))


def _generate_cached(params, model_cfg, prompts, rows, mesh, steps, groups):
  """[(ids, logprobs)] of each prompt through _decode_cached: `rows` rows (the prompts, then
  copies of the shortest) sorted by length into `groups` equal groups, each group's prompt
  width its longest prompt rounded up to block_size / 32, the batch's common prefix shared."""
  quantum = max(1, model_cfg.block_size // 32)
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  order = [order[0]] * (rows - len(prompts)) + order  # padding rows first: shortest prompt
  if groups is None:  # default: up to 16 groups of at least 32 rows (compiles grow with groups)
    groups = min(16, rows // 32)
  groups = max(1, min(groups, rows // mesh.size))
  while rows % (groups * mesh.size):
    groups -= 1
  p = prefix_len = min(len(_common_prefix(prompts)), min(len(x) for x in prompts) - 1)
  per = rows // groups
  suffixes, lens = [], []
  for g in range(groups):
    members = order[g * per:(g + 1) * per]
    width = _round_up(max(len(prompts[i]) for i in members), quantum)
    buf = np.zeros((per, width - p), np.int32)
    for j, i in enumerate(members):
      buf[j, :len(prompts[i]) - p] = prompts[i][p:]
    suffixes.append(buf)
    lens.append(np.array([len(prompts[i]) for i in members], np.int32))
  arrays = sharding.put_batch({"suffixes": suffixes, "lens": lens}, mesh)
  prefix = jax.device_put(np.asarray(prompts[0][:p], np.int32), sharding.replicated(mesh))
  outs, lps = jax.device_get(_decode_cached(params, prefix, arrays["suffixes"], arrays["lens"],
                                            model_cfg=model_cfg, steps=steps, prefix_len=prefix_len))
  got = [None] * len(prompts)
  for g in range(groups):
    for j, i in enumerate(order[g * per:(g + 1) * per]):
      got[i] = (np.asarray(outs[g][j]), np.asarray(lps[g][j]))
  return got


def _common_prefix(prompts) -> np.ndarray:
  first = np.asarray(prompts[0])
  n = min(len(p) for p in prompts)
  for p in prompts[1:]:
    diff = np.nonzero(np.asarray(p[:n]) != first[:n])[0]
    n = int(diff[0]) if len(diff) else n
  return first[:n]


def greedy_generate(params, model_cfg, prompts, **kwargs) -> list[np.ndarray]:
  """The `steps` greedy continuation ids of each prompt (a list of int arrays).

  Keywords (steps=32, batch_size=512, mesh, use_cache, bucket, groups) as greedy_generate_scored.
  """
  return greedy_generate_scored(params, model_cfg, prompts, **kwargs)[0]


def greedy_generate_scored(params, model_cfg, prompts, *, steps: int = 32,
                           batch_size: int = 512, mesh=None, use_cache: bool | None = None,
                           bucket: bool = True, groups: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """(ids, logprobs): the `steps` greedy continuation ids of each prompt (int arrays) and
  the float32 log-probability the model gave each of those tokens (float arrays).

  use_cache: KV-cache decoding (vanilla only; default: on for vanilla) of the rows that
    need no crop. bucket: sort prompts by length, size batches and windows/caches to
    them. use_cache=False, bucket=False is the original full-recompute loop.
    groups: length groups of a KV-cache batch (more: less cache read, longer compiles).
    Default: up to 16 groups of >= 32 rows (the A5 dev set, 512 rows, on 2 cores: 16 groups
    decode in ~1.55 s and compile in ~25 s; 8 groups ~1.7 s and ~14 s).
  """
  if use_cache is None:
    use_cache = model_cfg.variant == "vanilla"
  if use_cache and model_cfg.variant != "vanilla":
    raise ValueError(f"the KV cache is for the vanilla GPT, not {model_cfg.variant!r}")
  prompts = [np.asarray(p) for p in prompts]
  if any(len(p) == 0 for p in prompts):
    raise ValueError("empty prompt")
  if not prompts or steps == 0:
    return [np.zeros(0, np.int32) for _ in prompts], [np.zeros(0, np.float32) for _ in prompts]
  mesh = mesh or sharding.make_mesh()
  params = jax.device_put(params, sharding.replicated(mesh))
  multiple = mesh.size
  batch_size = -(-min(batch_size, len(prompts)) // multiple) * multiple
  t = model_cfg.block_size
  quantum = max(1, t // 8) if bucket else t  # quantum t: always block_size wide
  order = list(range(len(prompts)))
  if bucket:
    order.sort(key=lambda i: len(prompts[i]))
  fits = [use_cache and len(prompts[i]) + steps - 1 <= t for i in order]
  out, logp = [None] * len(prompts), [None] * len(prompts)
  for cached in (True, False):
    rows = [i for i, f in zip(order, fits) if f == cached]
    for lo in range(0, len(rows), batch_size):
      chunk = rows[lo:lo + batch_size]
      b = _rows(len(chunk), batch_size, multiple) if bucket else batch_size
      if cached:
        got = _generate_cached(params, model_cfg, [prompts[i] for i in chunk], b, mesh, steps,
                               groups if bucket else 1)
        for i, (res, lp) in zip(chunk, got):
          out[i], logp[i] = res, lp
        continue
      max_len = max(len(prompts[i]) for i in chunk)
      width = _round_up(max(t, max_len) + steps, 64)  # few distinct shapes, few compiles
      buf = np.zeros((b, width), np.int32)
      lens = np.ones(b, np.int32)  # padding rows: a 1-token dummy prompt
      for j, i in enumerate(chunk):
        buf[j, :len(prompts[i])], lens[j] = prompts[i], len(prompts[i])
      arrays = sharding.put_batch({"buf": buf, "lens": lens}, mesh)
      res = _decode_full(params, arrays["buf"], arrays["lens"], model_cfg=model_cfg,
                         phases=_phases(max_len, steps, t, quantum))
      res, lp = (np.asarray(a) for a in jax.device_get(res))
      for j, i in enumerate(chunk):
        new = slice(len(prompts[i]), len(prompts[i]) + steps)
        out[i], logp[i] = res[j, new], lp[j, new]
  return out, logp


def answer_from_generated(generated) -> list[int]:
  """Ids up to the first MASK of the continuation (i.e. between the completion's 1st and 2nd MASK)."""
  generated = list(generated)
  return generated[:generated.index(MASK)] if MASK in generated else generated


def answer_confidence(generated, logprobs) -> float:
  """Probability of the greedy answer string: the product of the probabilities of its
  tokens and of the MASK that closes it (of every generated token when none closes it)."""
  generated = list(generated)
  n = generated.index(MASK) + 1 if MASK in generated else len(generated)
  return float(np.exp(np.sum(np.asarray(logprobs[:n], np.float64))))


def predict(params, model_cfg, vocab: Vocab, questions, **kwargs) -> list[str]:
  """The greedy answer to each question. Keywords as greedy_generate_scored."""
  return predict_with_confidence(params, model_cfg, vocab, questions, **kwargs)[0]


def predict_with_confidence(params, model_cfg, vocab: Vocab, questions, *, steps: int = 32,
                            batch_size: int = 512, mesh=None, use_cache: bool | None = None,
                            bucket: bool = True, groups: int | None = None
                            ) -> tuple[list[str], list[float]]:
  """(answers, confidences): each question's greedy answer and its answer_confidence."""
  prompts = [examples.prompt(vocab.encode(q)) for q in questions]
  gen, logp = greedy_generate_scored(params, model_cfg, prompts, steps=steps,
                                     batch_size=batch_size, mesh=mesh, use_cache=use_cache,
                                     bucket=bucket, groups=groups)
  return ([vocab.decode(answer_from_generated(g)) for g in gen],
          [answer_confidence(g, lp) for g, lp in zip(gen, logp)])

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
  <= block_size) take this path, the others the full recompute. It runs model.GPT's own
  Blocks (called with a cache, see layers.Attention); its layout (a shared prefix, length
  groups, a cache in parts) is `birthjax.infer.kv_cache`'s.

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

from birthjax.data import examples
from birthjax.data import recite as recite_lib
from birthjax.infer import kv_cache
from birthjax.model import loss, model
from birthjax import sharding
from birthjax.data.vocab import MASK, Vocab


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
    return set_at(buf, lens, nxt), set_at(lp, lens, loss.chosen_logprob(last, nxt)), lens + 1

  carry = (buf_BxW, jnp.zeros(buf_BxW.shape, jnp.float32), len_B)
  for w, n in phases:
    carry = jax.lax.fori_loop(0, n, functools.partial(step, w), carry)
  return carry[0], carry[1]


def _phases(max_len: int, steps: int, block_size: int, quantum: int):
  """Window widths per step: the longest row's length rounded up to `quantum`, at most
  block_size (rows longer are cropped to it), grouped into runs of equal width."""
  first = min(kv_cache.round_up(max_len, quantum), block_size)  # rounded: fewer distinct compiles
  phases = []
  for s in range(steps):
    w = min(kv_cache.round_up(first + s, quantum), block_size)
    if phases and phases[-1][0] == w:
      phases[-1][1] += 1
    else:
      phases.append([w, 1])
  return tuple((w, n) for w, n in phases)


# ----------------------------------------------------------------------------- host side
def _rows(n: int, batch_size: int, multiple: int) -> int:
  """Rows of a bucketed batch holding n prompts: multiple * a power of two (few shapes)."""
  per_device = -(-n // multiple)
  return min(batch_size, multiple * (1 << (per_device - 1).bit_length()))


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
    Default: up to 16 groups of >= 32 rows, with one cache part per kv_cache.PHASE = 16
    generated tokens. The A5 dev set (512 rows) on 2 CPU cores, run / first call with the
    compile (what an evaluation costs), by groups and steps a part: 8 and 8: 0.98 / 10.6 s;
    16 and 8: 0.92 / 18.6 s; 16 and 16: 0.94 / 10.2 s; 8 and 16: 1.05 / 6.3 s; 8 and 32:
    1.07 / 4.5 s; 32 and 8: 0.99 / 47 s.
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
        got = kv_cache.generate(params, model_cfg, [prompts[i] for i in chunk], b, mesh, steps,
                                groups if bucket else 1)
        for i, (res, lp) in zip(chunk, got):
          out[i], logp[i] = res, lp
        continue
      max_len = max(len(prompts[i]) for i in chunk)
      width = kv_cache.round_up(max(t, max_len) + steps, 64)  # few distinct shapes, few compiles
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


def recited_answer(vocab: Vocab, generated, logprobs) -> tuple[str, float]:
  """With data.recite: (the last word of the recitation before the first MASK, the
  probability of that word's tokens and of the MASK); ("", 0.0) without a MASK."""
  generated = list(generated)
  if MASK not in generated:
    return "", 0.0
  m = generated.index(MASK)
  text = vocab.decode(generated[:m])
  answer = recite_lib.answer_of(text)
  if not answer:
    return "", 0.0
  start = text.rstrip().rindex(answer)  # one id per character
  return answer, float(np.exp(np.sum(np.asarray(logprobs[start:m + 1], np.float64))))


def predict(params, model_cfg, vocab: Vocab, questions, **kwargs) -> list[str]:
  """The greedy answer to each question. Keywords as predict_with_confidence."""
  return predict_with_confidence(params, model_cfg, vocab, questions, **kwargs)[0]


def predict_with_confidence(params, model_cfg, vocab: Vocab, questions, *, steps: int = 32,
                            batch_size: int = 512, mesh=None, use_cache: bool | None = None,
                            bucket: bool = True, groups: int | None = None, recite: str = ""
                            ) -> tuple[list[str], list[float]]:
  """(answers, confidences): each question's greedy answer and its answer_confidence.

  recite (recite_lib.mode(data config): '', 'question' or 'title'; birthjax/data/recite.py):
  the prompt ends with the person's title, the model recites to the end of the block (at
  least `steps`) and answers the last word before the first MASK it writes (recited_answer).
  """
  if recite:  # question MASK NAME. (or NAME. alone), then to the end of the block
    prompts = [vocab.encode(recite_lib.prompt(q, recite)) for q in questions]
    steps = max(steps, model_cfg.block_size - max(map(len, prompts), default=0))
  else:
    prompts = [examples.prompt(vocab.encode(q)) for q in questions]
  gen, logp = greedy_generate_scored(params, model_cfg, prompts, steps=steps,
                                     batch_size=batch_size, mesh=mesh, use_cache=use_cache,
                                     bucket=bucket, groups=groups)
  if recite:
    parts = [recited_answer(vocab, g, lp) for g, lp in zip(gen, logp)]
    return [a for a, _ in parts], [c for _, c in parts]
  return ([vocab.decode(answer_from_generated(g)) for g in gen],
          [answer_confidence(g, lp) for g, lp in zip(gen, logp)])

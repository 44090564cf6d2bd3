"""Batched greedy decoding with full recompute, exactly the reference's `sample(..., sample=False)`.

Every row of a batch is a prompt left-aligned in a buffer; each step runs the model on
each row's last block_size tokens (the reference's crop), takes the argmax at the row's
last position and appends it. The prediction is the text between the first and second
MASK of the completion (to its end without a second MASK); the prompt ends with the first.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from birthjax import examples, model, sharding
from birthjax.vocab import MASK, Vocab


@functools.partial(jax.jit, static_argnames=("model_cfg", "steps"))
def _decode_batch(params, buf_BxW, len_B, *, model_cfg, steps):
  net = model.build(model_cfg)
  t = model_cfg.block_size

  def step(_, carry):
    buf, lens = carry
    start = jnp.maximum(lens - t, 0)
    window = jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (t,)))(buf, start)
    logits = net.apply({"params": params}, window, lens - start)  # end: Perceiver-AR's window
    last = jnp.take_along_axis(logits, (lens - 1 - start)[:, None, None], axis=1)[:, 0]
    nxt = jnp.argmax(last, axis=-1).astype(buf.dtype)
    buf = jax.vmap(lambda row, i, v: row.at[i].set(v))(buf, lens, nxt)
    return buf, lens + 1

  buf, _ = jax.lax.fori_loop(0, steps, step, (buf_BxW, len_B))
  return buf


def greedy_generate(params, model_cfg, prompts, *, steps: int = 32, batch_size: int = 512,
                    mesh=None) -> list[np.ndarray]:
  """The `steps` greedy continuation ids of each prompt (a list of int arrays)."""
  mesh = mesh or sharding.make_mesh()
  params = jax.device_put(params, sharding.replicated(mesh))
  multiple = mesh.size
  batch_size = -(-min(batch_size, len(prompts)) // multiple) * multiple
  width = max(model_cfg.block_size, max(len(p) for p in prompts)) + steps
  width = -(-width // 64) * 64  # few distinct shapes, few compiles
  out = []
  for lo in range(0, len(prompts), batch_size):
    chunk = prompts[lo:lo + batch_size]
    buf = np.zeros((batch_size, width), np.int32)
    lens = np.ones(batch_size, np.int32)  # padding rows: a 1-token dummy prompt
    for i, p in enumerate(chunk):
      buf[i, :len(p)], lens[i] = p, len(p)
    arrays = sharding.put_batch({"buf": buf, "lens": lens}, mesh)
    res = np.asarray(jax.device_get(_decode_batch(params, arrays["buf"], arrays["lens"],
                                                  model_cfg=model_cfg, steps=steps)))
    out += [res[i, len(p):len(p) + steps] for i, p in enumerate(chunk)]
  return out


def answer_from_generated(generated) -> list[int]:
  """Ids up to the first MASK of the continuation (i.e. between the completion's 1st and 2nd MASK)."""
  generated = list(generated)
  return generated[:generated.index(MASK)] if MASK in generated else generated


def predict(params, model_cfg, vocab: Vocab, questions, *, steps: int = 32,
            batch_size: int = 512, mesh=None) -> list[str]:
  prompts = [examples.prompt(vocab.encode(q)) for q in questions]
  gen = greedy_generate(params, model_cfg, prompts, steps=steps, batch_size=batch_size, mesh=mesh)
  return [vocab.decode(answer_from_generated(g)) for g in gen]

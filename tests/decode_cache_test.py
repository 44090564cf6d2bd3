"""Tests for the fast decoding paths of birthjax.decode: the vanilla KV cache and the
length-bucketed full recompute, against the original loop and the reference's per-prompt
sample() loop, on tiny random models with large weights (varied, tie-free greedy tokens)."""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax import decode, examples, model
from birthjax.layers import Attention
from birthjax.vocab import MASK, Vocab
from tests.params_util import random_params

VOCAB = Vocab.from_documents(["Where was Ada Lovelace born?", "London, Paris; Zurich.",
                              "Kim Moe qx jv"])
CFG = model.ModelConfig(vocab_size=len(VOCAB), n_layer=2, n_head=2, n_embd=32, block_size=16,
                        bottleneck_dim=8)
T = CFG.block_size
STEPS = 12  # rows of length <= T - STEPS + 1 = 5 take the cache, longer ones need the crop
BATCH = 8   # on 4 devices: several sorted buckets, the last ones padded


def _prompts():
  rng = np.random.default_rng(1)
  lengths = list(range(1, 22)) + [3, 5]  # 23 prompts: not a multiple of the 4 devices
  return [rng.integers(2, CFG.vocab_size, n).astype(np.int32) for n in lengths]


PROMPTS = _prompts()


def _random_params(cfg, scale=0.5, seed=0):
  return random_params(cfg, scale, seed)


def _reference(cfg, params, prompts, steps=STEPS):
  """utils.sample(model, x, steps, sample=False), one unpadded prompt at a time:
  crop to the last block_size tokens, argmax at the last position, append."""
  net = model.build(cfg)
  apply = jax.jit(lambda p, x: net.apply({"params": p}, x)[0, -1])
  outs, gaps = [], []
  for prompt in prompts:
    x = list(prompt)
    for _ in range(steps):
      last = np.asarray(apply(params, jnp.asarray(x[-cfg.block_size:], jnp.int32)[None]))
      top2 = np.sort(last)[-2:]
      gaps.append(top2[1] - top2[0])
      x.append(int(np.argmax(last)))
    outs.append(np.asarray(x[len(prompt):]))
  return outs, min(gaps)


def _assert_same(got, want, what):
  assert len(got) == len(want)
  for prompt, g, w in zip(PROMPTS, got, want):
    assert g.shape == (STEPS,) and np.issubdtype(g.dtype, np.integer)
    np.testing.assert_array_equal(g, w, err_msg=f"{what}: prompt of length {len(prompt)}")


def _assert_varied(outs):
  assert len({tuple(o.tolist()) for o in outs}) >= len(outs) - 2
  assert sum(len(set(o.tolist())) > 2 for o in outs) >= len(outs) // 2


def test_prompt_lengths_cover_both_paths():
  lens = {len(p) for p in PROMPTS}
  assert T - STEPS + 1 in lens          # the longest prompt that takes the cache
  assert T - STEPS + 2 in lens          # the shortest one that needs the crop at its last step
  assert max(lens) > T and 1 in lens    # cropped from the first step; a 1-token prompt
  assert len(PROMPTS) % jax.device_count() != 0


# ----------------------------------------------------------------------------- vanilla
@pytest.fixture(scope="module")
def vanilla():
  params = _random_params(CFG)
  want, gap = _reference(CFG, params, PROMPTS)
  assert gap > 1e-4, "near-tie: pick another seed"
  _assert_varied(want)
  return params, want


@pytest.mark.parametrize("use_cache, bucket, batch_size", [
    (None, True, BATCH),     # the default: cache for the rows that fit, bucketed recompute for the rest
    (True, True, 512),       # everything in one batch per path
    (True, False, BATCH),    # cache of block_size positions, unsorted batches
    (False, True, BATCH),    # bucketed full recompute only
    (False, False, BATCH),   # the original loop
])
def test_vanilla_matches_reference(vanilla, use_cache, bucket, batch_size):
  params, want = vanilla
  got = decode.greedy_generate(params, CFG, PROMPTS, steps=STEPS, batch_size=batch_size,
                               use_cache=use_cache, bucket=bucket)
  _assert_same(got, want, f"use_cache={use_cache} bucket={bucket} batch_size={batch_size}")


def test_vanilla_all_rows_cached(vanilla):
  """Only short prompts (no fallback batch at all), a batch of 3 rows on 4 devices."""
  params, want = vanilla
  short = [i for i, p in enumerate(PROMPTS) if len(p) + STEPS - 1 <= T][:3]
  got = decode.greedy_generate(params, CFG, [PROMPTS[i] for i in short], steps=STEPS)
  for i, g in zip(short, got):
    np.testing.assert_array_equal(g, want[i])


def test_cached_model_logits_match_full_forward():
  """Prefill of a padded batch then one token at a time, at row-specific positions: every
  step's logits equal model.apply's on the whole sequence (up to float rounding)."""
  params = _random_params(CFG, seed=3)
  rng = np.random.default_rng(4)
  seq = rng.integers(0, CFG.vocab_size, (4, T)).astype(np.int32)
  lens = np.array([1, 4, 7, 10], np.int32)
  prefill_width, cache_len = 10, T
  full = np.asarray(model.build(CFG).apply({"params": params}, jnp.asarray(seq)))
  apply = jax.jit(lambda *a, **kw: decode._CachedGPT(CFG).apply({"params": params}, *a, **kw))
  zeros = jnp.zeros((4, CFG.n_head, cache_len, CFG.n_embd // CFG.n_head))
  caches = tuple((zeros, zeros) for _ in range(CFG.n_layer))
  buf = np.where(np.arange(prefill_width) < lens[:, None], seq[:, :prefill_width], 0)  # padded
  logits, caches = apply(jnp.asarray(buf), jnp.zeros(4, jnp.int32), caches, last_B=jnp.asarray(lens - 1))
  np.testing.assert_allclose(logits[:, 0], full[np.arange(4), lens - 1], rtol=1e-5, atol=1e-4)
  for s in range(T - lens.max()):
    pos = lens + s
    logits, caches = apply(jnp.asarray(seq[np.arange(4), pos])[:, None], jnp.asarray(pos), caches)
    np.testing.assert_allclose(logits[:, 0], full[np.arange(4), pos], rtol=1e-5, atol=1e-4)


def test_cached_model_has_gpt_parameters():
  x = jax.ShapeDtypeStruct((1, T), jnp.int32)
  gpt = jax.eval_shape(model.build(CFG).init, jax.random.key(0), x)["params"]
  kv = jax.ShapeDtypeStruct((1, CFG.n_head, T, CFG.n_embd // CFG.n_head), jnp.float32)
  cached = jax.eval_shape(decode._CachedGPT(CFG).init, jax.random.key(0), x,
                          jax.ShapeDtypeStruct((1,), jnp.int32), ((kv, kv),) * CFG.n_layer)["params"]
  shapes = lambda tree: {k: v.shape for k, v in flax.traverse_util.flatten_dict(tree).items()}
  assert shapes(cached) == shapes(gpt)


def test_attention_cache_path_over_whole_width_is_the_default_path():
  """Writing all T keys/values at 0 into a T-position cache is exactly the plain call."""
  att = Attention(CFG)
  x = jax.random.normal(jax.random.key(5), (2, T, CFG.n_embd))
  mask = jnp.tril(jnp.ones((T, T), bool))
  p = att.init(jax.random.key(6), x, x, mask)
  plain = att.apply(p, x, x, mask)
  zeros = jnp.full((2, CFG.n_head, T, CFG.n_embd // CFG.n_head), 7.0)
  y, (k, v) = att.apply(p, x, x, mask, cache=(zeros, zeros, jnp.zeros(2, jnp.int32)))
  np.testing.assert_array_equal(np.asarray(y), np.asarray(plain))
  assert k.shape == zeros.shape and not np.any(np.asarray(k) == 7.0)


# ----------------------------------------------------------------------------- perceivers
@pytest.mark.parametrize("variant", ["perceiver", "perceiver_ar"])
def test_perceiver_variants_match_reference(variant):
  cfg = dataclasses.replace(CFG, variant=variant, n_layer=3)
  params = _random_params(cfg, seed=7)
  want, gap = _reference(cfg, params, PROMPTS)
  assert gap > 1e-4, "near-tie: pick another seed"
  _assert_varied(want)
  for bucket in (True, False):
    got = decode.greedy_generate(params, cfg, PROMPTS, steps=STEPS, batch_size=BATCH, bucket=bucket)
    _assert_same(got, want, f"{variant} bucket={bucket}")
  with pytest.raises(ValueError, match="vanilla"):
    decode.greedy_generate(params, cfg, PROMPTS[:2], steps=STEPS, use_cache=True)


def test_buckets_use_narrow_windows():
  """The first bucket of the perceiver test starts narrower than both block_size and the
  bottleneck m; widths always hold the longest row and never exceed block_size."""
  q = T // 8
  first = sorted(len(p) for p in PROMPTS)[:BATCH]
  phases = decode._phases(max(first), STEPS, T, q)
  assert phases[0][0] < CFG.bottleneck_dim and sum(n for _, n in phases) == STEPS
  assert decode._phases(5, 6, 16, 2) == ((6, 1), (8, 2), (10, 2), (12, 1))
  assert decode._phases(17, 3, 16, 2) == ((16, 3),)
  assert decode._phases(3, 4, 16, 16) == ((16, 4),)  # bucket=False: the original widths
  for max_len in range(1, 20):
    widths = [w for w, n in decode._phases(max_len, 10, 16, 2) for _ in range(n)]
    assert all(min(max_len + s, 16) <= w <= 16 and w % 2 == 0 for s, w in enumerate(widths))


# ----------------------------------------------------------------------------- edges
def test_predict_same_strings_on_every_path(vanilla):
  params, _ = vanilla
  questions = ["Where was Ada born?", "Kim", "Lovelace, Paris; Zurich. Moe qx", "W", "Ada L"]
  got = {(c, b): decode.predict(params, CFG, VOCAB, questions, steps=STEPS, batch_size=4,
                                use_cache=c, bucket=b)
         for c, b in ((None, True), (False, False))}
  assert got[(None, True)] == got[(False, False)]
  assert len(got[(None, True)]) == len(questions)
  prompts = [examples.prompt(VOCAB.encode(q)) for q in questions]
  assert all(p[-1] == MASK for p in prompts)


def test_zero_steps_and_no_prompts(vanilla):
  params, _ = vanilla
  got = decode.greedy_generate(params, CFG, PROMPTS[:3], steps=0)
  assert [g.shape for g in got] == [(0,)] * 3
  assert decode.greedy_generate(params, CFG, [], steps=STEPS) == []
  with pytest.raises(ValueError, match="empty"):
    decode.greedy_generate(params, CFG, [np.zeros(0, np.int32)], steps=STEPS)

"""Tests for the fast decoding paths of birthjax.infer.decode: the vanilla KV cache and the
length-bucketed full recompute, against the original loop and the reference's per-prompt
sample() loop, on tiny random models with large weights (varied, tie-free greedy tokens)."""
import dataclasses
import functools


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.infer import decode, kv_cache
from birthjax.data import corpus, examples
from birthjax.model import model
from birthjax.data.vocab import MASK, Vocab
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


def _reference_scored(cfg, params, prompts, steps):
  """The reference loop's tokens and the float32 log-softmax of each chosen token. Every
  step recomputes the whole text, right-padded to block_size (the vanilla model is causal:
  the pad after the last token changes nothing before it) so the loop compiles once, not
  once per length."""
  net = model.build(cfg)
  apply = jax.jit(lambda p, x, n: jax.nn.log_softmax(net.apply({"params": p}, x)[0, n - 1]))
  toks, lps = [], []
  for prompt in prompts:
    x, lp = list(prompt), []
    for _ in range(steps):
      assert len(x) <= cfg.block_size  # no crop needed: every text fits
      padded = np.zeros(cfg.block_size, np.int32)
      padded[:len(x)] = x
      last = np.asarray(apply(params, jnp.asarray(padded)[None], len(x)))
      x.append(int(np.argmax(last)))
      lp.append(last[x[-1]])
    toks.append(np.asarray(x[len(prompt):]))
    lps.append(np.asarray(lp))
  return toks, lps


@functools.lru_cache(maxsize=1)
def _shared_prefix_case():
  """(cfg, params, prefix, prompts, steps, reference tokens, reference log-probs), computed
  once for both phases (the reference loop compiles once per prompt length)."""
  cfg = dataclasses.replace(CFG, block_size=48)
  params = _random_params(cfg, seed=11)
  rng = np.random.default_rng(12)
  prefix = rng.integers(2, cfg.vocab_size, 6)
  prompts = [np.concatenate([prefix, rng.integers(2, cfg.vocab_size, n)]).astype(np.int32)
             for n in [1, 2, 3, 5, 8, 9, 13, 17, 20, 21, 22, 4, 1]]  # 13 prompts, 7..28 tokens
  steps = 20
  return (cfg, params, prefix, prompts, steps) + tuple(_reference_scored(cfg, params, prompts, steps))


@pytest.mark.parametrize("phase", [8, 16])
def test_cache_groups_shared_prefix_and_phases(phase, monkeypatch):
  """The KV-cache path's pieces all at once: prompts sharing a 6-token prefix (computed once),
  sorted into 4 groups of different widths (16 rows on 4 devices), 20 steps (the generated
  tokens' cache in parts of `phase` steps: 3 parts, or 2 with the default 16): the reference
  loop's tokens, and its log-probs to 1e-5."""
  monkeypatch.setattr(kv_cache, "PHASE", phase)
  cfg, params, prefix, prompts, steps, want, want_lp = _shared_prefix_case()
  assert all(len(p) + steps - 1 <= cfg.block_size for p in prompts)  # all take the cache
  assert len(kv_cache.common_prefix(prompts)) == 6
  _assert_varied(want)
  got, got_lp = decode.greedy_generate_scored(params, cfg, prompts, steps=steps, batch_size=16,
                                              groups=4)
  for p, g, w, gl, wl in zip(prompts, got, want, got_lp, want_lp):
    np.testing.assert_array_equal(g, w, err_msg=f"prompt of length {len(p)}")
    np.testing.assert_allclose(gl, wl, rtol=1e-5, atol=1e-5)
  # one group, no shared prefix (a prompt differs at its first token): the same tokens
  other = [np.concatenate([[(prefix[0] - 1) % (cfg.vocab_size - 2) + 2], prompts[0][1:]]).astype(np.int32)]
  got1 = decode.greedy_generate(params, cfg, prompts + other, steps=steps, batch_size=16, groups=1)
  for g, w in zip(got1, want):
    np.testing.assert_array_equal(g, w)


def test_model_cache_call_is_the_forward():
  """model.GPT called with `cache` (two groups of different widths in one call, each into its
  own empty cache, causal) gives the plain forward's logits at every position, and with keep
  at the kept ones; the keys/values land in the written part."""
  params = _random_params(CFG, seed=3)
  rng = np.random.default_rng(4)
  toks = [jnp.asarray(rng.integers(2, CFG.vocab_size, (r, w)), jnp.int32) for r, w in ((3, 5), (2, 9))]
  dh = CFG.n_embd // CFG.n_head
  empty = lambda r, w: (jnp.zeros((r, CFG.n_head, w + 2, dh)),) * 2  # 2 columns to spare
  caches = [((empty(*t.shape),),) * CFG.n_layer for t in toks]
  masks = [(jnp.arange(t.shape[1] + 2)[None] <= jnp.arange(t.shape[1])[:, None],) for t in toks]
  positions = [jnp.arange(t.shape[1])[None] for t in toks]
  net = model.build(CFG)
  want = [net.apply({"params": params}, t) for t in toks]
  got, new = kv_cache._cached_blocks(params, CFG, toks, caches, masks, (0, 0), positions)
  for g, w, t, c in zip(got, want, toks, new):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    k = c[0][0][0]  # layer 0, part 0, keys: written at columns 0..W-1, the spare ones untouched
    assert np.abs(np.asarray(k[:, :, :t.shape[1]])).min() > 0 and not np.asarray(k[:, :, t.shape[1]:]).any()
  keep = [jnp.array([4, 0, 2]), jnp.array([8, 3])]
  got, _ = kv_cache._cached_blocks(params, CFG, toks, caches, masks, (0, 0), positions, keep=keep)
  for g, w, kp in zip(got, want, keep):
    assert g.shape[1] == 1
    np.testing.assert_allclose(g[:, 0], np.asarray(w)[np.arange(len(kp)), kp], rtol=1e-5, atol=1e-5)


def test_a5_dev_cache_equals_full_recompute(a5_dir):
  """The KV-cache decoder (model.GPT's own Blocks, called with `cache`) against the full
  forward passes (decode._decode_full: the model over each row's whole sequence, the
  definition) on the 500 A5 dev questions with the default layout (the shared prefix "Where
  was ", 16 length groups, kv_cache.PHASE), 32 steps, a small random model: the same tokens
  and answers, log-probs to 1e-5."""
  vocab = Vocab.from_documents(corpus.read_wiki(a5_dir))
  questions, _ = corpus.read_eval(a5_dir, corpus.DEV)
  cfg = model.ModelConfig(vocab_size=len(vocab), n_layer=2, n_head=4, n_embd=64, block_size=128)
  params = _random_params(cfg, scale=0.3, seed=5)
  prompts = [examples.prompt(vocab.encode(q)) for q in questions]
  assert len(prompts) == 500 and all(len(p) + 31 <= cfg.block_size for p in prompts)  # all cached
  assert vocab.decode(kv_cache.common_prefix(prompts)) == "Where was "
  got, got_lp = decode.greedy_generate_scored(params, cfg, prompts, steps=32)
  want, want_lp = decode.greedy_generate_scored(params, cfg, prompts, steps=32, use_cache=False)
  _assert_varied(want)
  for q, g, w, gl, wl in zip(questions, got, want, got_lp, want_lp):
    np.testing.assert_array_equal(g, w, err_msg=q)
    np.testing.assert_allclose(gl, wl, rtol=1e-5, atol=1e-5)
  answers = {vocab.decode(decode.answer_from_generated(g)) for g in got}
  assert len(answers) > 400, len(answers)


def test_common_prefix():
  a = np.array([3, 4, 5, 6]), np.array([3, 4, 9]), np.array([3, 4, 5])
  np.testing.assert_array_equal(kv_cache.common_prefix(a), [3, 4])
  assert len(kv_cache.common_prefix([np.array([1, 2]), np.array([2, 2])])) == 0
  np.testing.assert_array_equal(kv_cache.common_prefix([np.array([7, 8])]), [7, 8])


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

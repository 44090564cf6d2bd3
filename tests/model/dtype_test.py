"""Tests for mixed precision (ModelConfig.dtype='bfloat16'): bf16 logits close to float32 on
the same parameters (every variant), a bf16 train step learns and keeps parameters and
optimizer state float32, bf16 greedy decoding (KV cache and recompute) agree. float32 mode
is covered by every other test file: it is the reference's arithmetic, bit for bit."""
import dataclasses


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.model import attention, model
from birthjax.infer import decode, kv_cache
from birthjax import sharding
from birthjax.train import optim, train
from tests.params_util import random_params

TINY = model.ModelConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=32, block_size=32,
                         bottleneck_dim=8)
VARIANTS = ("vanilla", "perceiver", "perceiver_ar")
OPT = optim.Settings()
SCHED = optim.Schedule(10, 10**6)


def _cfgs(variant, **kw):
  f32 = dataclasses.replace(TINY, variant=variant, **kw)
  return f32, dataclasses.replace(f32, dtype="bfloat16")


def test_dtype_setting():
  assert TINY.dtype == "float32"  # the default: the reference's arithmetic
  with pytest.raises(ValueError, match="float16"):
    dataclasses.replace(TINY, dtype="float16")
  # the same parameters (names, shapes, float32) in both modes: checkpoints are interchangeable
  x = jax.ShapeDtypeStruct((1, TINY.block_size), jnp.int32)
  for variant in VARIANTS:
    f32, bf16 = (jax.eval_shape(model.build(c).init, jax.random.key(0), x)["params"]
                 for c in _cfgs(variant))
    assert jax.tree.structure(f32) == jax.tree.structure(bf16)
    assert {(a.shape, a.dtype) == (b.shape, jnp.float32)
            for a, b in zip(jax.tree.leaves(f32), jax.tree.leaves(bf16))} == {True}


# ----------------------------------------------------------------------------- logits
# Measured on these configs (every leaf N(0, 0.1), LayerNorm scales 1 + N(0, 0.1): the A5
# init's 0.02 perturbed so that biases and pos_emb matter; 8 rows x 32 positions, seeds 0-3,
# every variant): max |log_softmax(bf16) - log_softmax(f32)| 0.014-0.026, mean 0.0025-0.0036;
# argmax agreement 97.7-100% of positions, disagreements only at near-ties. (N(0, 0.3)
# weights, logits 3x as spread: max 0.06-0.12.) Chosen: max abs diff < 0.08 (bf16's 2^-9
# relative rounding through 2 layers, with margin), mean < 0.01, argmax agrees on > 95% of
# positions and on every one whose float32 top-2 gap exceeds 2 * 0.08 (where the diff
# cannot swap them).
MAX_DIFF, MEAN_DIFF, AGREE = 0.08, 0.01, 0.95


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_logits_close_to_f32(variant):
  f32, bf16 = _cfgs(variant)
  x = jax.random.randint(jax.random.key(7), (8, TINY.block_size), 0, TINY.vocab_size)
  apply_f32, apply_bf16 = (jax.jit(model.build(c).apply) for c in (f32, bf16))
  for seed in (0, 1):
    params = random_params(f32, 0.1, seed)
    want = apply_f32({"params": params}, x)
    got = apply_bf16({"params": params}, x)
    assert got.dtype == jnp.float32  # the head's bf16 matmul accumulates into float32
    if variant == "perceiver_ar":  # only the latent window's m positions are predicted
      want, got = want[:, -f32.bottleneck_dim:], got[:, -f32.bottleneck_dim:]
    lp_want, lp_got = jax.nn.log_softmax(want), jax.nn.log_softmax(got)
    diff = np.abs(np.asarray(lp_want - lp_got))
    assert diff.max() < MAX_DIFF and diff.mean() < MEAN_DIFF, (diff.max(), diff.mean())
    assert diff.max() > 0  # really computed in bfloat16
    same = np.asarray(jnp.argmax(want, -1) == jnp.argmax(got, -1))
    assert same.mean() > AGREE
    top2 = np.sort(np.asarray(want), -1)[..., -2:]
    assert same[top2[..., 1] - top2[..., 0] > 2 * MAX_DIFF].all()


def test_bf16_intermediates_are_bf16_where_they_should_be():
  """Dense outputs (and so the residual stream, GELU, q/k/v) are bf16, but the head's:
  float32 logits from a float32-accumulating matmul; LayerNorm outputs bf16 (computed from
  float32 statistics)."""
  _, bf16 = _cfgs("vanilla")
  params = random_params(TINY, 0.1, 0)
  seen, active = {}, []

  def spy(next_fun, args, kwargs, context):  # outermost calls only (not a Dense's super())
    outer = not active or active[-1] is not context.module
    active.append(context.module)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      active.pop()
    if outer and context.method_name == "__call__" and isinstance(context.module, (nn.Dense, nn.LayerNorm)):
      kind = ("head" if context.module.name == "head" else
              "Dense" if isinstance(context.module, nn.Dense) else "LayerNorm")
      seen.setdefault(kind, set()).add(out.dtype)
    return out

  with nn.intercept_methods(spy):  # traced only: dtypes, no compile
    logits = jax.eval_shape(lambda p: model.build(bf16).apply({"params": p}, jnp.zeros((2, 8), jnp.int32)),
                            params)
  bf = {jnp.dtype(jnp.bfloat16)}
  assert seen == {"Dense": bf, "LayerNorm": bf, "head": {jnp.dtype(jnp.float32)}}
  assert logits.dtype == jnp.float32
  # the scores and the softmax: float32 from bf16 q, k (no bf16 rounding of the scores)
  q, k = (jax.random.normal(jax.random.key(i), (1, 1, 4, 8), jnp.bfloat16) for i in (1, 2))
  scores = attention._scores(q, k, attention.causal_mask(4))
  assert scores.dtype == jnp.float32
  exact = np.asarray(q, np.float32)[0, 0] @ np.asarray(k, np.float32)[0, 0].T / np.sqrt(8)
  np.testing.assert_allclose(np.tril(np.asarray(scores)[0, 0]), np.tril(exact), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_train_steps_lower_loss_and_keep_float32_state(variant):
  _, bf16 = _cfgs(variant, deterministic=False)  # dropout 0.1 on, in bf16
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(3)
  x = rng.integers(2, bf16.vocab_size, (8, bf16.block_size)).astype(np.int32)
  batch = sharding.put_batch({"x": x, "y": np.roll(x, -1, 1), "row_mask": np.ones(8, bool)}, mesh)
  params = random_params(bf16, 0.02, seed=0)  # the A5 init's scale
  assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  state = jax.device_put(train.init_state(params, OPT.make()), sharding.replicated(mesh))
  step = train.compile_train_step(mesh, model_cfg=bf16, opt=OPT, base_lr=3e-3, schedule=SCHED)
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch, jax.random.key(0))
    assert metrics["loss"].dtype == jnp.float32 and metrics["grad_norm"].dtype == jnp.float32
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses  # 3.69 (log 40: uniform) -> 3.24-3.41 here
  # parameters and every float of the optimizer state (AdamW moments, lr) stay float32
  floats = [a for a in jax.tree.leaves(state["params"]) + jax.tree.leaves(state["opt_state"])
            if jnp.issubdtype(a.dtype, jnp.floating)]
  assert {a.dtype for a in floats} == {jnp.dtype(jnp.float32)}
  assert len(jax.tree.leaves(state["params"])) == len(jax.tree.leaves(params))


# ----------------------------------------------------------------------------- decoding
def _prompts(n=13, seed=1, max_len=12):
  rng = np.random.default_rng(seed)
  prefix = rng.integers(2, TINY.vocab_size, 3)  # a shared prefix: the cache's batch-1 part
  return [np.concatenate([prefix, rng.integers(2, TINY.vocab_size, m)]).astype(np.int32)
          for m in rng.integers(1, max_len, n)]


GAP = 0.1  # bf16 log-probs of two decoding paths differ by up to ~0.03 (measured): see below


def _teacher_forced(params, cfg, prompts, gens):
  """Per prompt, [steps] argmax and top-2 gap of the logits that chose each generated token:
  one row per (prompt, step), prompt + the tokens generated before, right-padded to
  block_size, `end` at its length (every variant's logits there see inputs 0..end-1 only),
  all in one forward: the recompute path's arithmetic, without its loop."""
  rows = [(np.concatenate([p, g[:s]]), len(p) + s) for p, g in zip(prompts, gens) for s in range(len(g))]
  buf = np.zeros((len(rows), cfg.block_size), np.int32)
  for r, (seq, _) in zip(buf, rows):
    r[:len(seq)] = seq
  end = np.array([e for _, e in rows], np.int32)
  logits = jax.jit(model.build(cfg).apply)({"params": params}, buf, end)
  last = np.asarray(jnp.take_along_axis(logits, (end - 1)[:, None, None], axis=1)[:, 0])
  top2 = np.sort(last, -1)[:, -2:]
  cuts = np.cumsum([len(g) for g in gens])[:-1]
  return np.split(np.argmax(last, -1), cuts), np.split(top2[:, 1] - top2[:, 0], cuts)


def _assert_same_until_near_tie(got, want, gaps, min_compared=0.7):
  """Per row, the tokens agree up to its first mismatch, which must be at a near-tie (a top-2
  gap below GAP; past it the paths may legitimately continue differently); most steps must
  be compared. Returns the compared steps of each row."""
  ns = []
  for g, w, gap in zip(got, want, gaps):
    bad = np.nonzero(g != w)[0]
    ns.append(int(bad[0]) if len(bad) else len(w))
    assert not len(bad) or gap[bad[0]] < GAP, (g, w, gap)
  assert sum(ns) >= min_compared * sum(len(w) for w in want), ns
  return ns


def test_bf16_kv_cache_decoding_matches_bf16_recompute():
  """Vanilla bf16 greedy decoding: the KV cache (bf16 keys/values) gives the bf16 recompute
  path's tokens, up to near-ties. Both run the same bf16 Dense/LayerNorm/attention on the
  same inputs and differ only in the order of float32 sums (matmuls over other row counts,
  the cache's parts added after the matmul) and in XLA's fusions, which bf16 rounding (2^-9
  relative) turns into 1-ulp differences of some activations. Measured with these N(0, 0.2)
  weights, seeds 0-3: log-probs of the two paths differ by up to 0.03 before any divergence
  (float32: ~1e-6), and tokens differ only from a step whose top-2 gap is below 0.017
  (N(0, 0.5) weights amplify the rounding chaotically: up to 0.18). So a row's tokens must
  agree up to its first mismatch, which must be at a gap below GAP = 0.1."""
  _, bf16 = _cfgs("vanilla")
  params = random_params(bf16, 0.2, seed=0)
  prompts, steps = _prompts(), 12
  assert all(len(p) + steps - 1 <= bf16.block_size for p in prompts)  # all take the cache
  cached, cached_lp = decode.greedy_generate_scored(params, bf16, prompts, steps=steps,
                                                    batch_size=16, groups=2)
  full, full_lp = decode.greedy_generate_scored(params, bf16, prompts, steps=steps,
                                                batch_size=16, use_cache=False)
  forced, gaps = _teacher_forced(params, bf16, prompts, full)
  _assert_same_until_near_tie(full, forced, gaps)
  ns = _assert_same_until_near_tie(cached, full, gaps)
  for a, b, n in zip(cached_lp, full_lp, ns):
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a[:n], b[:n], atol=0.1)
  assert len({tuple(g.tolist()) for g in full}) >= len(full) - 2  # varied continuations


def test_bf16_cache_holds_bf16(monkeypatch):
  _, bf16 = _cfgs("vanilla")
  params = random_params(bf16, 0.5, seed=0)
  seen = []
  real = kv_cache._cached_blocks

  def spy(params, c, xs, caches, *args, **kw):
    seen.extend(a.dtype for a in jax.tree.leaves(caches))
    return real(params, c, xs, caches, *args, **kw)

  monkeypatch.setattr(kv_cache, "_cached_blocks", spy)
  jax.eval_shape(lambda p: kv_cache.decode_cached(
      p, jnp.zeros((2,), jnp.int32), [jnp.zeros((4, 3), jnp.int32)], [jnp.full((4,), 4, jnp.int32)],
      model_cfg=bf16, steps=3, prefix_len=2, phase=2), params)
  assert seen and set(seen) == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("variant", ["perceiver", "perceiver_ar"])
def test_bf16_perceiver_decoding(variant):
  """The perceivers' bf16 greedy decoding (the bucketed recompute) gives the tokens of the
  bf16 model's teacher-forced logits, up to near-ties."""
  _, bf16 = _cfgs(variant, n_layer=3)
  params = random_params(bf16, 0.5, seed=7)
  prompts, steps = _prompts(n=8, seed=2, max_len=20), 8
  got, lp = decode.greedy_generate_scored(params, bf16, prompts, steps=steps, batch_size=8)
  assert [g.shape for g in got] == [(steps,)] * len(prompts)
  assert all(np.all(np.isfinite(x)) and np.all(x <= 0) for x in lp)
  forced, gaps = _teacher_forced(params, bf16, prompts, got)
  _assert_same_until_near_tie(got, forced, gaps)

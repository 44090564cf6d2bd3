"""Tests for birthjax.model.attention: attend() against hand-worked numpy softmax attention."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.model import attention

# jitted: far cheaper than op-by-op on a busy CPU (same function, same semantics)
ATTEND = jax.jit(attention.attend, static_argnames=("dropout_rate", "deterministic"))


def _np_attention(q, k, v, mask, neg=-1e10):
    """Reference: softmax(masked_fill(q k^T / sqrt(D), ~mask, -1e10)) @ v, in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = np.where(mask, s, neg)
    s = s - s.max(-1, keepdims=True)
    w = np.exp(s)
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", w, v), w


# B=1, H=1, Q=K=3, D=2.
Q = np.array([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]], np.float32)
K = np.array([[[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]]], np.float32)
V = np.array([[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]], np.float32)


def test_causal_mask_literal():
    np.testing.assert_array_equal(np.asarray(attention.causal_mask(3)),
                                  np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], bool))
    assert attention.causal_mask(3).dtype == jnp.bool_
    assert attention.causal_mask(1).shape == (1, 1)
    np.testing.assert_array_equal(np.asarray(attention.causal_mask(5)), np.tril(np.ones((5, 5), bool)))


def test_attend_causal_hand_worked():
    mask = attention.causal_mask(3)
    out = np.asarray(attention.attend(jnp.asarray(Q), jnp.asarray(K), jnp.asarray(V), mask))
    assert out.shape == (1, 1, 3, 2)
    # Row 0 sees only key 0: exactly v0.
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 2.0], rtol=0, atol=1e-6)
    # Row 1: scores [q1.k0, q1.k1] / sqrt(2) = [0, 1/sqrt(2)].
    s = np.array([0.0, 1.0]) / np.sqrt(2.0)
    w = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(out[0, 0, 1], w[0] * V[0, 0, 0] + w[1] * V[0, 0, 1], rtol=1e-6)
    # Row 2: scores [1, 1, 1] / sqrt(2): uniform over the three keys.
    np.testing.assert_allclose(out[0, 0, 2], V[0, 0].mean(0), rtol=1e-6)
    ref, _ = _np_attention(Q, K, V, np.asarray(mask))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_attend_scales_by_inverse_sqrt_d():
    # No mask: the 1/sqrt(D) scaling is all that distinguishes these.
    full = jnp.ones((3, 3), bool)
    out = np.asarray(attention.attend(jnp.asarray(Q), jnp.asarray(K), jnp.asarray(V), full))
    ref, _ = _np_attention(Q, K, V, np.ones((3, 3), bool))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    unscaled, _ = _np_attention(Q * np.sqrt(2.0), K, V, np.ones((3, 3), bool))
    assert np.abs(out - unscaled).max() > 1e-2


def test_masked_weights_are_zero_even_for_huge_scores():
    # Future keys with enormous scores must still get weight 0.
    q = np.full((1, 1, 3, 2), 30.0, np.float32)
    k = np.array([[[[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]]], np.float32)
    v = np.eye(3, dtype=np.float32)[None, None]  # output rows are the attention weights
    out = np.asarray(attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                      attention.causal_mask(3)))
    assert out[0, 0, 0, 1] == 0.0 and out[0, 0, 0, 2] == 0.0 and out[0, 0, 1, 2] == 0.0
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 0.0, 0.0], atol=0)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)


def test_fully_masked_row_is_uniform_like_masked_fill_minus_1e10():
    # masked_fill(-1e10) (not -inf) makes a fully masked row a uniform average, never NaN.
    mask = jnp.array([[False, False, False], [True, True, False], [True, True, True]])
    out = np.asarray(attention.attend(jnp.asarray(Q), jnp.asarray(K), jnp.asarray(V), mask))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 0, 0], V[0, 0].mean(0), rtol=1e-6)
    ref, _ = _np_attention(Q, K, V, np.asarray(mask))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_attend_random_batched_matches_numpy():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    k = rng.normal(size=(2, 3, 7, 4)).astype(np.float32)
    v = rng.normal(size=(2, 3, 7, 4)).astype(np.float32)
    mask = rng.random((5, 7)) < 0.6
    mask[:, 0] = True
    out = np.asarray(attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
    ref, _ = _np_attention(q, k, v, mask)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _weights_setup(t=16):
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(2, 2, t, t)).astype(np.float32))
    k = jnp.asarray(rng.normal(size=(2, 2, t, t)).astype(np.float32))
    v = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32), (2, 2, t, t))  # out == weights
    mask = jnp.ones((t, t), bool)
    return q, k, v, mask


def test_deterministic_ignores_dropout_rate():
    q, k, v, mask = _weights_setup()
    plain = ATTEND(q, k, v, mask)
    for rng in (None, jax.random.key(0)):
        det = ATTEND(q, k, v, mask, dropout_rate=0.5, dropout_rng=rng, deterministic=True)
        np.testing.assert_array_equal(np.asarray(det), np.asarray(plain))
    # rate 0 with deterministic=False is also the identity (and needs no rng).
    np.testing.assert_array_equal(
        np.asarray(ATTEND(q, k, v, mask, dropout_rate=0.0, deterministic=False)),
        np.asarray(plain))


def test_dropout_zeroes_and_rescales_weights():
    p = 0.25
    q, k, v, mask = _weights_setup()
    w = np.asarray(ATTEND(q, k, v, mask))  # the weights (v is the identity)
    d = np.asarray(ATTEND(q, k, v, mask, dropout_rate=p, dropout_rng=jax.random.key(3),
                                    deterministic=False))
    dropped = d == 0.0
    kept = ~dropped
    np.testing.assert_allclose(d[kept], w[kept] / (1.0 - p), rtol=1e-5)
    frac = dropped.mean()
    assert 0.18 < frac < 0.32, frac  # ~p of 1024 weights
    # Another key drops other weights; the same key the same ones.
    d2 = np.asarray(ATTEND(q, k, v, mask, dropout_rate=p, dropout_rng=jax.random.key(4),
                                     deterministic=False))
    assert (d2 != d).any()
    d3 = np.asarray(ATTEND(q, k, v, mask, dropout_rate=p, dropout_rng=jax.random.key(3),
                                     deterministic=False))
    np.testing.assert_array_equal(d3, d)


def test_dropout_applies_to_weights_not_output():
    # With v = ones, un-dropped output is exactly 1; dropout of weights makes row sums vary.
    p = 0.5
    q, k, _, mask = _weights_setup()
    v = jnp.ones_like(q)
    plain = np.asarray(ATTEND(q, k, v, mask))
    np.testing.assert_allclose(plain, 1.0, rtol=1e-5)
    d = np.asarray(ATTEND(q, k, v, mask, dropout_rate=p, dropout_rng=jax.random.key(5),
                                    deterministic=False))
    # Every column of one output row is the same (same weights @ ones), rows differ.
    np.testing.assert_allclose(d, np.broadcast_to(d[..., :1], d.shape), rtol=1e-5)
    assert np.std(d[..., 0]) > 1e-2


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_output_dtype_follows_v(dtype):
    out = attention.attend(jnp.asarray(Q, dtype), jnp.asarray(K, dtype), jnp.asarray(V, dtype),
                           attention.causal_mask(3))
    assert out.dtype == dtype
    ref, _ = _np_attention(Q, K, V, np.asarray(attention.causal_mask(3)))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=2e-2, atol=2e-2)


def test_attend_parts_equals_attend_on_the_concatenation():
  """Keys/values in three parts with their own masks: the same output as one attend() over
  the concatenated keys, values and mask (the KV-cache decoding's layout)."""
  ks = jax.random.split(jax.random.key(9), 4)
  q = jax.random.normal(ks[0], (2, 3, 1, 4))
  k = jax.random.normal(ks[1], (2, 3, 11, 4))
  v = jax.random.normal(ks[2], (2, 3, 11, 4))
  mask = jax.random.bernoulli(ks[3], 0.6, (2, 1, 1, 11)).at[:, :, :, 0].set(True)
  cuts = [(0, 5), (5, 6), (6, 11)]
  parts = [(k[:, :, a:b], v[:, :, a:b], mask[..., a:b]) for a, b in cuts]
  got = jax.jit(attention.attend_parts)(q, parts)
  np.testing.assert_allclose(got, ATTEND(q, k, v, mask), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got, _np_attention(q, k, v, mask)[0], rtol=1e-5, atol=1e-6)
  # a part of batch 1 is every row's: the same as that part repeated over the batch
  k0, v0 = k.at[1, :, :5].set(k[0, :, :5]), v.at[1, :, :5].set(v[0, :, :5])
  shared = [(k0[:1, :, :5], v0[:1, :, :5], True)] + parts[1:]
  np.testing.assert_allclose(jax.jit(attention.attend_parts)(q, shared),
                             ATTEND(q, k0, v0, mask.at[..., :5].set(True)), rtol=1e-6, atol=1e-6)

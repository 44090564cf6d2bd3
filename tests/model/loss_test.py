"""Tests for birthjax.model.loss: PAD-masked cross-entropy, hand-worked."""
import math


import jax
import jax.numpy as jnp
import numpy as np

from birthjax.model import loss
from birthjax.data.vocab import PAD

# jitted once per shape: much cheaper than op-by-op on a busy CPU
CE_SUM = jax.jit(loss.cross_entropy_sum)
CE_MEAN = jax.jit(loss.mean_cross_entropy)


def _np_ce(logits, target):
    logits = np.asarray(logits, np.float64)
    m = logits.max()
    return -(logits[target] - m - math.log(np.exp(logits - m).sum()))


def _torch_ignore_index_mean(logits_BxTxV, targets_BxT, ignore_index=0):
    """F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=0), written out."""
    flat_l = np.asarray(logits_BxTxV).reshape(-1, np.asarray(logits_BxTxV).shape[-1])
    flat_t = np.asarray(targets_BxT).reshape(-1)
    losses = [_np_ce(l, t) for l, t in zip(flat_l, flat_t) if t != ignore_index]
    return sum(losses) / len(losses), sum(losses), len(losses)


def test_pad_is_zero():
    assert PAD == 0


def test_hand_worked_tiny():
    # B=1, T=3, V=3. Targets [2, PAD, 1]: the middle position is ignored.
    logits = jnp.array([[[0.0, 0.0, 0.0], [5.0, -3.0, 100.0], [1.0, 2.0, 3.0]]])
    targets = jnp.array([[2, 0, 1]])
    l0 = math.log(3.0)  # uniform over 3
    l2 = -(2.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    total, count = CE_SUM(logits, targets)
    np.testing.assert_allclose(float(total), l0 + l2, rtol=1e-6)
    assert float(count) == 2.0
    np.testing.assert_allclose(float(CE_MEAN(logits, targets)), (l0 + l2) / 2,
                               rtol=1e-6)


def test_pad_position_logits_do_not_matter():
    logits = jnp.array([[[0.0, 0.0, 0.0], [5.0, -3.0, 100.0], [1.0, 2.0, 3.0]]])
    targets = jnp.array([[2, 0, 1]])
    other = logits.at[0, 1].set(jnp.array([-50.0, 70.0, 3.0]))
    assert float(CE_MEAN(logits, targets)) == \
        float(CE_MEAN(other, targets))
    # and their gradient is exactly zero
    g = jax.jit(jax.grad(loss.mean_cross_entropy))(logits, targets)
    np.testing.assert_array_equal(np.asarray(g[0, 1]), 0.0)
    assert np.abs(np.asarray(g[0, 0])).max() > 0.1


def test_class_zero_logit_still_in_the_softmax():
    # PAD masks targets, not the vocabulary: logit 0 (PAD) still contributes to the log-sum-exp.
    logits = jnp.array([[[10.0, 0.0, 0.0]]])
    targets = jnp.array([[1]])
    want = -(0.0 - math.log(math.exp(10) + 2.0))
    np.testing.assert_allclose(float(CE_MEAN(logits, targets)), want, rtol=1e-6)


def test_matches_torch_ignore_index_semantics_random():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 7, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (3, 7)).astype(np.int32)
    targets[0, :4] = 0
    targets[2] = 0  # a whole all-PAD row
    targets[1, 3] = 1
    mean, total, count = _torch_ignore_index_mean(logits, targets)
    s, c = CE_SUM(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(float(s), total, rtol=1e-5)
    assert float(c) == count == int((targets != 0).sum())
    np.testing.assert_allclose(float(CE_MEAN(jnp.asarray(logits), jnp.asarray(targets))),
                               mean, rtol=1e-5)
    # NOT the mean over all positions
    all_mean = np.mean([_np_ce(l, t) for l, t in zip(logits.reshape(-1, 11), targets.reshape(-1))])
    assert abs(mean - all_mean) > 1e-2


def test_adding_all_pad_rows_changes_nothing():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 6)).astype(np.float32)
    targets = rng.integers(1, 6, (2, 5)).astype(np.int32)
    padded_l = np.concatenate([logits, rng.normal(size=(2, 5, 6)).astype(np.float32)])
    padded_t = np.concatenate([targets, np.zeros((2, 5), np.int32)])
    a = CE_MEAN(jnp.asarray(logits), jnp.asarray(targets))
    b = CE_MEAN(jnp.asarray(padded_l), jnp.asarray(padded_t))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    sa, ca = CE_SUM(jnp.asarray(logits), jnp.asarray(targets))
    sb, cb = CE_SUM(jnp.asarray(padded_l), jnp.asarray(padded_t))
    np.testing.assert_allclose(float(sa), float(sb), rtol=1e-6)
    assert float(ca) == float(cb) == 10.0


def test_sum_returns_sum_and_count_and_all_pad_is_finite():
    logits = jnp.zeros((2, 3, 4))
    targets = jnp.array([[1, 2, 0], [0, 0, 3]])
    s, c = CE_SUM(logits, targets)
    np.testing.assert_allclose(float(s), 3 * math.log(4.0), rtol=1e-6)
    assert float(c) == 3.0
    assert s.dtype == jnp.float32 and c.dtype == jnp.float32
    # All PAD: 0 / max(0, 1) = 0 (torch would give nan); never nan here.
    m = CE_MEAN(logits, jnp.zeros((2, 3), jnp.int32))
    assert float(m) == 0.0


def test_bfloat16_logits_computed_in_float32():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 4, (2, 4, 9)).astype(np.float32)
    targets = rng.integers(1, 9, (2, 4)).astype(np.int32)
    bf = jnp.asarray(logits, jnp.bfloat16)
    m = CE_MEAN(bf, jnp.asarray(targets))
    assert m.dtype == jnp.float32
    want, _, _ = _torch_ignore_index_mean(np.asarray(bf, np.float32), targets)
    np.testing.assert_allclose(float(m), want, rtol=1e-5)

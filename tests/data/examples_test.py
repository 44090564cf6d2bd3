"""The example rules: span corruption (device_epoch.corrupt from explicit draws, and the
draws of device_epoch.draws) against hand-worked sequences, and the QA encoding."""
import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.train import device_epoch as de
from birthjax.data import examples
from birthjax.data.vocab import MASK, PAD

_corrupt = jax.jit(de.corrupt, static_argnums=4)


@functools.lru_cache(maxsize=None)
def _draws_fn(block_size):
  """jit(vmap over keys) of device_epoch.draws; length, trunc and keep traced (one compile)."""
  return jax.jit(jax.vmap(lambda k, length, trunc, keep: de.draws(k, length, block_size, trunc, keep),
                          in_axes=(0, None, None, None)))


def _draws(block_size, count, length, trunc=True, keep=0, seed=0):
  keys = jax.random.split(jax.random.key(seed), count)
  return tuple(np.asarray(v) for v in _draws_fn(block_size)(keys, length, trunc, keep))


def _row(ids, block_size):
  """A table row of `ids` (PAD after them), as birthjax.data.records stores a document."""
  out = np.full(block_size, PAD, np.int32)
  out[:len(ids)] = ids
  return out


def _ids(start, stop):
  return np.arange(start, stop, dtype=np.int32)


def corrupt(doc, n, m, p, block_size):
  x, y = _corrupt(jnp.asarray(_row(doc, block_size)), n, m, p, block_size)
  assert x.dtype == jnp.int32 and y.dtype == jnp.int32
  assert x.shape == y.shape == (block_size - 1,)
  return np.asarray(x), np.asarray(y)


def assert_uniform(values, a, b):
  """values cover exactly [a, b], each within 5 sigma of its expected count, chi2 plausible."""
  counts = np.bincount(np.asarray(values) - a)
  assert np.asarray(values).min() == a and len(counts) == b - a + 1, (a, b, counts)
  assert counts.min() > 0, (a, b, counts)
  expect = len(values) / (b - a + 1)
  assert np.abs(counts - expect).max() < 5 * np.sqrt(expect), (a, b, counts)
  dof = b - a
  chi2 = ((counts - expect) ** 2 / expect).sum()
  assert chi2 < dof + 6 * np.sqrt(2 * dof) + 10, (a, b, chi2)


# ---------------------------------------------------------------- ranges

def test_truncation_range():
  assert examples.truncation_range(128) == (4, 112)
  assert examples.truncation_range(16) == (4, 14)


@pytest.mark.parametrize("n, expected", [
    (0, (0, 0)), (1, (1, 1)), (4, (1, 2)), (5, (1, 2)), (8, (1, 3)), (9, (1, 3)), (16, (2, 6)),
    (100, (13, 38)), (112, (14, 42))])
def test_masked_length_range(n, expected):
  assert examples.masked_length_range(n) == expected


def test_masked_length_range_mean_is_quarter():
  for n in range(8, 113, 8):
    lo, hi = examples.masked_length_range(n)
    assert (lo + hi) / 2 == n / 4
  for n in range(4, 113):
    lo, hi = examples.masked_length_range(n)
    assert 1 <= lo <= hi <= n and abs((lo + hi) / 2 - n / 4) <= 1.0


# ---------------------------------------------------------------- span corruption, explicit draws

def test_span_corrupt_hand_worked():
  x, y = corrupt(_ids(10, 20), 8, 2, 3, 16)  # truncate to 8, mask 2 characters, prefix of 3
  s = [10, 11, 12, MASK, 15, 16, 17, MASK, 13, 14, PAD, PAD, PAD, PAD, PAD, PAD]
  np.testing.assert_array_equal(x, s[:-1])
  np.testing.assert_array_equal(y, s[1:])
  np.testing.assert_array_equal(x, [10, 11, 12, 1, 15, 16, 17, 1, 13, 14, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 1, 15, 16, 17, 1, 13, 14, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_masked_span_at_end():
  x, y = corrupt(_ids(10, 20), 8, 3, 5, 16)  # mask the last 3 of 8: empty suffix
  np.testing.assert_array_equal(x, [10, 11, 12, 13, 14, 1, 1, 15, 16, 17, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 13, 14, 1, 1, 15, 16, 17, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_masked_span_at_start():
  x, y = corrupt(_ids(10, 20), 6, 1, 0, 16)
  np.testing.assert_array_equal(x, [1, 11, 12, 13, 14, 15, 1, 10, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 13, 14, 15, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_block_128():
  doc = _ids(2, 202)[:112]  # a table row holds at most 7/8 block_size ids
  x, y = corrupt(doc, 112, 42, 70, 128)  # the largest values of each range
  s = np.concatenate([doc[:70], [MASK], [MASK], doc[70:112], np.zeros(128 - 114, np.int32)])
  assert s[69] == 71 and s[70] == s[71] == MASK and s[72] == 72 and s[113] == 113 and s[114] == PAD
  np.testing.assert_array_equal(x, s[:-1])
  np.testing.assert_array_equal(y, s[1:])


def test_span_corrupt_short_doc_stays_whole():
  # 5 characters: the truncation (at least 4) keeps all 5 whenever it draws 5 or more
  x, y = corrupt(_ids(10, 15), 5, 1, 0, 16)
  np.testing.assert_array_equal(x, [1, 11, 12, 13, 14, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 13, 14, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
  n, m, p = _draws(16, 2000, 5)
  assert set(n.tolist()) == {4, 5}  # never more than the document holds
  assert abs(np.mean(n == 5) - 10 / 11) < 0.03  # truncation 5..14 of 4..14 keeps it whole


def test_span_corrupt_empty_doc():
  x, y = corrupt(np.zeros(0, np.int32), 0, 0, 0, 16)
  np.testing.assert_array_equal(x, [1, 1] + [0] * 13)
  np.testing.assert_array_equal(y, [1] + [0] * 14)
  assert np.count_nonzero(y != PAD) == 1
  for trunc in (True, False):  # the draws of an empty document are all 0
    n, m, p = _draws(16, 200, 0, trunc=trunc, keep=3)
    assert n.tolist() == m.tolist() == p.tolist() == [0] * 200


# ---------------------------------------------------------------- the draws

def _parse(x, y):
  """(prefix, masked, suffix) of one span-corrupted sequence s = x + [y[-1]]."""
  s = np.concatenate([x, y[-1:]])
  np.testing.assert_array_equal(x[1:], y[:-1])
  masks = np.flatnonzero(s == MASK)
  assert len(masks) == 2
  i1, i2 = masks
  tail = s[i2 + 1:]
  pads = np.flatnonzero(tail == PAD)
  end = pads[0] if len(pads) else len(tail)
  assert np.all(tail[end:] == PAD)
  return s[:i1], tail[:end], s[i1 + 1:i2]


_corrupt_many = jax.jit(jax.vmap(de.corrupt, in_axes=(None, 0, 0, 0, None)), static_argnums=4)


def test_span_corrupt_statistics():
  doc = _ids(2, 202)  # 200 distinct ids: longer than any truncation
  count = 20000
  n, m, p = _draws(128, count, 200)
  assert min(n) == 4 and max(n) == 112
  counts = np.bincount(n, minlength=113)
  assert np.all(counts[4:] > 0) and np.all(counts[:4] == 0)
  expected = count / 109
  chi2 = ((counts[4:] - expected) ** 2 / expected).sum()
  assert chi2 < 180  # 108 degrees of freedom: mean 108, sd ~15
  assert abs(np.mean(n) - 58) < 1.0
  ranges = np.array([examples.masked_length_range(int(k)) for k in n])
  assert np.all((ranges[:, 0] <= m) & (m <= ranges[:, 1]))
  assert 0.24 < np.mean(m / n) < 0.26  # ~ n/4 (bounds rounded to nearest)
  assert np.all((0 <= p) & (p <= n - m))
  where = collections.Counter(np.where(p == 0, "first", np.where(p == n - m, "last", "middle")))
  assert where["first"] > 0 and where["last"] > 0 and where["middle"] > count / 2
  # the examples of the first 2000 draws: the pieces put back together are doc[:n]
  k = 2000
  x, y = map(np.asarray, _corrupt_many(jnp.asarray(doc[:128]), n[:k], m[:k], p[:k], 128))
  for i in range(k):
    prefix, masked, suffix = _parse(x[i], y[i])
    assert (len(prefix), len(masked)) == (p[i], m[i])
    np.testing.assert_array_equal(np.concatenate([prefix, masked, suffix]), doc[:n[i]])


def test_span_corrupt_short_docs():
  for length in (0, 1, 3, 4, 10):
    doc = _ids(2, 2 + length)
    n, m, p = _draws(16, 50, length, seed=length)
    x, y = map(np.asarray, _corrupt_many(jnp.asarray(_row(doc, 16)), n, m, p, 16))
    for i in range(50):
      prefix, masked, suffix = _parse(x[i], y[i])
      k = len(prefix) + len(masked) + len(suffix)
      assert k == n[i] and (k == length if length <= 4 else 4 <= k <= length)
      np.testing.assert_array_equal(np.concatenate([prefix, masked, suffix]), doc[:k])
      lo, hi = examples.masked_length_range(k)
      assert lo <= len(masked) <= hi


def test_draws_without_truncation_use_the_whole_length():
  # 30 ids at block 32: more than the 28 the truncation could keep
  n, m, p = _draws(32, 20000, 30, trunc=False)
  assert (n == 30).all()
  assert_uniform(m, *examples.masked_length_range(30))  # [4, 11]
  assert_uniform(p[m == 8], 0, 22)
  assert ((0 <= p) & (p <= 30 - m)).all()
  n, m, p = _draws(32, 2000, 30, trunc=True)  # the same length truncated: never above 28
  assert n.max() == 28 and n.min() == 4


def test_draws_keep_the_name_visible():
  # keep 8 of 30 ids (no truncation): the span starts at 8 or later, uniformly to n - m
  n, m, p = _draws(32, 20000, 30, trunc=False, keep=8)
  assert (n == 30).all() and p.min() == 8 and (p <= 30 - m).all()
  assert_uniform(m, *examples.masked_length_range(30))
  for length in (4, 11):
    assert_uniform(p[m == length], 8, 30 - length)
  # keep more than n - m: the span is the last m ids (p = n - m), the most the name keeps
  n, m, p = _draws(16, 2000, 10, trunc=False, keep=9)
  assert (n == 10).all() and set(m.tolist()) == {1, 2, 3, 4} and (p == 10 - m).all()
  # with the truncation: p >= min(keep, n - m), uniform above it
  n, m, p = _draws(128, 40000, 40, trunc=True, keep=8)
  assert (p >= np.minimum(8, n - m)).all() and (p <= n - m).all()
  assert (p[n - m < 8] == (n - m)[n - m < 8]).all() and (n - m < 8).any()
  assert_uniform(p[(n == 40) & (m == 10)], 8, 30)


# ---------------------------------------------------------------- QA

def test_qa_example_hand_worked():
  x, y = examples.qa_example(np.array([5, 6, 7], np.int32), np.array([8, 9], np.int32), 10)
  assert x.dtype == np.int32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, [5, 6, 7, 1, 8, 9, 1, 0, 0])
  np.testing.assert_array_equal(y, [0, 0, 1, 8, 9, 1, 0, 0, 0])


def test_qa_example_reference_formula():
  """y = PAD*(len(q)-1) + s[len(q):], as the reference's NameDataset."""
  q, a, block = [12, 13, 14, 15, 16], [20, 21, 22], 16
  x, y = examples.qa_example(np.array(q, np.int32), np.array(a, np.int32), block)
  s = q + [MASK] + a + [MASK]
  s += [PAD] * (block - len(s))
  np.testing.assert_array_equal(x, s[:-1])
  np.testing.assert_array_equal(y, [PAD] * (len(q) - 1) + s[len(q):])


def test_qa_example_exact_fit_and_too_long():
  q, a = np.array([5, 6, 7], np.int32), np.array([8, 9, 10, 11, 12], np.int32)
  x, y = examples.qa_example(q, a, 10)  # 3 + 1 + 5 + 1 == 10
  np.testing.assert_array_equal(x, [5, 6, 7, 1, 8, 9, 10, 11, 12])
  np.testing.assert_array_equal(y, [0, 0, 1, 8, 9, 10, 11, 12, 1])
  with pytest.raises(ValueError):
    examples.qa_example(q, np.append(a, 13).astype(np.int32), 10)


def test_qa_example_does_not_modify_input():
  q = np.array([5, 6, 7], np.int32)
  examples.qa_example(q, np.array([8], np.int32), 10)
  np.testing.assert_array_equal(q, [5, 6, 7])


def test_prompt():
  p = examples.prompt(np.array([5, 6, 7], np.int32))
  assert p.dtype == np.int32
  np.testing.assert_array_equal(p, [5, 6, 7, 1])
  np.testing.assert_array_equal(examples.prompt(np.zeros(0, np.int32)), [1])

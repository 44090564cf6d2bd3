"""Tests for birthjax.examples: span corruption and QA encoding, against hand-worked sequences."""
import collections

import numpy as np
import pytest

from birthjax import examples
from birthjax.vocab import MASK, PAD


class ScriptedRng:
  """Stands in for np.random.Generator: integers(lo, hi) returns scripted values, records calls."""

  def __init__(self, *values):
    self.values = list(values)
    self.calls = []

  def integers(self, lo, hi):
    self.calls.append((int(lo), int(hi)))
    v = self.values.pop(0)
    assert lo <= v < hi, f"scripted value {v} outside [{lo}, {hi})"
    return np.int64(v)


def _ids(start, stop):
  return np.arange(start, stop, dtype=np.int32)


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


# ---------------------------------------------------------------- span corruption, scripted rng

def test_span_corrupt_hand_worked():
  rng = ScriptedRng(8, 2, 3)  # truncate to 8, mask 2 characters, prefix of 3
  x, y = examples.span_corrupt(_ids(10, 20), rng, 16)
  assert rng.calls == [(4, 15), (1, 4), (0, 7)]
  s = [10, 11, 12, MASK, 15, 16, 17, MASK, 13, 14, PAD, PAD, PAD, PAD, PAD, PAD]
  assert x.dtype == np.int32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, s[:-1])
  np.testing.assert_array_equal(y, s[1:])
  np.testing.assert_array_equal(x, [10, 11, 12, 1, 15, 16, 17, 1, 13, 14, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 1, 15, 16, 17, 1, 13, 14, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_masked_span_at_end():
  rng = ScriptedRng(8, 3, 5)  # mask the last 3 of 8: empty suffix
  x, y = examples.span_corrupt(_ids(10, 20), rng, 16)
  assert rng.calls == [(4, 15), (1, 4), (0, 6)]
  np.testing.assert_array_equal(x, [10, 11, 12, 13, 14, 1, 1, 15, 16, 17, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 13, 14, 1, 1, 15, 16, 17, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_masked_span_at_start():
  rng = ScriptedRng(6, 1, 0)
  x, y = examples.span_corrupt(_ids(10, 20), rng, 16)
  assert rng.calls == [(4, 15), (1, 3), (0, 6)]  # n=6: masked length 1..2
  np.testing.assert_array_equal(x, [1, 11, 12, 13, 14, 15, 1, 10, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 13, 14, 15, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_block_128_calls():
  doc = _ids(2, 202)
  rng = ScriptedRng(112, 42, 70)  # the largest values of each range
  x, y = examples.span_corrupt(doc, rng, 128)
  assert rng.calls == [(4, 113), (14, 43), (0, 71)]  # randint(4, 112) inclusive, ...
  assert x.shape == y.shape == (127,)
  s = np.concatenate([doc[:70], [MASK], [MASK], doc[70:112], np.zeros(128 - 114, np.int32)])
  np.testing.assert_array_equal(x, s[:-1])
  np.testing.assert_array_equal(y, s[1:])


def test_span_corrupt_short_doc_stays_whole():
  rng = ScriptedRng(8, 1, 0)  # truncation 8 > 5 characters
  x, y = examples.span_corrupt(_ids(10, 15), rng, 16)
  assert rng.calls == [(4, 15), (1, 3), (0, 5)]
  np.testing.assert_array_equal(x, [1, 11, 12, 13, 14, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(y, [11, 12, 13, 14, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])


def test_span_corrupt_empty_doc():
  rng = ScriptedRng(14, 0, 0)
  x, y = examples.span_corrupt(np.zeros(0, np.int32), rng, 16)
  assert rng.calls == [(4, 15), (0, 1), (0, 1)]
  np.testing.assert_array_equal(x, [1, 1] + [0] * 13)
  np.testing.assert_array_equal(y, [1] + [0] * 14)
  assert np.count_nonzero(y != PAD) == 1


def test_span_corrupt_does_not_modify_input():
  doc = _ids(10, 20)
  examples.span_corrupt(doc, ScriptedRng(8, 2, 3), 16)
  np.testing.assert_array_equal(doc, _ids(10, 20))


# ---------------------------------------------------------------- span corruption, real rng

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


def test_span_corrupt_statistics():
  rng = np.random.default_rng(0)
  doc = _ids(2, 202)  # 200 distinct ids: longer than any truncation
  draws = 20000
  lengths, ratios, prefixes = [], [], collections.Counter()
  for _ in range(draws):
    x, y = examples.span_corrupt(doc, rng, 128)
    assert x.shape == y.shape == (127,) and x.dtype == np.int32
    prefix, masked, suffix = _parse(x, y)
    n, m, p = len(prefix) + len(masked) + len(suffix), len(masked), len(prefix)
    # the pieces put back together are exactly the truncated document
    np.testing.assert_array_equal(np.concatenate([prefix, masked, suffix]), doc[:n])
    lo, hi = examples.masked_length_range(n)
    assert lo <= m <= hi
    lengths.append(n)
    ratios.append(m / n)
    prefixes["first" if p == 0 else "last" if p == n - m else "middle"] += 1
  counts = np.bincount(lengths, minlength=113)
  assert min(lengths) == 4 and max(lengths) == 112
  assert np.all(counts[4:] > 0) and np.all(counts[:4] == 0)
  expected = draws / 109
  chi2 = ((counts[4:] - expected) ** 2 / expected).sum()
  assert chi2 < 180  # 108 degrees of freedom: mean 108, sd ~15
  assert abs(np.mean(lengths) - 58) < 1.0
  assert 0.24 < np.mean(ratios) < 0.26  # ~ n/4 (bounds rounded to nearest)
  assert prefixes["first"] > 0 and prefixes["last"] > 0 and prefixes["middle"] > draws / 2


def test_span_corrupt_short_docs_real_rng():
  rng = np.random.default_rng(1)
  for length in (0, 1, 3, 4, 10):
    doc = _ids(2, 2 + length)
    for _ in range(50):
      x, y = examples.span_corrupt(doc, rng, 16)
      prefix, masked, suffix = _parse(x, y)
      n = len(prefix) + len(masked) + len(suffix)
      assert n == length if length <= 4 else 4 <= n <= length
      np.testing.assert_array_equal(np.concatenate([prefix, masked, suffix]), doc[:n])
      lo, hi = examples.masked_length_range(n)
      assert lo <= len(masked) <= hi


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

"""Span corruption and QA encoding as pure functions of token ids -> (x, y) int32 arrays.

Both return x = s[:-1] and y = s[1:] for a sequence s of block_size ids (so block_size - 1
positions); y == PAD is ignored by the loss.
"""
from __future__ import annotations

import numpy as np

from birthjax.vocab import MASK, PAD


def truncation_range(block_size: int) -> tuple[int, int]:
  """Inclusive range of the truncation length L, as the reference: randint(4, int(T*7/8))."""
  return 4, int(block_size * 7 / 8)


def masked_length_range(n: int) -> tuple[int, int]:
  """Inclusive range of the masked span length for a truncated document of n characters.

  Uniform on [round(n/8), round(3n/8)], at least 1 (0 for an empty document): mean ~ n/4,
  as the handout asks.
  """
  if n == 0:
    return 0, 0
  return max(1, (n + 4) // 8), max(1, (3 * n + 4) // 8)


def span_corrupt(doc: np.ndarray, rng: np.random.Generator, block_size: int):
  """`prefix + MASK + suffix + MASK + masked + PAD...` of one document (ids), as (x, y)."""
  lo, hi = truncation_range(block_size)
  n = len(doc[: rng.integers(lo, hi + 1)])  # a shorter document stays whole
  m_lo, m_hi = masked_length_range(n)
  m = int(rng.integers(m_lo, m_hi + 1))
  p = int(rng.integers(0, n - m + 1))
  return corrupt(doc, n, m, p, block_size)


def corrupt(doc: np.ndarray, n: int, m: int, p: int, block_size: int):
  """The span-corrupted example of `doc[:n]` with the span doc[p:p+m] masked, as (x, y).

  The draws (n, m, p) are made by `span_corrupt` here, or with jax.random on device
  (birthjax.device_epoch): given the same draws both build the same example.
  """
  doc = doc[:n]
  s = np.full(block_size, PAD, np.int32)
  seq = np.concatenate([doc[:p], [MASK], doc[p + m:], [MASK], doc[p:p + m]])
  s[: len(seq)] = seq
  return s[:-1], s[1:]


def qa_example(question: np.ndarray, answer: np.ndarray, block_size: int):
  """`question + MASK + answer + MASK + PAD...`; targets before the first MASK's are PAD."""
  s = np.full(block_size, PAD, np.int32)
  seq = np.concatenate([question, [MASK], answer, [MASK]])
  if len(seq) > block_size:
    raise ValueError(f"question+answer is {len(seq)} > block_size {block_size} ids")
  s[: len(seq)] = seq
  y = s[1:].copy()
  y[: max(0, len(question) - 1)] = PAD
  return s[:-1], y


def prompt(question: np.ndarray) -> np.ndarray:
  """The decoding prompt `question + MASK`."""
  return np.concatenate([question, [MASK]]).astype(np.int32)

"""The reference's example rules: span corruption's ranges (the draws themselves are made on
the device, birthjax.train.device_epoch), the QA example and the decoding prompt.

Examples are x = s[:-1] and y = s[1:] for a sequence s of block_size ids (so block_size - 1
positions); y == PAD is ignored by the loss.
"""
from __future__ import annotations

import numpy as np

from birthjax.data.vocab import MASK, PAD


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


def qa_example(question: np.ndarray, answer: np.ndarray, block_size: int, sep: bool = True):
  """`question + MASK + answer + MASK + PAD...`; targets before the first MASK's are PAD.
  sep=False (data.recite_from=title): `question + answer + MASK`, the answer continuing the
  question (a title) as its wiki.txt line does; targets before the answer's are PAD."""
  s = np.full(block_size, PAD, np.int32)
  seq = np.concatenate([question, [MASK] if sep else [], answer, [MASK]])
  if len(seq) > block_size:
    raise ValueError(f"question+answer is {len(seq)} > block_size {block_size} ids")
  s[: len(seq)] = seq
  y = s[1:].copy()
  y[: max(0, len(question) - 1)] = PAD
  return s[:-1], y


def prompt(question: np.ndarray) -> np.ndarray:
  """The decoding prompt `question + MASK`."""
  return np.concatenate([question, [MASK]]).astype(np.int32)

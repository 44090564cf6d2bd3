"""Packing: several examples per row, so no compute goes to PAD (vanilla only).

An example needs its first `length` positions, length = 1 + its last non-PAD target.
Examples are placed first-fit by decreasing length into rows of the same width; each
packed row carries `segments` (1, 2, ... per example, 0 for padding), `positions` (the
position inside the example, for the position embedding) and `row_examples` (how many
examples it holds, for the token count). With attention restricted to the same segment,
every target sees exactly the context it had unpacked: the loss, the gradients and the
token count are those of the unpacked batch (tests check it to float tolerance).
"""
from __future__ import annotations

import numpy as np

from birthjax.vocab import PAD


def example_lengths(y_BxT: np.ndarray) -> np.ndarray:
  """1 + the index of each row's last non-PAD target (0 for a row without targets)."""
  has = y_BxT != PAD
  last = np.where(has.any(1), y_BxT.shape[1] - 1 - np.argmax(has[:, ::-1], axis=1), -1)
  return last + 1


def pack(batch: dict, row_multiple: int = 8) -> dict:
  """Pack the real rows (row_mask) of {'x','y','row_mask'} into as few rows as fit.

  The number of rows is rounded up to a multiple of `row_multiple` (few distinct shapes,
  few compilations; a multiple of the device count).
  """
  x, y = batch["x"], batch["y"]
  width = x.shape[1]
  real = np.flatnonzero(batch["row_mask"])
  lengths = example_lengths(y[real])
  order = sorted(range(len(real)), key=lambda i: (-lengths[i], i))  # deterministic
  rows, free = [], []  # rows: list of [(example, length)], free: space left per row
  for i in order:
    n = max(int(lengths[i]), 1)  # a row without targets still counts as an example
    for r, space in enumerate(free):
      if n <= space:
        rows[r].append((i, n))
        free[r] -= n
        break
    else:
      rows.append([(i, n)])
      free.append(width - n)
  n_rows = max(1, -(-len(rows) // row_multiple) * row_multiple)
  out = {k: np.zeros((n_rows, width), np.int32) for k in ("x", "y", "segments", "positions")}
  row_examples = np.zeros(n_rows, np.int32)
  for r, row in enumerate(rows):
    at = 0
    for s, (i, n) in enumerate(row, 1):
      src = real[i]
      out["x"][r, at:at + n] = x[src, :n]
      out["y"][r, at:at + n] = y[src, :n]
      out["segments"][r, at:at + n] = s
      out["positions"][r, at:at + n] = np.arange(n)
      at += n
    row_examples[r] = len(row)
  out["row_examples"] = row_examples
  return out

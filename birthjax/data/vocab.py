"""Character vocabulary: PAD=0, MASK=1, then the sorted distinct characters of wiki.txt.

Built once from the pretraining text (as the A5 reference does) and shared by
pretraining, finetuning and evaluation.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from birthjax.errors import UserError

PAD_CHAR = "\u25A1"  # empty square
MASK_CHAR = "\u2047"  # double question mark
PAD, MASK = 0, 1


@dataclasses.dataclass(frozen=True)
class Vocab:
  chars: tuple[str, ...]  # index -> character; chars[0] = PAD_CHAR, chars[1] = MASK_CHAR

  @classmethod
  def from_documents(cls, documents: Sequence[str]) -> "Vocab":
    """Vocabulary of '\\n'.join(documents), i.e. of the whole wiki.txt text."""
    text_chars = set("".join(documents))
    if len(documents) > 1:
      text_chars.add("\n")
    for special in (PAD_CHAR, MASK_CHAR):
      if special in text_chars:
        raise UserError(f"the pretraining text contains the reserved character {special!r}",
                        "wiki.txt", "remove it from the corpus")
    return cls((PAD_CHAR, MASK_CHAR) + tuple(sorted(text_chars)))

  def __len__(self) -> int:
    return len(self.chars)

  @property
  def stoi(self) -> dict[str, int]:
    return {c: i for i, c in enumerate(self.chars)}

  def encode(self, text: str, where: str = "") -> np.ndarray:
    stoi = self.stoi
    out = np.empty(len(text), np.int32)
    for i, c in enumerate(text):
      if c not in stoi:
        raise UserError(f"character {c!r} (U+{ord(c):04X}) at column {i + 1} is not in the vocabulary",
                        where or repr(text),
                        "the vocabulary is built from wiki.txt: remove the character or add text that "
                        "contains it to wiki.txt")
      out[i] = stoi[c]
    return out

  def decode(self, ids) -> str:
    """Ids to text; an id past this vocabulary (the model's table can be larger, e.g. 256
    rows for the 71 characters of the synthetic world) decodes to U+FFFD."""
    n = len(self.chars)
    return "".join(self.chars[int(i)] if 0 <= int(i) < n else "\ufffd" for i in ids)

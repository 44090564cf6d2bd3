"""Knowledge-augmented pretraining records (`pretrain.augment.*`; all off by default).

The faithful recipe makes one record per wiki.txt document and truncates it to a random
length in [4, 7/8 block_size] before span corruption, so the birth place (often 50-150
characters into a line) is frequently cut off, and each biography is read once an epoch.
This module builds the pretraining records of the augmented recipe instead:

- `whole`: a document is split into windows that fit block_size (block_size - 2 characters,
  room for the two MASKs), at word boundaries, covering every character; each window is
  span-corrupted without the random truncation.
- `name_prefix` (with `whole`): every later window starts with the person's name (`name_of`:
  the line's title "NAME." of the A5 format, else the text before " was ", else the first
  two words), so each window says whose fact it holds.
- `name_visible`: the masked span never covers the name at the start of a window, so every
  example trains "name -> a part of the biography", the direction a question needs.
- `copies`: each window appears k times an epoch, each corrupted independently.
- `crops`: k extra records a document an epoch, each the name followed by the document from
  a random word on (`crop`, drawn at encode time): the same facts behind ever different
  contexts, some right after the name ("NAME. Paris and wrote ..."), so the model has to
  tie them to the name itself (after Allen-Zhu & Li's knowledge augmentation, label-free;
  no gain measured on the quick start, off in configs/augmented.py).
- `shift`: every document example (not the QA ones) starts 0..shift positions late, after
  PAD inputs (whose targets are ignored). The model's position embeddings are learned and
  absolute: a biography always at position 0 ties its facts to those positions, and a
  question puts the name at position 10 ("Where was NAME"), where the faithful model
  recalls far less (measured on the quick start: the own line, prefixed by 10 characters,
  is completed with the birth place for 4 of 25 dev people instead of 20). Windows and
  crops leave room for the shift.
  `shift_text`: the shifted positions hold the tail of a random other document instead of
  PAD (no targets there), so the name follows real text, as in a question (it made
  shifted recall position-proof but did not help the questions; off).
- `qa_copies`: the finetuning train pairs (data.finetune ONLY, never dev or test) are mixed
  in, k times each an epoch, encoded exactly as examples.qa_example.

Records are tuples: (DOC, window ids, name length to keep visible), (CROP, document ids,
name length, word starts) or (QA, question ids, answer ids); birthjax.data.records turns them
into the rows of a table (a crop's word start drawn once an epoch) and the engine
(birthjax.train.device_epoch) span-corrupts and shifts them on the device. Document and QA
records are interleaved evenly (so an unshuffled epoch mixes them too).
"""
from __future__ import annotations

import re

import numpy as np

from birthjax.data.vocab import Vocab

DOC, QA, CROP = 0, 1, 2
MAX_TITLE = 60  # characters: a longer "title" is not a name


def enabled(aug) -> bool:
  """Whether a `pretrain.augment` config changes anything (None or all off: the faithful path)."""
  return aug is not None and bool(aug.whole or aug.name_visible or aug.copies != 1
                                  or aug.get("crops", 0) > 0 or aug.get("shift", 0) > 0
                                  or aug.qa_copies > 0)


def name_of(text: str) -> str:
  """The person's name at the start of a biography line.

  The A5 (and synthetic) line is "NAME. text": the text before the first ". " whose
  preceding word is not an initial ("A. G. E. Blake.", "J.C. Patterson."). Otherwise the
  text before " was " (if at most MAX_TITLE characters), else the first two words.
  """
  for m in re.finditer(r"\. ", text[:MAX_TITLE + 2]):
    word = text[:m.start()].rsplit(" ", 1)[-1]
    if len(word) > 1 and "." not in word:
      return text[:m.start() + 1]  # the title with its '.'
  i = text.find(" was ")
  if 0 < i <= MAX_TITLE:
    return text[:i]
  return " ".join(text.split(" ")[:2])


def split_document(doc: np.ndarray, name_len: int, capacity: int, name_prefix: bool,
                   space_id: int | None):
  """Windows of at most `capacity` ids whose bodies cover the document exactly.

  Window 0 is doc[0:e0]; window k > 0 is (name +) doc[s_k:e_k] with s_k = e_{k-1}. A window
  that does not reach the document's end ends before its last space (if that space lies in
  the window's second half), so words are not cut; the space starts the next window, which
  thus reads "NAME. rest". The name is left out when it would fill more than half a window.
  Returns [(window ids int32, number of leading name ids in it)]; an empty document gives one
  empty window.
  """
  name = doc[:name_len]
  use_name = name_prefix and 0 < name_len <= capacity // 2
  out, start = [], 0
  while True:
    head = name if (use_name and start > 0) else doc[:0]
    room = capacity - len(head)
    end = min(len(doc), start + room)
    if end < len(doc) and space_id is not None:
      spaces = np.flatnonzero(doc[start + room // 2 + 1:end] == space_id)
      if len(spaces):
        end = start + room // 2 + 1 + int(spaces[-1])
    body = doc[start:end]
    keep = len(head) if start > 0 else min(name_len, len(body))
    out.append((np.concatenate([head, body]).astype(np.int32), keep))
    if end >= len(doc):
      return out
    start = end


def word_starts(doc: np.ndarray, name_len: int, space_id: int | None) -> np.ndarray:
  """Positions after the name where a word starts (a non-space after a space)."""
  if space_id is None or len(doc) <= name_len + 1:
    return np.zeros(0, np.int64)
  i = np.arange(name_len + 1, len(doc))
  return i[(doc[i - 1] == space_id) & (doc[i] != space_id)]


def crop(doc: np.ndarray, name_len: int, starts: np.ndarray, rng: np.random.Generator,
         capacity: int) -> np.ndarray:
  """The name, then the document from a random word start (the space before it included),
  cut to `capacity` ids. Without a word start after the name: the document's start."""
  if not len(starts):
    return doc[:capacity]
  start = int(starts[rng.integers(len(starts))]) - 1  # the space before the word
  return np.concatenate([doc[:name_len], doc[start:start + capacity - name_len]])


def interleave(parts: list[list]) -> list:
  """Merge lists evenly: item i of a list of n sits at (i + 0.5) / n; ties keep list order."""
  keyed = [((i + 0.5) / len(p), j, i, x) for j, p in enumerate(parts) for i, x in enumerate(p)]
  return [x for *_, x in sorted(keyed, key=lambda t: t[:3])]


def pretrain_records(documents, finetune, vocab: Vocab, aug, block_size: int) -> list:
  """The records of one pretraining epoch (see the module docstring).

  `finetune` must be the finetuning TRAIN pairs (input_pipeline.Data.finetune): they are
  the only QA pairs that may reach pretraining.
  """
  capacity = block_size - 2 - aug.get("shift", 0)
  space = vocab.stoi.get(" ")
  docs = []
  for doc in documents:
    name_len = len(name_of(vocab.decode(doc))) if len(doc) else 0
    if aug.whole:
      parts = split_document(doc, name_len, capacity, aug.name_prefix, space)
    else:
      parts = [(doc, name_len)]
    docs += [(DOC, w, k if aug.name_visible else 0) for w, k in parts]
  docs = docs * aug.copies
  if aug.get("crops", 0):
    crops = []
    for doc in documents:
      if len(doc):
        name_len = len(name_of(vocab.decode(doc)))
        crops.append((CROP, doc, name_len, word_starts(doc, name_len, space)))
    docs = interleave([docs, crops * aug.crops])
  qa = [(QA, q, a) for q, a in finetune] * aug.qa_copies
  return interleave([docs, qa]) if qa else docs

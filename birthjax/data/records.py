"""A stage's records as one table of arrays: what the training engine (birthjax.train.device_epoch)
builds every example from, on the device.

One row a record, every array [N] or [N, T] (T = block_size):
  ids    corrupt rows: the text to span-corrupt (PAD after `lens`); QA rows: the whole
         sequence `question MASK answer MASK PAD...` (examples.qa_example)
  lens   corrupt rows: the ids available, the truncation's upper bound; QA rows: the
         sequence's length
  keep   corrupt rows: leading ids (the name) the masked span avoids when it can; QA rows:
         the question's length (its targets before the question's last character are PAD)
  trunc  corrupt rows: draw the reference's random truncation; else the whole row is used
  qa     a QA row (built without randomness)
  shift  the example starts 0..shift positions late
and, for the whole table, `fill` [F, T] / `fill_lens` [F]: the tails of the documents whose
last ids fill a shift (F = 0: PAD fills it).

The faithful recipe's pretraining table is the wiki.txt documents (cut to 7/8 block_size,
the most the truncation keeps), its finetuning table the train questions. The augmented
recipe's (`pretrain.augment`, birthjax.data.augment) is built on the host, once, or once an
epoch when it has crops (a crop starts at a random word, drawn from (seed, epoch)) or a QA
schedule (`qa_from`, `qa_until`: outside it the QA rows are emptied, `without_qa`).
"""
from __future__ import annotations

import numpy as np

from birthjax.data import augment, examples
from birthjax.data.vocab import PAD

FIELDS = ("ids", "lens", "keep", "trunc", "qa", "shift")


def table(rows, block_size: int, fillers=()) -> dict:
  """The arrays of rows (ids, lens, keep, trunc, qa, shift) and of the fillers' tails."""
  n, t = len(rows), block_size
  out = {"ids": np.full((n, t), PAD, np.int32), "lens": np.zeros(n, np.int32),
         "keep": np.zeros(n, np.int32), "trunc": np.zeros(n, bool), "qa": np.zeros(n, bool),
         "shift": np.zeros(n, np.int32)}
  for i, (ids, lens, keep, trunc, qa, shift) in enumerate(rows):
    if len(ids) > t or (not qa and lens + 2 + shift > t):
      raise ValueError(f"record of {len(ids)} ids (shift {shift}) does not fit block_size {t} "
                       "with its two MASKs")
    out["ids"][i, :len(ids)] = ids
    out["lens"][i], out["keep"][i], out["trunc"][i] = lens, keep, trunc
    out["qa"][i], out["shift"][i] = qa, shift
  out["fill"] = np.full((len(fillers), t), PAD, np.int32)
  out["fill_lens"] = np.zeros(len(fillers), np.int32)
  for i, doc in enumerate(fillers):
    tail = doc[-t:] if len(doc) else doc
    out["fill"][i, :len(tail)] = tail
    out["fill_lens"][i] = len(tail)
  return out


def _document(doc, block_size: int, shift: int = 0, keep: int = 0):
  """A row of the faithful truncation: at most 7/8 block_size ids (and room for the shift)."""
  cap = min(examples.truncation_range(block_size)[1], block_size - shift - 2)
  ids = np.asarray(doc[:cap], np.int32)
  return ids, len(ids), keep, True, False, shift


def _window(ids, keep: int, shift: int):
  """A row span-corrupted whole (no truncation)."""
  return np.asarray(ids, np.int32), len(ids), keep, False, False, shift


def _qa(question, answer, block_size: int, sep: bool = True):
  x, y = examples.qa_example(question, answer, block_size, sep)
  return (np.concatenate([x, y[-1:]]), len(question) + len(answer) + 1 + sep, len(question),
          False, True, 0)


def pretrain(documents, block_size: int) -> dict:
  """The faithful recipe: one row a wiki.txt document."""
  return table([_document(d, block_size) for d in documents], block_size)


def finetune(pairs, block_size: int, sep: bool = True) -> dict:
  """The QA examples of the finetuning pairs (sep: examples.qa_example's)."""
  return table([_qa(q, a, block_size, sep) for q, a in pairs], block_size)


def augmented(documents, finetune_pairs, vocab, aug, block_size: int, seed: int, epoch: int,
              sep: bool = True):
  """The augmented recipe's table of one epoch (birthjax.data.augment.pretrain_records)."""
  shift = aug.get("shift", 0)
  rng = np.random.default_rng([seed, epoch])  # the crops' word starts
  rows = []
  for record in augment.pretrain_records(documents, finetune_pairs, vocab, aug, block_size):
    if record[0] == augment.QA:
      rows.append(_qa(record[1], record[2], block_size, sep))
    elif record[0] == augment.CROP:
      _, doc, name_len, starts = record
      w = augment.crop(doc, name_len, starts, rng, block_size - shift - 2)
      rows.append(_window(w, min(name_len, len(w)), shift))
    elif aug.whole:
      rows.append(_window(record[1], record[2], shift))
    else:
      rows.append(_document(record[1], block_size, shift, record[2]))
  fillers = documents if aug.get("shift_text") else ()
  return table(rows, block_size, fillers)


def qa_live(aug, epochs: int, epoch: int) -> bool:
  """Whether the mixed-in QA rows train in this pretraining epoch: the epochs e with
  qa_from <= e / epochs < qa_until (`pretrain.augment.qa_from`, `qa_until`; default 0, 1)."""
  return aug.get("qa_from", 0.0) * epochs <= epoch < aug.get("qa_until", 1.0) * epochs


def scheduled(aug) -> bool:
  return aug.get("qa_copies", 0) > 0 and (aug.get("qa_from", 0.0), aug.get("qa_until", 1.0)) != (0.0, 1.0)


def without_qa(table: dict) -> dict:
  """The table with its QA rows emptied (all PAD, length 0: no targets, no loss), so an
  epoch keeps its records, steps and lr schedule while the questions are off."""
  out = dict(table)
  qa = table["qa"]
  out["ids"] = np.where(qa[:, None], PAD, table["ids"]).astype(np.int32)
  out["lens"] = np.where(qa, 0, table["lens"]).astype(np.int32)
  out["keep"] = np.where(qa, 0, table["keep"]).astype(np.int32)
  return out


def plan_epoch(stage: str, config) -> int:
  """An epoch whose table is the fullest (packing sizes its rows on it): the first with the
  QA rows live when they are scheduled, else 0."""
  aug = config.pretrain.get("augment")
  if stage != "pretrain" or not augment.enabled(aug) or not scheduled(aug):
    return 0
  epochs = config.pretrain.epochs
  return next((e for e in range(epochs) if qa_live(aug, epochs, e)), 0)


def stage_tables(stage: str, config, data):
  """(table_of(epoch), changes every epoch?) of a stage's records."""
  block, aug = config.model.block_size, config.pretrain.get("augment")
  if stage == "finetune":
    t = finetune(data.finetune, block, data.qa_sep)
  elif not augment.enabled(aug):
    t = pretrain(data.documents, block)
  else:
    make = lambda e: augmented(data.documents, data.finetune, data.vocab, aug, block,
                               config.seed, e, data.qa_sep)
    crops, timed = aug.get("crops", 0), scheduled(aug)
    if not crops and not timed:
      t = make(0)
      return (lambda e: t), False
    fixed = None if crops else make(0)
    def table_of(e):
      t = make(e) if crops else fixed
      return t if not timed or qa_live(aug, config.pretrain.epochs, e) else without_qa(t)
    return table_of, True
  return (lambda e: t), False

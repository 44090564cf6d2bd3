"""Which people and questions a run uses: `data.people` (a fixed subset of the people, for a
fast proxy of the full data) and `data.val_questions` (train questions held out as `val`).

- `data.people=N` (0: everyone): the N biographies (non-empty wiki.txt lines) whose SHA-256
  is smallest, so the choice depends on nothing but the text and a smaller N is a subset of
  a larger one; empty lines are kept (the reference trains on the trailing empty document).
  A question is kept when a kept biography starts with its NAME and "." (train, dev and
  test alike): a person's line and questions go together.
- `data.val_questions=N` (0: none): N of the (kept) train questions, chosen by
  `data.val_seed` (not the run's seed, so runs with different seeds share one val split), leave
  finetuning and every pretraining mix and are evaluated as the split `val`; the rest keep
  their file order.

`share` is the kept fraction of the documents: run.py scales the stages' token counts by it,
so the lr schedule has the same shape over epochs as on the full data.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from birthjax.errors import UserError

_NAME = re.compile(r"Where was (.*) born\?")


def name_of(question: str) -> str:
  """The NAME of 'Where was NAME born?' (else the question without a trailing '?')."""
  m = _NAME.search(question)
  return m.group(1) if m else question.rstrip("?")


def people(docs: list[str], n: int) -> list[int]:
  """Indices (in file order) of the documents a run keeps: every one when n == 0, else the
  n non-empty ones of smallest SHA-256, and the empty ones."""
  if not n:
    return list(range(len(docs)))
  full = [i for i, d in enumerate(docs) if d]
  if n > len(full):
    raise UserError(f"data.people={n} is more than the {len(full)} people (biographies) in the data",
                    "--config.data.people", f"use at most {len(full)} (0: everyone)")
  ranked = sorted(full, key=lambda i: hashlib.sha256(docs[i].encode("utf-8")).digest())
  return sorted(set(ranked[:n]) | {i for i, d in enumerate(docs) if not d})


def _owned(questions, docs) -> list[bool]:
  """Whether some document starts with each question's NAME + '.' (or does once its
  non-ASCII characters are dropped, as the reference drops them from the train file)."""
  starts = {}
  for d in docs:
    for text in {d, d.encode("ascii", "ignore").decode("ascii")}:
      starts.setdefault(text[:1], []).append(text)
  return [any(d.startswith(name + ".") for d in starts.get(name[:1], ()))
          for name in map(name_of, questions)]


def hold_out(n_train: int, n: int, seed: int) -> list[int]:
  """Indices (sorted) of the n train questions held out as `val`, drawn with numpy's
  PCG64 generator from `seed`."""
  if n >= n_train:
    raise UserError(f"data.val_questions={n} leaves no train questions ({n_train} in all)",
                    "--config.data.val_questions", f"use fewer than {n_train} (0: no val split)")
  return sorted(np.random.default_rng(seed).permutation(n_train)[:n].tolist())


def select(docs, train, eval_sets, data_cfg):
  """(docs, train, eval_sets, share): the run's documents, finetuning pairs and evaluation
  splits ({split: (questions, answers or None)}, plus 'val' with data.val_questions)."""
  n_people, n_val = data_cfg.get("people", 0), data_cfg.get("val_questions", 0)
  keep = people(docs, n_people)
  share = len(keep) / len(docs)
  if n_people:
    docs = [docs[i] for i in keep]
    train = [p for p, ok in zip(train, _owned([q for q, _ in train], docs)) if ok]
    sets = {}
    for split, (questions, answers) in eval_sets.items():
      ok = _owned(questions, docs)
      sets[split] = ([q for q, k in zip(questions, ok) if k],
                     None if answers is None else [a for a, k in zip(answers, ok) if k])
    eval_sets = sets
  if n_val:
    held = set(hold_out(len(train), n_val, data_cfg.get("val_seed", 0)))
    val = [p for i, p in enumerate(train) if i in held]
    train = [p for i, p in enumerate(train) if i not in held]
    eval_sets = {**eval_sets, "val": ([q for q, _ in val], [a.strip() for _, a in val])}
  return docs, train, eval_sets, share


def tag(data_cfg) -> tuple:
  """What of the data config changes the data a run sees beyond the files (for digests)."""
  n_people, n_val = data_cfg.get("people", 0), data_cfg.get("val_questions", 0)
  return (n_people, n_val, data_cfg.get("val_seed", 0)) if (n_people or n_val) else ()

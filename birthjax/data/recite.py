"""Recite, then answer (`data.recite`; off by default).

The pretrained model can often complete a person's own wiki.txt line with the birth place,
yet not answer the question (README, Learning curves). With `data.recite` the model is
taught to answer by first reciting what it memorised, then reading the answer from its own
recitation (after Sun et al., "Recitation-Augmented Language Models", ICLR 2023): each
finetuning TRAIN pair's target becomes

    question MASK  line[: the end of the answer's first occurrence]  MASK

where `line` is the person's own wiki.txt line (the document that starts with "NAME."): the
model recites its memory of the line through the birth place ("NAME. Born in Sheffield"),
the continuation the own-line probe finds stored (benchmarks/recall_probe.py), and closes
the recitation there. The answer is the recitation's last word: every A5 answer is one word
(2,000 train, 500 dev), preceded by a space in its line for 1,901 of the 1,903 train
answers found there. A person whose line lacks the answer (97 of 2,000 train) recites
"NAME. ANSWER". Two designs measured worse on the rope quick start (val people, 20): a MASK
before the birth place ("Born in MASK Sheffield") breaks the recall (the pretrained model
completes the line up to the answer for 14 of 20 after the question and its MASK, 0 of 20
with a MASK after the line), and a separate answer after the recitation (".. Sheffield MASK
Sheffield") is not copied from it: 0 of 20 right, with the right city recited for 4 of 6
inspected. Only train people's lines and answers build targets, and every line is
pretraining text: nothing of the dev or test answers is used. A target that does not fit
the block keeps the end of the recitation (the answer) and drops text after the title.
Decoding (`birthjax.infer.decode`, `recite=True`) prompts with `question MASK NAME.`
(`prompt`: the title is the question's own name, so the model need not learn to copy it),
lets the model write to the end of the block and answers the last word before the first
MASK it writes ("" when it writes none). Evaluation scores that answer alone, as ever.
"""
from __future__ import annotations

from birthjax.data import subsets
from birthjax.data.vocab import MASK_CHAR


def title(question: str) -> str:
  """"NAME.", how the person's wiki.txt line starts."""
  return subsets.name_of(question) + "."


def own_line(question: str, documents) -> str:
  """The wiki.txt line of the question's person (it starts with the title), else ""."""
  t = title(question)
  return next((d for d in documents if d.startswith(t)), "")


def prompt(question: str) -> str:
  """What decoding starts from: the question, its MASK and the title the recitation opens with."""
  return question + MASK_CHAR + title(question)


def recitation(question: str, line: str, answer: str) -> str:
  """`line` through the answer's first occurrence; "NAME. ANSWER" when the line lacks it."""
  a = answer.strip()
  i = line.find(a) if a else -1
  return line[:i + len(a)] if i >= 0 else f"{title(question)} {a}"


def target(question: str, answer: str, line: str, block_size: int) -> str:
  """The recitation after the question's MASK (qa_example adds the closing MASK), cut so
  that the whole example fits `block_size` ids: the title, then the recitation's end."""
  rec, room = recitation(question, line, answer), block_size - len(question) - 2
  if len(rec) <= room:
    return rec
  head = title(question) + " "
  return (head + rec[len(rec) - max(0, room - len(head)):])[-room:] if room > 0 else ""


def answer_of(recited: str) -> str:
  """The answer a recitation gives: its last word."""
  words = recited.split()
  return words[-1] if words else ""


def pairs(documents, train, block_size: int) -> list[tuple[str, str]]:
  """The (question, target) texts of the train pairs `train` [(question, answer)]."""
  return [(q, target(q, a, own_line(q, documents), block_size)) for q, a in train]

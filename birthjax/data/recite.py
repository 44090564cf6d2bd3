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
Decoding (`birthjax.infer.decode`, `recite='question'`) prompts with `question MASK NAME.`
(`prompt`: the title is the question's own name, so the model need not learn to copy it),
lets the model write to the end of the block and answers the last word before the first
MASK it writes ("" when it writes none). Evaluation scores that answer alone, as ever.

`data.recite_from=title` drops the question: the example is `NAME.` followed by the rest of
the recitation and its MASK, with no MASK between, so the recitation starts the sequence
at position 0 exactly as the line does in pretraining, and decoding prompts with `NAME.`
alone (the question's own name, as above). After `question MASK NAME.` a pretrained model
on the 300-person A5 proxy writes a generic "born in CITY" (README); from the title alone
it recites its memory of the person's line.
"""
from __future__ import annotations

from birthjax.data import subsets
from birthjax.data.vocab import MASK_CHAR

MODES = ("question", "title")  # data.recite_from


def mode(data_cfg) -> str:
  """"" without data.recite, else data.recite_from ('question' or 'title')."""
  return data_cfg.get("recite_from", "question") if data_cfg.get("recite", False) else ""


def title(question: str) -> str:
  """"NAME.", how the person's wiki.txt line starts."""
  return subsets.name_of(question) + "."


def own_line(question: str, documents) -> str:
  """The wiki.txt line of the question's person (it starts with the title), else ""."""
  t = title(question)
  return next((d for d in documents if d.startswith(t)), "")


def prompt(question: str, mode: str = "question") -> str:
  """What decoding starts from: the question, its MASK and the title the recitation opens
  with; mode 'title': the title alone."""
  return title(question) if mode == "title" else question + MASK_CHAR + title(question)


def recitation(question: str, line: str, answer: str) -> str:
  """`line` through the answer's first occurrence; "NAME. ANSWER" when the line lacks it."""
  a = answer.strip()
  i = line.find(a) if a else -1
  return line[:i + len(a)] if i >= 0 else f"{title(question)} {a}"


def target(question: str, answer: str, line: str, block_size: int, mode: str = "question") -> str:
  """The recitation after the question's MASK (qa_example adds the closing MASK), cut so
  that the whole example fits `block_size` ids: the title, then the recitation's end.
  mode 'title': the same cut of the recitation with no question before it, less the title
  (the example's prompt)."""
  rec = recitation(question, line, answer)
  if mode == "title":
    return _cut(question, rec, block_size - 1)[len(title(question)):]
  return _cut(question, rec, block_size - len(question) - 2)


def _cut(question: str, rec: str, room: int) -> str:
  """`rec` if it fits `room` characters, else its title and a space, then its end."""
  if len(rec) <= room:
    return rec
  head = title(question) + " "
  return (head + rec[len(rec) - max(0, room - len(head)):])[-room:] if room > 0 else ""


def answer_of(recited: str) -> str:
  """The answer a recitation gives: its last word."""
  words = recited.split()
  return words[-1] if words else ""


def pairs(documents, train, block_size: int, mode: str = "question") -> list[tuple[str, str]]:
  """The (prompt, target) texts of the train pairs `train` [(question, answer)]: the prompt
  is the question, or its title in mode 'title'."""
  return [(title(q) if mode == "title" else q, target(q, a, own_line(q, documents), block_size, mode))
          for q, a in train]

"""Recite, then answer (`data.recite`; off by default).

The pretrained model can often complete a person's own wiki.txt line with the birth place,
yet not answer the question (README, Learning curves). With `data.recite` the model is
taught to answer by first reciting what it memorised, then reading the answer from its own
recitation (after Sun et al., "Recitation-Augmented Language Models", ICLR 2023): each
finetuning TRAIN pair's target becomes

    question MASK  line[: end of the answer's first occurrence]  MASK  answer MASK

where `line` is the person's own wiki.txt line (the document that starts with "NAME."); a
line without the answer is recited whole. Only train people's lines and answers build
targets, and every line is pretraining text: nothing of the dev or test answers is used.
A person without a line recites the title "NAME." alone. A target that does not fit the
block keeps the start of the recitation and the whole answer. Decoding
(`birthjax.infer.decode`, `recite=True`) prompts with `question MASK NAME.` (`prompt`: the
title is the question's own name, so the model need not learn to copy it from 2,000
examples), lets the model write to the end of the block and reads the answer between the
first and second MASK of what it wrote (a continuation without a MASK answers "").
Evaluation scores that answer alone, as ever.
"""
from __future__ import annotations

from birthjax.data import subsets
from birthjax.data.vocab import MASK_CHAR


def title(question: str) -> str:
  """"NAME.", how the person's wiki.txt line starts."""
  return subsets.name_of(question) + "."


def own_line(question: str, documents) -> str:
  """The wiki.txt line of the question's person, else the title alone."""
  t = title(question)
  return next((d for d in documents if d.startswith(t)), t)


def prompt(question: str) -> str:
  """What decoding starts from: the question, its MASK and the title the recitation opens with."""
  return question + MASK_CHAR + title(question)


def recitation(line: str, answer: str) -> str:
  """`line` up to the answer's first occurrence; the whole line without one."""
  i = line.find(answer.strip()) if answer.strip() else -1
  return line if i < 0 else line[:i]


def target(question: str, answer: str, line: str, block_size: int) -> str:
  """The text after the question's MASK: recitation MASK answer (the closing MASK is
  qa_example's), the recitation cut so that the whole example fits `block_size` ids."""
  room = block_size - len(question) - len(answer) - 3  # the three MASKs
  return recitation(line, answer)[:max(0, room)] + MASK_CHAR + answer


def pairs(documents, train, block_size: int) -> list[tuple[str, str]]:
  """The (question, target) texts of the train pairs `train` [(question, answer)]."""
  return [(q, target(q, a, own_line(q, documents), block_size)) for q, a in train]

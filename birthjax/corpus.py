"""Read and validate the four A5 files into plain Python lists, with the reference's rules.

- wiki.txt: the whole text split on '\\n'; the trailing empty string is KEPT (2,938
  documents for the A5 file, one empty), as the reference's CharCorruptionDataset does.
- finetuning TSV (birth_places_train.tsv): read as ASCII, dropping non-ASCII characters,
  as the reference's NameDataset does; lines are `question<TAB>answer`.
- evaluation TSVs (birth_dev.tsv, birth_test_inputs.tsv): NOT filtered; line endings are
  stripped from the question (the reference keeps '\\n' in test prompts, see README); the
  answer column is stripped; a file without a TAB has no answers.
"""
from __future__ import annotations

import os

from birthjax.errors import UserError

WIKI = "wiki.txt"
TRAIN = "birth_places_train.tsv"
DEV = "birth_dev.tsv"
TEST = "birth_test_inputs.tsv"
FILES = (WIKI, TRAIN, DEV, TEST)


def path_of(data_dir: str, name: str) -> str:
  path = os.path.join(data_dir, name)
  if not os.path.isfile(path):
    raise UserError(f"missing data file {name}", os.path.abspath(path),
                    "point --config.data.dir at the folder holding the four A5 files "
                    f"({', '.join(FILES)}), or use --config.data.source=synthetic")
  return path


def _read_text(path: str) -> str:
  try:
    with open(path, encoding="utf-8", newline="") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise UserError(f"file is not valid UTF-8 ({e.reason} at byte {e.start})", path,
                    "re-save the file as UTF-8") from None
  return text.lstrip("\ufeff").replace("\r\n", "\n")


def read_wiki(data_dir: str) -> list[str]:
  """Documents of wiki.txt, exactly `text.split('\\n')` (trailing empty document kept)."""
  return _read_text(path_of(data_dir, WIKI)).split("\n")


def _lines(text: str) -> list[str]:
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # the reference's len(data) - 1 drops this trailing empty line
  return lines


def read_finetune(data_dir: str, name: str = TRAIN) -> list[tuple[str, str]]:
  """(question, answer) pairs of a finetuning TSV, non-ASCII characters dropped."""
  path = path_of(data_dir, name)
  text = _read_text(path).encode("utf-8").decode("ascii", errors="ignore")
  pairs = []
  for n, line in enumerate(_lines(text), 1):
    parts = line.split("\t")
    if len(parts) != 2:
      raise UserError(f"line {n} has {len(parts) - 1} tabs, expected exactly one "
                      "(question<TAB>answer)", f"{path}:{n}", "fix or remove that line")
    pairs.append((parts[0], parts[1]))
  if not pairs:
    raise UserError("the finetuning file is empty", path, "give at least one question<TAB>answer line")
  return pairs


def read_eval(data_dir: str, name: str) -> tuple[list[str], list[str] | None]:
  """Questions and (stripped) answers of an evaluation TSV; answers is None without a TAB."""
  path = path_of(data_dir, name)
  lines = _lines(_read_text(path))
  if not lines:
    raise UserError("the question file is empty", path, "give at least one question")
  has_answers = "\t" in lines[0]
  questions, answers = [], []
  for n, line in enumerate(lines, 1):
    parts = line.rstrip("\r\n").split("\t")
    if has_answers != (len(parts) > 1):
      raise UserError(f"line {n} {'lacks' if has_answers else 'has'} an answer column, unlike line 1",
                      f"{path}:{n}", "give every line `question<TAB>answer`, or none an answer")
    questions.append(parts[0])
    if has_answers:
      answers.append(parts[1].strip())
  return questions, answers if has_answers else None

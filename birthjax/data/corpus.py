"""Read and validate the four A5 files into plain Python lists, with the reference's rules.

- wiki.txt: the whole text split on '\\n'; the trailing empty string is KEPT (2,938
  documents for the A5 file, one empty), as the reference's CharCorruptionDataset does.
- finetuning TSV (birth_places_train.tsv): read as ASCII, dropping non-ASCII characters,
  as the reference's NameDataset does; lines are `question<TAB>answer`.
- evaluation TSVs (birth_dev.tsv, birth_test_inputs.tsv): NOT filtered; line endings are
  stripped from the question (the reference keeps '\\n' in test prompts, see README); the
  answer column is stripped; a file without a TAB has no answers.

Bad input is a UserError naming the file (and line): a missing file or a folder in its
place, unreadable or non-UTF-8 bytes, an empty file, a TSV line with the wrong number of
tabs or an empty answer, PAD/MASK characters in wiki.txt. A UTF-8 BOM and CRLF line endings are accepted.
"""
from __future__ import annotations

import os

from birthjax.data import vocab
from birthjax.errors import UserError

WIKI = "wiki.txt"
TRAIN = "birth_places_train.tsv"
DEV = "birth_dev.tsv"
TEST = "birth_test_inputs.tsv"
FILES = (WIKI, TRAIN, DEV, TEST)


def path_of(data_dir: str, name: str) -> str:
  path = os.path.join(data_dir, name)
  if os.path.isdir(path):
    raise UserError(f"data file {name} is a folder, not a file", os.path.abspath(path),
                    f"put the file {name} there (move that folder away), or point "
                    "--config.data.dir at the folder holding the four A5 files")
  if not os.path.isfile(path):
    raise UserError(f"missing data file {name}", os.path.abspath(path),
                    "point --config.data.dir at the folder holding the four A5 files "
                    f"({', '.join(FILES)}), or use --config.data.source=synthetic")
  return path


def read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise UserError(f"cannot read {os.path.basename(path)} ({e.strerror or e})",
                    os.path.abspath(path), "make the file readable (check its permissions)") from None


def _read_text(path: str) -> str:
  raw = read_bytes(path)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    raise UserError(f"{os.path.basename(path)} is not valid UTF-8 ({e.reason}: byte "
                    f"0x{raw[e.start]:02x} at line {line}, byte {col} of the line)",
                    f"{path}:{line}", "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                    ) from None
  return text.lstrip("\ufeff").replace("\r\n", "\n")


def read_wiki(data_dir: str) -> list[str]:
  """Documents of wiki.txt, exactly `text.split('\\n')` (trailing empty document kept)."""
  path = path_of(data_dir, WIKI)
  docs = _read_text(path).split("\n")
  if not any(docs):
    raise UserError("the pretraining text wiki.txt is empty", path,
                    "give one biography (document) a line")
  for n, doc in enumerate(docs, 1):
    for c in (vocab.PAD_CHAR, vocab.MASK_CHAR):
      if c in doc:
        raise UserError(f"wiki.txt contains the reserved character {c!r} (U+{ord(c):04X}, the "
                        f"{'PAD' if c == vocab.PAD_CHAR else 'MASK'} token) at column "
                        f"{doc.index(c) + 1}", f"{path}:{n}", "remove that character from the corpus")
  return docs


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
    if not parts[1].strip():
      raise UserError(f"line {n} has an empty answer", f"{path}:{n}",
                      "give the line its answer after the tab, or remove that line")
    pairs.append((parts[0], parts[1]))
  if not pairs:
    raise UserError(f"the finetuning file {name} is empty", path,
                    "give at least one question<TAB>answer line")
  return pairs


def read_eval(data_dir: str, name: str) -> tuple[list[str], list[str] | None]:
  """Questions and (stripped) answers of an evaluation TSV; answers is None without a TAB."""
  path = path_of(data_dir, name)
  lines = _lines(_read_text(path))
  if not lines:
    raise UserError(f"the question file {name} is empty", path,
                    "give at least one question a line (`question<TAB>answer` for dev)")
  has_answers = "\t" in lines[0]
  questions, answers = [], []
  for n, line in enumerate(lines, 1):
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) > 2:
      raise UserError(f"line {n} has {len(parts) - 1} tabs, expected at most one "
                      "(question<TAB>answer)", f"{path}:{n}", "fix or remove that line")
    if has_answers != (len(parts) > 1):
      raise UserError(f"line {n} {'lacks' if has_answers else 'has'} an answer column, unlike line 1",
                      f"{path}:{n}", "give every line `question<TAB>answer`, or none an answer")
    if has_answers and not parts[1].strip():
      raise UserError(f"line {n} has an empty answer", f"{path}:{n}",
                      "give the line its answer after the tab, or remove that line")
    questions.append(parts[0])
    if has_answers:
      answers.append(parts[1].strip())
  return questions, answers if has_answers else None

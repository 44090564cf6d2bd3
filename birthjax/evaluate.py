"""Exact-match scoring, predictions files and results.json (each written then renamed)."""
from __future__ import annotations

import errno
import json
import os

from birthjax.errors import UserError


def score(predictions, answers) -> tuple[int, int]:
  """(correct, total): exact string match against the stripped answers."""
  assert len(predictions) == len(answers), (len(predictions), len(answers))
  return sum(p == a for p, a in zip(predictions, answers)), len(answers)


def report_line(correct: int, total: int) -> str:
  return f"Correct: {correct} out of {total}: {100.0 * correct / total:.1f}%"


def atomic_write(path: str, text: str):
  """Write `text` to a temporary file beside `path`, then rename it over `path`: a failed
  write (disk full, no permission) leaves the previous file intact and no temporary file,
  and is a UserError."""
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    kept = " (the previous file is kept)" if os.path.exists(path) else ""
    raise UserError(f"cannot write {os.path.basename(path)}: {e.strerror or e}{kept}",
                    os.path.abspath(path),
                    "free some disk space, or use another --workdir" if full else
                    "make that folder writable, or use another --workdir") from None


def write_predictions(path: str, predictions):
  """One prediction a line; a predicted newline becomes a space so lines stay aligned."""
  atomic_write(path, "".join(p.replace("\r", " ").replace("\n", " ") + "\n" for p in predictions))


def write_results(path: str, results: dict):
  atomic_write(path, json.dumps(results, indent=2, sort_keys=True) + "\n")

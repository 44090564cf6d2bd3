"""Exact-match scoring, predictions files and results.json (each written then renamed)."""
from __future__ import annotations

import json
import os


def score(predictions, answers) -> tuple[int, int]:
  """(correct, total): exact string match against the stripped answers."""
  assert len(predictions) == len(answers), (len(predictions), len(answers))
  return sum(p == a for p, a in zip(predictions, answers)), len(answers)


def report_line(correct: int, total: int) -> str:
  return f"Correct: {correct} out of {total}: {100.0 * correct / total:.1f}%"


def atomic_write(path: str, text: str):
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_predictions(path: str, predictions):
  """One prediction a line; a predicted newline becomes a space so lines stay aligned."""
  atomic_write(path, "".join(p.replace("\r", " ").replace("\n", " ") + "\n" for p in predictions))


def write_results(path: str, results: dict):
  atomic_write(path, json.dumps(results, indent=2, sort_keys=True) + "\n")

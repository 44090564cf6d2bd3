"""Exact-match scoring, confidence and abstention (coverage, selective accuracy, the
coverage-accuracy plot), predictions files and results.json (each written then renamed);
`write_split`: one evaluated split, all of it."""
from __future__ import annotations

import io
import json
import os
import re

from birthjax.files import atomic_write


def score(predictions, answers) -> tuple[int, int]:
  """(correct, total): exact string match against the stripped answers."""
  assert len(predictions) == len(answers), (len(predictions), len(answers))
  return sum(p == a for p, a in zip(predictions, answers)), len(answers)


def report_line(correct: int, total: int) -> str:
  return f"Correct: {correct} out of {total}: {100.0 * correct / total:.1f}%"


def save_png(fig, path: str, **savefig_kwargs) -> str:
  """A matplotlib figure as a PNG file, written then renamed (atomic_write); closes it."""
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  try:
    fig.savefig(buf, format="png", **savefig_kwargs)
  finally:
    plt.close(fig)
  atomic_write(path, buf.getvalue())
  return path


def write_predictions(path: str, predictions):
  """One prediction a line; a predicted newline becomes a space so lines stay aligned."""
  atomic_write(path, "".join(p.replace("\r", " ").replace("\n", " ") + "\n" for p in predictions))


def write_results(path: str, results: dict):
  atomic_write(path, json.dumps(results, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- confidence
IDK = "I don't know"
COVERAGE_POINTS = (100, 75, 50, 25)
TSV_HEADER = ("question", "prediction", "gold", "confidence", "name_in_corpus")
def name_in_corpus(names, documents) -> list[bool]:
  """Whether each name is a substring of some document (strings); an empty name is not."""
  text = "\n".join(documents)
  return [bool(n) and (n in text if "\n" not in n else any(n in d for d in documents))
          for n in names]


def abstain(predictions, confidences, threshold: float) -> list[str]:
  """IDK in place of every prediction whose confidence is below `threshold`."""
  return [IDK if c < threshold else p for p, c in zip(predictions, confidences)]


def _ranked_hits(confidences, correct) -> list[bool]:
  """Correctness sorted by confidence, most confident first (ties: original order)."""
  order = sorted(range(len(correct)), key=lambda i: -confidences[i])  # sorted() is stable
  return [bool(correct[i]) for i in order]


def coverage_curve(confidences, correct) -> tuple[list[float], list[float]]:
  """(coverage %, accuracy %) answering only the k most confident, for k = 1..n."""
  hits, n, cov, acc, run = _ranked_hits(confidences, correct), len(correct), [], [], 0
  for k, h in enumerate(hits, 1):
    run += h
    cov.append(100.0 * k / n)
    acc.append(100.0 * run / k)
  return cov, acc


def coverage(confidences, correct, points=COVERAGE_POINTS) -> dict:
  """{"100": A, "75": A, ...}: accuracy (%) among the ceil(c% of n) most confident answers."""
  hits, n = _ranked_hits(confidences, correct), len(correct)
  out = {}
  for c in points:
    k = max(1, -(-c * n // 100)) if n else 0  # ceil(c% of n), in integers
    out[str(c)] = 100.0 * sum(hits[:k]) / k if k else 0.0
  return out


def abstain_summary(predictions, answers, confidences, threshold: float) -> dict:
  """Coverage (% answered), answered and selective accuracy (% correct among the answered;
  None when none is) when answers less confident than `threshold` are withheld."""
  answered = [p == a for p, a, c in zip(predictions, answers, confidences) if c >= threshold]
  n = len(answers)
  return {"threshold": threshold, "answered": len(answered),
          "coverage": 100.0 * len(answered) / n if n else 0.0,
          "selective_accuracy": 100.0 * sum(answered) / len(answered) if answered else None}


def abstain_line(summary: dict, total: int) -> str:
  acc = summary["selective_accuracy"]
  return (f"abstain below {summary['threshold']:g}: answered {summary['answered']} of {total} "
          f"({summary['coverage']:.1f}%), selective accuracy "
          + ("n/a" if acc is None else f"{acc:.1f}%"))


def write_predictions_tsv(path: str, questions, predictions, golds, confidences, in_corpus):
  """Header + one row a question; golds None: empty column. Tabs/newlines become spaces."""
  clean = lambda s: re.sub(r"[\t\r\n]", " ", s)
  golds = golds if golds is not None else [""] * len(questions)
  rows = ["\t".join(TSV_HEADER)]
  for q, p, g, c, inc in zip(questions, predictions, golds, confidences, in_corpus):
    rows.append("\t".join((clean(q), clean(p), clean(g), f"{c:.6g}", "yes" if inc else "no")))
  atomic_write(path, "\n".join(rows) + "\n")


def plot_coverage(path: str, confidences, correct, split: str = "dev"):
  """PNG: accuracy (%) against coverage (%) over every threshold, the coverage points marked."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cov, acc = coverage_curve(confidences, correct)
  points = coverage(confidences, correct)
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
  ax.plot(cov, acc, lw=1.5, label="answer the most confident")
  ax.plot([float(c) for c in points], list(points.values()), "o", color="C3",
          label="coverage " + "/".join(points) + "%")
  for c, a in points.items():
    ax.annotate(f"{a:.1f}%", (float(c), a), textcoords="offset points", xytext=(3, 5), fontsize=8)
  ax.set(xlabel="coverage (% of questions answered)", ylabel="accuracy among answered (%)",
         xlim=(0, 102), ylim=(-2, 102), title=f"{split}: {len(correct)} questions")
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  save_png(fig, path, bbox_inches="tight")


def write_split(workdir: str, split: str, questions, answers, raw, confidences, in_corpus,
                threshold: float = 0.0, write: bool = True):
  """One split's greedy answers `raw` and their confidences: `<split>.predictions` (with
  abstention below `threshold` as "I don't know") and its TSV, and, where the split has
  answers, its score printed, its coverage plot and its results.json entry (returned; None
  without answers). `write=False` (not the main process) only scores."""
  preds = abstain(raw, confidences, threshold)
  path = os.path.join(workdir, f"{split}.predictions")
  if write:
    write_predictions(path, preds)
    write_predictions_tsv(path + ".tsv", questions, preds, answers, confidences, in_corpus)
  if answers is None:
    print(f"{split}: predictions written to {path}; no targets provided")
    return None
  correct, total = score(preds, answers)
  hits = [p == a for p, a in zip(raw, answers)]
  result = {"correct": correct, "total": total, "accuracy": 100.0 * correct / total,
            "coverage": coverage(confidences, hits)}
  print(f"{split}: predictions written to {path}")
  print(report_line(correct, total))
  if threshold > 0:
    result["abstain"] = abstain_summary(raw, answers, confidences, threshold)
    print(abstain_line(result["abstain"], total))
  if write:
    plot_coverage(os.path.join(workdir, f"{split}.coverage.png"), confidences, hits, split)
  return result

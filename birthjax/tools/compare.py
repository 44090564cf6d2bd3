"""Honest comparisons of runs: `python -m birthjax.compare W1 W2 ... [--split=dev]` prints a
markdown table, one row a workdir or a seed group, read from each W/<split>.predictions.tsv
(a question is right when its prediction equals its gold answer exactly, as in results.json,
which must agree when it holds the split) and W/config.json, W/command.json.

What is computed, row by row (n: the split's questions, the same in every workdir):
- run: the config and `--config.` overrides from W/command.json, as typed (without it: the
  workdir's name).
- correct: C/n; accuracy: 100 C / n with the 95% Wilson score interval (z = 1.959964):
  (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), p = C/n.
- against the FIRST workdir, on the same questions (row i of every TSV must hold the same
  question as row i of the first one; anything else is an error): b = questions the first
  run gets right and this one wrong, c = the reverse; the paired difference is
  100 (c - b) / n percentage points (this run minus the first), and the exact two-sided
  McNemar p = min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)]), p = 1 when b + c = 0,
  computed exactly in integers (math.comb).
- seed groups: workdirs whose config.json are equal but for `seed` (each seed once) are one
  row: `seeds 0,1,2`, the per-run counts, accuracy as the mean +- sample sd (n - 1) of the
  runs' accuracies, the Wilson interval of the pooled counts (sum C / sum n, labelled
  "pooled"); the difference is the mean of the runs' paired differences against the first
  workdir, McNemar on the summed b and c. The first workdir's group is the reference row
  ("reference"); the other rows are paired against the first workdir alone, not its group.
- `--london`: a last row, the baseline answering "London" (the most common dev answer) to
  every question of the split, paired with the first workdir like a run.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from fractions import Fraction

from absl import flags

from birthjax.errors import UserError
from birthjax.infer.evaluate import TSV_HEADER

flags.DEFINE_string("split", "dev", "the split to compare: W/<split>.predictions.tsv")
flags.DEFINE_bool("london", False, "add a row answering \"London\" to every question")

Z95 = 1.959964
USAGE = "python -m birthjax.compare W1 W2 ... [--split=dev] [--london]"
LONDON = "London"


# ----------------------------------------------------------------------------- statistics
def wilson(c: int, n: int, z: float = Z95) -> tuple[float, float]:
  """The Wilson score interval (lo, hi), as proportions, of c successes in n trials."""
  if n <= 0:
    return 0.0, 1.0
  p, z2 = c / n, z * z
  centre = (p + z2 / (2 * n)) / (1 + z2 / n)
  half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
  """Exact two-sided McNemar p: min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)]); 1 if b+c = 0."""
  n = b + c
  if n == 0:
    return 1.0
  tail = Fraction(sum(math.comb(n, k) for k in range(min(b, c) + 1)), 2 ** n)
  return float(min(Fraction(1), 2 * tail))


# ----------------------------------------------------------------------------- reading a run
def _json(path: str, fix: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {os.path.basename(path)} ({e})", path, fix) from None


def read_predictions(path: str, split: str) -> tuple[list[str], list[bool], list[str]]:
  """(questions, right or wrong, gold answers) of a predictions TSV; UserError when it is
  absent or malformed."""
  workdir = os.path.dirname(path)
  if not os.path.isfile(path):
    have = sorted(f[:-len(".predictions.tsv")] for f in os.listdir(workdir)
                  if f.endswith(".predictions.tsv"))
    raise UserError(f"no {split} predictions", path,
                    "run the evaluate stage into this workdir (--config.stages=evaluate)"
                    + (f", or pass --split={'/'.join(have)}" if have else ""))
  fix = "rerun the evaluate stage to rewrite it (--config.stages=evaluate)"
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  if not lines or tuple(lines[0].split("\t")) != TSV_HEADER:
    raise UserError("not a predictions TSV: its first line is not the header "
                    + "\\t".join(TSV_HEADER), path, fix)
  questions, hits, golds = [], [], []
  for i, line in enumerate(lines[1:], 2):
    cols = line.split("\t")
    if len(cols) != len(TSV_HEADER):
      raise UserError(f"malformed predictions TSV: line {i} has {len(cols)} columns, not "
                      f"{len(TSV_HEADER)}", path, fix)
    questions.append(cols[0])
    hits.append(cols[1] == cols[2])
    golds.append(cols[2])
  if not questions:
    raise UserError("the predictions TSV has no questions", path, fix)
  if not any(line.split("\t")[2] for line in lines[1:]):
    raise UserError(f"the {split} predictions have no gold answers to score", path,
                    "compare a split with answers: --split=dev or --split=val")
  return questions, hits, golds


def load_run(workdir: str, split: str = "dev") -> dict:
  """A workdir's label, seed, config (without seed) and its per-question hits on `split`."""
  if not os.path.isdir(workdir):
    raise UserError("no such workdir", workdir, "pass the --workdir of a finished run")
  path = os.path.join(workdir, f"{split}.predictions.tsv")
  questions, hits, golds = read_predictions(path, split)
  run = {"workdir": workdir, "path": path, "questions": questions, "hits": hits, "golds": golds,
         "correct": sum(hits), "total": len(hits), "seed": None, "key": None}
  cfg_path = os.path.join(workdir, "config.json")
  if os.path.isfile(cfg_path):  # without it the run is compared, never pooled
    config = _json(cfg_path, "rerun the run's command to rewrite it")
    if isinstance(config, dict):
      run["seed"] = config.pop("seed", None)
      run["key"] = json.dumps(config, sort_keys=True)
  res_path = os.path.join(workdir, "results.json")
  if os.path.isfile(res_path):
    res = _json(res_path, "rerun the evaluate stage to rewrite it").get(split)
    if isinstance(res, dict) and (res.get("correct"), res.get("total")) != (run["correct"],
                                                                             run["total"]):
      raise UserError(f"{split}.predictions.tsv scores {run['correct']}/{run['total']} but "
                      f"results.json says {res.get('correct')}/{res.get('total')}", workdir,
                      "rerun the evaluate stage so both come from one model")
  cmd_path = os.path.join(workdir, "command.json")
  command = _json(cmd_path, "delete it or rerun the run's command") \
      if os.path.isfile(cmd_path) else None
  if isinstance(command, dict) and command.get("config"):
    run["label"] = [str(command["config"])] + [str(o) for o in command.get("overrides", [])]
  else:
    run["label"] = [os.path.basename(os.path.abspath(workdir))]
  return run


def london_run(first: dict) -> dict:
  """The baseline that answers "London" to every question of the first run's split."""
  hits = [g == LONDON for g in first["golds"]]
  return {"workdir": "", "path": first["path"], "questions": first["questions"], "hits": hits,
          "golds": first["golds"], "correct": sum(hits), "total": len(hits), "seed": None,
          "key": None, "label": [f'"{LONDON}" to every question']}


def group_runs(runs: list[dict]) -> list[list[dict]]:
  """Runs whose configs are equal but for the seed (each seed once), in order of first
  appearance; a run without config.json is its own group."""
  groups = []
  for r in runs:
    home = next((g for g in groups if r["key"] is not None and g[0]["key"] == r["key"]
                 and r["seed"] not in [o["seed"] for o in g]), None)
    if home is None:
      groups.append([r])
    else:
      home.append(r)
  return groups


# ----------------------------------------------------------------------------- the table
def _pair(first: dict, run: dict) -> tuple[int, int]:
  """(b, c): first right & run wrong, first wrong & run right, on the same questions."""
  if run["questions"] != first["questions"]:
    i = next((i for i, (a, b) in enumerate(zip(first["questions"], run["questions"]))
              if a != b), min(len(first["questions"]), len(run["questions"])))
    at = (f"{len(first['questions'])} vs {len(run['questions'])} questions"
          if i == min(len(first["questions"]), len(run["questions"]))
          else f"row {i + 1}: {first['questions'][i][:60]!r} vs {run['questions'][i][:60]!r}")
    raise UserError(f"the runs answered different questions, so they cannot be paired ({at})",
                    f"{first['path']} vs {run['path']}",
                    "compare runs evaluated on the same data (same --config.data settings)")
  b = sum(f and not o for f, o in zip(first["hits"], run["hits"]))
  c = sum(o and not f for f, o in zip(first["hits"], run["hits"]))
  return b, c


def _pct(lo_hi) -> str:
  return f"[{100 * lo_hi[0]:.1f}, {100 * lo_hi[1]:.1f}]"


def _p(p: float) -> str:
  return "1" if p >= 1 else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _label(group: list[dict]) -> str:
  if len(group) == 1:
    text = " ".join(group[0]["label"])
  else:
    labels = [" ".join(w for w in r["label"] if not w.startswith("--config.seed="))
              for r in group]
    text = " / ".join(dict.fromkeys(labels)) + ", seeds " + ",".join(
        str(r["seed"]) for r in group)
  return text.replace("|", "\\|")


def row(group: list[dict], first: dict) -> list[str]:
  cs, ns = [r["correct"] for r in group], [r["total"] for r in group]
  if len(group) == 1:
    cells = [f"{cs[0]}/{ns[0]}", f"{100 * cs[0] / ns[0]:.1f}", _pct(wilson(cs[0], ns[0]))]
  else:
    accs = [100 * c / n for c, n in zip(cs, ns)]
    counts = (", ".join(map(str, cs)) + f" /{ns[0]}" if len(set(ns)) == 1
              else ", ".join(f"{c}/{n}" for c, n in zip(cs, ns)))
    cells = [counts, f"{statistics.mean(accs):.1f} ± {statistics.stdev(accs):.1f} (mean ± sd)",
             f"{_pct(wilson(sum(cs), sum(ns)))} (pooled {sum(cs)}/{sum(ns)})"]
  if any(r is first for r in group):
    cells += ["reference", "", ""]
  else:
    pairs = [_pair(first, r) for r in group]
    diffs = [100 * (c - b) / r["total"] for (b, c), r in zip(pairs, group)]
    b, c = sum(b for b, _ in pairs), sum(c for _, c in pairs)
    cells += [f"{statistics.mean(diffs):+.1f}" + ("" if len(group) == 1 else " (mean)"),
              f"{b} / {c}" + ("" if len(group) == 1 else " (summed)"), _p(mcnemar_exact(b, c))]
  return [_label(group)] + cells


def table(workdirs, split: str = "dev", london: bool = False) -> str:
  """The markdown comparison table (see the module docstring for what each column is);
  `london`: a last row answering "London" to every question, paired like a run."""
  if not workdirs:
    raise UserError("no workdirs to compare", "", f"usage: {USAGE}")
  runs = [load_run(w, split) for w in workdirs]
  for r in runs[1:]:
    _pair(runs[0], r)  # every run on the first one's questions, before any row is printed
  header = ["run", f"{split} correct", "accuracy %", "95% Wilson CI %",
            "vs first: Δ pp", "b / c", "McNemar exact p"]
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  groups = group_runs(runs) + ([[london_run(runs[0])]] if london else [])
  lines += ["| " + " | ".join(row(g, runs[0])) + " |" for g in groups]
  return "\n".join(lines) + (
      f"\n\nΔ: paired difference on the same {runs[0]['total']} {split} questions, this row "
      f"minus the first workdir ({os.path.basename(os.path.abspath(workdirs[0]))}); b: first "
      "right and this wrong, c: the reverse; seed groups: mean of the runs' Δ, summed b and c.")


def main(argv):
  print(table(argv[1:], flags.FLAGS.split, flags.FLAGS.london))

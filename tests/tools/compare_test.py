"""`python -m birthjax.compare`: Wilson intervals, exact McNemar, the table on fake workdirs
with hand-counted answers, and bad input as one error line. No JAX."""
import json
import os
import subprocess
import sys

import pytest

from birthjax.errors import UserError
from birthjax.tools import compare

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 10
QUESTIONS = [f"Where was P{i} born?" for i in range(N)]


# ----------------------------------------------------------------------------- statistics
# By hand, z = 1.959964, z^2 = 3.841459: 0/10: hi = z^2/(n + z^2) = 3.841459/13.841459 =
# 0.277532; 10/10 mirrors it (lo = 10/13.841459 = 0.722468); 5/10: centre 0.5, half-width
# z sqrt(0.025 + z^2/400) / (1 + z^2/10) = 1.959964 * 0.186021 / 1.384146 = 0.263407;
# 77/500: p = 0.154, centre (0.154 + 0.003841)/1.007683 = 0.156638, half-width
# 1.959964 sqrt(0.00026057 + 0.00000384)/1.007683 = 0.031627.
HAND = [(0, 10, 0.0, 0.277532), (10, 10, 0.722468, 1.0), (5, 10, 0.236593, 0.763407),
        (77, 500, 0.125011, 0.188265)]
# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (score, no correction).
NEWCOMBE = [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718)]


@pytest.mark.parametrize("c,n,lo,hi", HAND)
def test_wilson_by_hand(c, n, lo, hi):
  assert compare.wilson(c, n) == pytest.approx((lo, hi), abs=2e-6)


@pytest.mark.parametrize("c,n,lo,hi", NEWCOMBE)
def test_wilson_newcombe(c, n, lo, hi):
  assert compare.wilson(c, n) == pytest.approx((lo, hi), abs=5e-5)


@pytest.mark.parametrize("b,c,p", [(0, 0, 1.0), (0, 5, 2 / 32), (5, 0, 2 / 32),
                                   (1, 9, 2 * 11 / 1024), (3, 3, 1.0), (0, 9, 2 / 512)])
def test_mcnemar_exact(b, c, p):
  assert compare.mcnemar_exact(b, c) == p  # exact: each p is a dyadic fraction


# ----------------------------------------------------------------------------- fake workdirs
def workdir(root, name, right, config, overrides=None, questions=QUESTIONS, results=True):
  """A workdir answering the questions whose index is in `right` (gold G<i>)."""
  w = os.path.join(str(root), name)
  os.makedirs(w)
  rows = ["\t".join(compare.TSV_HEADER)] + [
      f"{q}\t{'G' if i in right else 'X'}{i}\tG{i}\t0.5\tyes" for i, q in enumerate(questions)]
  with open(os.path.join(w, "dev.predictions.tsv"), "w") as f:
    f.write("\n".join(rows) + "\n")
  with open(os.path.join(w, "config.json"), "w") as f:
    json.dump(config, f)
  if overrides is not None:
    with open(os.path.join(w, "command.json"), "w") as f:
      json.dump({"config": "configs/vanilla.py:quickstart", "overrides": overrides}, f)
  if results:
    with open(os.path.join(w, "results.json"), "w") as f:
      json.dump({"dev": {"correct": len(right), "total": N}}, f)
  return w


@pytest.fixture
def runs(tmp_path):
  """first: q0-q4 right (5/10); lr2: q1-q7 (7/10); lr3 seeds 0, 1, 2: 10, 8 (q0-q7), 6 (q0-q5)."""
  return {
      "first": workdir(tmp_path, "first", range(5), {"seed": 0, "lr": 1}, []),
      "lr2": workdir(tmp_path, "lr2", range(1, 8), {"seed": 0, "lr": 2}, ["--config.lr=2"]),
      **{f"lr3s{s}": workdir(tmp_path, f"lr3s{s}", range(k), {"seed": s, "lr": 3},
                             ["--config.lr=3", f"--config.seed={s}"])
         for s, k in [(0, 10), (1, 8), (2, 6)]}}


def cells(text):
  """The table's body rows as lists of cells."""
  lines = [line for line in text.splitlines() if line.startswith("|")][2:]
  return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def test_table(runs):
  rows = cells(compare.table([runs[k] for k in ["first", "lr2", "lr3s0", "lr3s1", "lr3s2"]]))
  assert rows[0] == ["configs/vanilla.py:quickstart", "5/10", "50.0", "[23.7, 76.3]",
                     "reference", "", ""]
  # lr2 against first: b = {q0} = 1, c = {q5, q6, q7} = 3: +20 pp, p = 2 * 5/16 = 0.625
  assert rows[1] == ["configs/vanilla.py:quickstart --config.lr=2", "7/10", "70.0",
                     rows[1][3], "+20.0", "1 / 3", "0.625"]
  # seeds: 100, 80, 60% -> mean 80, sd 20; diffs +50, +30, +10 -> +30; b = 0, c = 5+3+1 = 9:
  # p = 2/2^9 = 0.0039; pooled 24/30
  label, counts, acc, ci, diff, bc, p = rows[2]
  assert label == "configs/vanilla.py:quickstart --config.lr=3, seeds 0,1,2"
  assert (counts, acc, diff, bc, p) == ("10, 8, 6 /10", "80.0 ± 20.0 (mean ± sd)", "+30.0 (mean)",
                                        "0 / 9 (summed)", "0.004")
  assert ci.endswith("(pooled 24/30)")
  assert len(rows) == 3


def test_reference_group(runs):
  """The first workdir's seed siblings pool into the reference row; others pair with it alone."""
  rows = cells(compare.table([runs[k] for k in ["lr3s0", "lr3s1", "lr3s2", "lr2"]]))
  assert rows[0][1:5] == ["10, 8, 6 /10", "80.0 ± 20.0 (mean ± sd)", rows[0][3], "reference"]
  # lr2 against lr3s0 (all right): b = {q0, q8, q9} = 3, c = 0: -30 pp, p = 2/8
  assert rows[1][4:] == ["-30.0", "3 / 0", "0.250"]


def test_london_row(tmp_path):
  """Golds "London" at q0, q3, q5; the first run right on q0, q1: London 3/10, b = {q1} = 1,
  c = {q3, q5} = 2, +10 pp, p = 2 * (1 + 3) / 8 = 1."""
  w = os.path.join(str(tmp_path), "w")
  os.makedirs(w)
  gold = ["London" if i in (0, 3, 5) else f"G{i}" for i in range(N)]
  pred = [gold[i] if i in (0, 1) else "Paris" for i in range(N)]
  rows = ["\t".join(compare.TSV_HEADER)] + [f"{q}\t{p}\t{g}\t0.5\tyes"
                                             for q, p, g in zip(QUESTIONS, pred, gold)]
  with open(os.path.join(w, "dev.predictions.tsv"), "w") as f:
    f.write("\n".join(rows) + "\n")
  rows = cells(compare.table([w], london=True))
  assert rows[0][:5] == ["w", "2/10", "20.0", rows[0][3], "reference"]
  assert rows[1] == ['"London" to every question', "3/10", "30.0", "[10.8, 60.3]", "+10.0",
                     "1 / 2", "1"]
  assert len(cells(compare.table([w]))) == 1  # off by default


def test_label_falls_back_to_workdir_name(tmp_path):
  a = workdir(tmp_path, "a", range(3), {"seed": 0})
  b = workdir(tmp_path, "b", range(3), {"seed": 0, "x": 1})
  assert [r[0] for r in cells(compare.table([a, b]))] == ["a", "b"]


# ----------------------------------------------------------------------------- bad input
def entry(*args):
  return subprocess.run([sys.executable, "-m", "birthjax.compare", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)


def one_error(proc, *words):
  assert proc.returncode == 1, proc
  lines = proc.stderr.strip().splitlines()
  assert "Traceback" not in proc.stderr
  assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
  for w in words:
    assert w in lines[0]
  return lines[0]


def test_entry_prints_table(runs):
  proc = entry(runs["first"], runs["lr2"])
  assert proc.returncode == 0, proc.stderr
  assert "| configs/vanilla.py:quickstart --config.lr=2 | 7/10 |" in proc.stdout
  assert "London" not in proc.stdout
  proc = entry(runs["first"], "--london")
  assert proc.returncode == 0, proc.stderr
  assert '| "London" to every question | 0/10 | 0.0 |' in proc.stdout  # no gold is London


def test_different_questions(runs, tmp_path):
  other = workdir(tmp_path, "other", range(5), {"seed": 0},
                  questions=QUESTIONS[:3] + ["Where was Q born?"] + QUESTIONS[4:])
  one_error(entry(runs["first"], other), "different questions", "row 4")


def test_missing_predictions_and_split(runs, tmp_path):
  os.makedirs(tmp_path / "empty")
  one_error(entry(runs["first"], str(tmp_path / "empty")), "no dev predictions",
            "evaluate stage")
  one_error(entry("--split=val", runs["first"]), "no val predictions", "--split=dev")
  one_error(entry(runs["first"], str(tmp_path / "nowhere")), "no such workdir")


def test_malformed_and_disagreeing(tmp_path):
  bad = workdir(tmp_path, "bad", range(5), {"seed": 0})
  with open(os.path.join(bad, "dev.predictions.tsv"), "a") as f:
    f.write("a question\tonly two\n")
  one_error(entry(bad), "line 12 has 2 columns", "dev.predictions.tsv")
  liar = workdir(tmp_path, "liar", range(5), {"seed": 0}, results=False)
  with open(os.path.join(liar, "results.json"), "w") as f:
    json.dump({"dev": {"correct": 6, "total": N}}, f)
  with pytest.raises(UserError, match="results.json says 6/10"):
    compare.table([liar])

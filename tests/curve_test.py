"""birthjax.curve: points from the kept pretraining checkpoints, resumable, plotted."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from birthjax import curve, run
from tests.run_test import ROOT, smoke_config


@pytest.fixture(scope="module")
def kept_run(cache_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("curve"))
  config = smoke_config(cache_dir, **{"stages": "pretrain", "pretrain.epochs": 3,
                                      "pretrain.keep_every": 2, "checkpoint_every": 1000,
                                      "data.synthetic_people": 120})
  run.run(config, workdir)
  return workdir


def test_kept_points_are_the_multiples_of_keep_every(kept_run):
  # 120 people: 121 documents / 128 = 1 step an epoch; epochs 2 kept, 3 is the final (latest)
  assert curve.kept_points(kept_run) == [(2, 2)]
  assert sorted(os.listdir(os.path.join(kept_run, "checkpoints", "pretrain"))) == ["2", "3"]


def test_curve_writes_points_and_resumes(kept_run, monkeypatch):
  points = curve.curve(kept_run)
  assert [p["epoch"] for p in points] == [2]
  p = points[0]
  assert p["dev_total"] == 20 and 0 <= p["dev_correct"] <= 20
  assert p["dev_accuracy"] == pytest.approx(100.0 * p["dev_correct"] / 20)
  assert p["recall_prompts"] == 20  # the synthetic world states every birth place in its line
  with open(os.path.join(kept_run, "curve.json")) as f:
    assert json.load(f)["points"] == points
  assert os.path.getsize(os.path.join(kept_run, "curve.png")) > 1000
  assert os.path.isdir(os.path.join(kept_run, "curve", "2", "checkpoints", "finetune"))
  monkeypatch.setattr(curve, "point", lambda *a: pytest.fail("a finished point was recomputed"))
  assert curve.curve(kept_run) == points


def test_a_run_without_kept_checkpoints_is_one_error_line(kept_run, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(os.path.join(kept_run, "checkpoints"), os.path.join(workdir, "checkpoints"))
  with open(os.path.join(kept_run, "config.json")) as f:
    config = json.load(f)
  config["pretrain"]["keep_every"] = 0  # as a run started without the flag
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  r = subprocess.run([sys.executable, "-m", "birthjax.curve", workdir], cwd=ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith(
      "error: the run kept no pretraining checkpoints for a curve")

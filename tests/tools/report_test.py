"""The run report: event files read without TensorFlow, and a static report.html."""
from __future__ import annotations

import html
import json
import os
import re

import pytest

from birthjax.tools import cli, report
from birthjax.errors import UserError


def write_events(directory, suffix, scalars, tensor=False):
  """scalars: [(tag, step, value)] through tensorboardX, as birthjax.train.metrics writes them
  (simple_value), or as torch's and TF 2's writers do (a one-element float tensor)."""
  from tensorboardX import FileWriter, SummaryWriter
  from tensorboardX.proto import summary_pb2, tensor_pb2
  w = (FileWriter if tensor else SummaryWriter)(directory, filename_suffix=suffix)
  for tag, step, value in scalars:
    if tensor:
      t = tensor_pb2.TensorProto(dtype="DT_FLOAT", float_val=[value])
      w.add_summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, tensor=t)]), step)
    else:
      w.add_scalar(tag, value, step)
  w.close()
  (path,) = [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(suffix)]
  return path


def write_png(path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig = plt.figure(figsize=(2, 2))
  plt.plot([0, 1], [1, 0])
  fig.savefig(path)
  plt.close(fig)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A finished-looking workdir: a pretrain log resumed at step 3 plus a killed third writer,
  results with coverage and abstain, a predictions TSV, and two plots."""
  w = tmp_path_factory.mktemp("w")
  tb = str(w / "tb" / "pretrain")
  os.makedirs(tb)
  write_events(tb, ".1", [("train/loss", 1, 4.0), ("train/lr", 1, 0.5),
                          ("train/loss", 2, 2.0), ("train/lr", 2, 0.25),
                          ("train/loss", 3, 1.5), ("train/tokens_per_s", 3, 1000.0)])
  write_events(tb, ".2", [("train/loss", 3, 1.0), ("train/loss", 4, 0.5)])  # resumed at step 3
  killed = write_events(tb, ".3", [("train/loss", 5, 0.25), ("train/loss", 6, 0.125)])
  with open(killed, "r+b") as f:  # the last record loses its final bytes
    f.truncate(os.path.getsize(killed) - 3)
  write_events(tb, ".4", [("train/grad_norm", 2, 0.75)], tensor=True)
  with open(os.path.join(tb, "events.out.tfevents.0.junk"), "wb") as f:
    f.write(b"\x05\x00\x00")  # shorter than a record header
  (w / "results.json").write_text(json.dumps({"dev": {
      "correct": 17, "total": 40, "accuracy": 42.5,
      "coverage": {"100": 42.5, "25": 80.0, "50": 61.25}, "abstain": {"threshold": 0.375, "answered": 0,
                                                          "selective_accuracy": None}}}))
  (w / "config.json").write_text(json.dumps({
      "stages": "pretrain,finetune,evaluate", "model": {"variant": "perceiver", "n_layer": 3,
                                                        "n_embd": 48, "bottleneck_dim": 24},
      "pretrain": {"epochs": 7}, "finetune": {"epochs": 2}}))
  rows = ["question\tprediction\tgold\tconfidence\tname_in_corpus",
          "Where was Ann <b>& Co born?\tParis\tRome\t0.5\tTrue"]
  rows += [f"Where was P{i} born?\tOslo\tOslo\t0.9\tTrue" for i in range(30)]
  (w / "dev.predictions.tsv").write_text("\n".join(rows) + "\n")
  write_png(str(w / "dev.coverage.png"))
  os.makedirs(w / "analysis")
  write_png(str(w / "analysis" / "attention_layer0.png"))
  return str(w)


@pytest.fixture(scope="module")
def page(workdir):
  path = report.build(workdir)
  assert path == os.path.join(workdir, "report.html")
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_scalars_last_write_wins_and_truncated_record_skipped(workdir):
  s = report.read_scalars(os.path.join(workdir, "tb", "pretrain"))
  assert s["train/loss"] == [(1, 4.0), (2, 2.0), (3, 1.0), (4, 0.5), (5, 0.25)]
  assert s["train/lr"] == [(1, 0.5), (2, 0.25)]
  assert s["train/tokens_per_s"] == [(3, 1000.0)]
  assert s["train/grad_norm"] == [(2, 0.75)]
  assert report.read_scalars(os.path.join(workdir, "tb", "finetune")) == {}


def test_corrupt_crc_stops_the_file(tmp_path):
  path = write_events(str(tmp_path), ".x", [("a", 1, 1.0), ("a", 2, 2.0)])
  data = bytearray(open(path, "rb").read())
  data[-6] ^= 0xff  # a byte of the last record's data: its CRC no longer matches
  open(path, "wb").write(bytes(data))
  assert report.read_scalars(str(tmp_path)) == {"a": [(1, 1.0)]}


def test_page_shows_results_config_and_escapes(page):
  assert "<script" not in page and "http" not in page
  assert re.search(r"<td>dev</td><td class=n>17</td><td class=n>40</td><td class=n>42.5</td>", page)
  assert re.search(r"<th>acc. \(%\) at 100% coverage</th><th>acc. \(%\) at 50% coverage</th>"
                   r"<th>acc. \(%\) at 25% coverage</th>"
                   r"<th>abstain threshold</th><th>abstain answered</th>"
                   r"<th>abstain selective_accuracy</th></tr><tr><td>dev</td>.*"
                   r"<td class=n>42.5</td><td class=n>61.25</td><td class=n>80</td><td class=n>0.375</td>"
                   r"<td class=n>0</td><td class=n>n/a</td></tr>", page)
  assert "<td>bottleneck_dim</td><td>24</td>" in page and "<td>pretrain.epochs</td><td>7</td>" in page
  assert "Where was Ann &lt;b&gt;&amp; Co born?" in page and "<b>&" not in page
  assert "Where was P18 born?" in page and "Where was P19 born?" not in page  # 20 rows
  assert "5 steps logged; last loss 0.25 (step 5)" in page


def test_images_exist_relative_to_the_page(workdir, page):
  srcs = [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', page)]
  assert srcs == ["report/training_pretrain.png", "dev.coverage.png", "analysis/attention_layer0.png"]
  for src in srcs:
    assert not os.path.isabs(src)
    with open(os.path.join(workdir, src), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"<figcaption>{src}</figcaption>" in page


def test_only_present_parts_are_shown(tmp_path, capsys):
  write_png(str(tmp_path / "only.png"))
  assert cli.call(report.main, [str(tmp_path)]) == 0
  assert capsys.readouterr().out == f"report written to {tmp_path / 'report.html'}\n"
  page = (tmp_path / "report.html").read_text()
  assert '<img src="only.png"' in page
  assert "Results" not in page and "Training curves" not in page and "Dev predictions" not in page


def test_nothing_to_report_and_missing_workdir(tmp_path, capsys):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(UserError, match="nothing to report"):
    report.build(str(tmp_path))
  assert cli.call(report.main, [str(tmp_path / "nope")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: the workdir does not exist") and err.count("\n") == 1
  (tmp_path / "results.json").write_text("{not json")
  with pytest.raises(UserError, match="cannot read results.json"):
    report.build(str(tmp_path))

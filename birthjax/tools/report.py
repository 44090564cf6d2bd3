"""The one-page run report: `python -m birthjax.report WORKDIR` writes WORKDIR/report.html.

Owns reading TensorBoard event files without TensorFlow (TFRecord framing of tensorboardX's
`Event` protobufs), the training-curve plots (WORKDIR/report/training_<stage>.png) and the
page itself: results table, config summary, training curves, the first rows of
dev.predictions.tsv and every PNG in WORKDIR and WORKDIR/analysis. The page is static (inline
CSS, relative <img> paths, no JavaScript, no external URLs): it opens from disk in a browser.
Each part is shown only when its files exist.
"""
from __future__ import annotations

import glob
import html
import json
import os
import struct

from birthjax.infer import evaluate
from birthjax.files import atomic_write
from birthjax.errors import UserError
from birthjax.tools import cli

STAGES = ("pretrain", "finetune")
TSV_COLUMNS = ("question", "prediction", "gold", "confidence", "name_in_corpus")
TSV_ROWS = 20
CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #bbb;padding:.25em .6em;
text-align:left}th{background:#eee}td.n{text-align:right}
figure{display:inline-block;margin:0 1em 1em 0}img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}"""


# ----------------------------------------------------------------------------- event files
def _masked_crc(data: bytes) -> int:
  from tensorboardX.crc32c import crc32c
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def read_records(path: str):
  """The data of each TFRecord in `path`; stops (silently) at the first truncated or corrupt
  record, which is what a killed writer leaves behind."""
  with open(path, "rb") as f:
    buf = f.read()
  pos = 0
  while pos + 12 <= len(buf):
    header = buf[pos:pos + 8]
    (n,), (crc,) = struct.unpack("<Q", header), struct.unpack("<I", buf[pos + 8:pos + 12])
    end = pos + 12 + n
    if crc != _masked_crc(header) or end + 4 > len(buf):
      return
    data = buf[pos + 12:end]
    if struct.unpack("<I", buf[end:end + 4])[0] != _masked_crc(data):
      return
    yield data
    pos = end + 4


def _value(v):
  """A summary value as a float: simple_value (what tensorboardX 2.6.5 writes for add_scalar),
  or a one-element float tensor (torch's and TF 2's scalars); None for anything else."""
  kind = v.WhichOneof("value")
  if kind == "simple_value":
    return float(v.simple_value)
  if kind == "tensor" and (v.tensor.float_val or v.tensor.double_val):
    return float((list(v.tensor.float_val) or list(v.tensor.double_val))[0])
  return None


def read_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...] sorted by step} from every events file in `directory`; files
  are read in name order and a later (tag, step) replaces an earlier one (a resumed run)."""
  from google.protobuf.message import DecodeError
  from tensorboardX.proto import event_pb2
  latest: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    for data in read_records(path):
      event = event_pb2.Event()
      try:
        event.ParseFromString(data)
      except DecodeError:
        break
      for v in event.summary.value:
        x = _value(v)
        if x is not None:
          latest.setdefault(v.tag, {})[int(event.step)] = x
  return {tag: sorted(steps.items()) for tag, steps in latest.items()}


# ----------------------------------------------------------------------------- plots
def plot_curves(stage: str, scalars: dict, path: str):
  """Loss (log y) and learning rate against step, side by side, as a PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, tag, title in ((axes[0], "train/loss", "loss"), (axes[1], "train/lr", "learning rate")):
    points = scalars.get(tag, [])
    if points:
      steps, values = zip(*points)
      ax.plot(steps, values, "o-" if len(points) < 40 else "-", markersize=3)
      if tag == "train/loss" and min(values) > 0:
        ax.set_yscale("log")
    ax.set(title=f"{stage} {title}", xlabel="step")
    ax.grid(True, alpha=.3)
  fig.tight_layout()
  evaluate.save_png(fig, path, dpi=100)


# ----------------------------------------------------------------------------- reading
def _load_json(path: str):
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {os.path.basename(path)}: {e}", os.path.abspath(path),
                    "rerun the evaluation, or move the broken file away") from None
  if not isinstance(value, dict):
    raise UserError(f"{os.path.basename(path)} does not hold a JSON object",
                    os.path.abspath(path), "rerun the evaluation, or move the file away")
  return value


def read_tsv(path: str, limit: int = TSV_ROWS):
  """(header, first `limit` rows) of a predictions TSV; a first line starting with 'question'
  is the header, otherwise the columns are TSV_COLUMNS."""
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = [line.rstrip("\n").split("\t") for line in f.read().splitlines() if line.strip()]
  header = list(TSV_COLUMNS)
  if lines and lines[0][0].strip().lower() == "question":
    header, lines = lines[0], lines[1:]
  return header, lines[:limit]


def _flat(prefix: str, value) -> list[tuple[str, object]]:
  if isinstance(value, dict):
    return [kv for k, v in value.items() for kv in _flat(f"{prefix} {k}".strip(), v)]
  return [(prefix, value)]


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return "n/a" if v is None else str(v)


# ----------------------------------------------------------------------------- html
def _table(header, rows, numeric=()) -> str:
  e = html.escape
  head = "".join(f"<th>{e(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(
      f'<td{" class=n" if i in numeric else ""}>{e(_fmt(c))}</td>' for i, c in enumerate(r))
      + "</tr>" for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _extras(split: dict) -> list[tuple[str, object]]:
  """Coverage ({"75": accuracy %, ...}) and abstain ({threshold, answered, ...}) columns."""
  cov = split.get("coverage", {})
  cov = sorted(cov.items(), key=lambda kv: -float(kv[0])) if isinstance(cov, dict) else []
  cov = [(f"acc. (%) at {k}% coverage", v) for k, v in cov]  # 100, 75, 50, 25 (json: "100" < "25")
  return cov + _flat("abstain", split.get("abstain", {}))


def results_html(results: dict) -> str:
  """One row per split: correct, total, accuracy (%), then coverage and abstain columns."""
  header, rows, extra = ["split", "correct", "total", "accuracy (%)"], [], []
  splits = {k: v if isinstance(v, dict) else {} for k, v in results.items()}
  for split in splits.values():
    extra += [name for name, _ in _extras(split) if name not in extra]
  for name, split in splits.items():
    flat, acc = dict(_extras(split)), split.get("accuracy")
    rows.append([name, split.get("correct", ""), split.get("total", ""),
                 f"{acc:.1f}" if isinstance(acc, (int, float)) else ""] +
                [flat.get(c, "") for c in extra])
  return _table(header + extra, rows, numeric=set(range(1, len(header) + len(extra))))


def config_html(config: dict) -> str:
  model, rows = config.get("model", {}), []
  rows.append(("variant", model.get("variant", "?")))
  rows += [(k, model[k]) for k in ("n_layer", "n_head", "n_embd") if k in model]
  if model.get("variant", "vanilla") != "vanilla" and "bottleneck_dim" in model:
    rows.append(("bottleneck_dim", model["bottleneck_dim"]))
  rows += [(k, config[k]) for k in ("stages", "seed") if k in config]
  rows += [("data.source", config["data"]["source"])] if "source" in config.get("data", {}) else []
  for stage, keys in (("pretrain", ("epochs",)), ("finetune", ("epochs", "epochs_from_scratch"))):
    rows += [(f"{stage}.{k}", config[stage][k]) for k in keys if k in config.get(stage, {})]
  return _table(["setting", "value"], rows)


def _stage_summary(scalars: dict) -> str:
  loss, tps = scalars.get("train/loss", []), [v for _, v in scalars.get("train/tokens_per_s", [])]
  parts = [f"{len(loss)} steps logged"]
  if loss:
    parts += [f"last loss {loss[-1][1]:.4g} (step {loss[-1][0]})",
              f"min loss {min(v for _, v in loss):.4g}"]
  if tps:
    parts.append(f"median tokens/s {sorted(tps)[len(tps) // 2]:,.0f}")
  return html.escape("; ".join(parts))


def _figure(src: str, caption: str) -> str:
  return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
          f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def build(workdir: str) -> str:
  """Write WORKDIR/report.html (curves in WORKDIR/report/); returns the report's path."""
  if not os.path.isdir(workdir):
    raise UserError("the workdir does not exist", os.path.abspath(workdir),
                    "pass the --workdir of a run (python -m birthjax.report runs/NAME)")
  sections = []
  results = _load_json(os.path.join(workdir, "results.json"))
  if results:
    sections.append("<h2>Results</h2>" + results_html(results))
  curves = []
  for stage in STAGES:
    scalars = read_scalars(os.path.join(workdir, "tb", stage))
    if scalars:
      os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
      name = f"report/training_{stage}.png"
      plot_curves(stage, scalars, os.path.join(workdir, name))
      curves.append(f"<h3>{stage}</h3><p>{_stage_summary(scalars)}</p>{_figure(name, name)}")
  if curves:
    sections.append("<h2>Training curves</h2>" + "".join(curves))
  tsv = read_tsv(os.path.join(workdir, "dev.predictions.tsv"))
  if tsv and tsv[1]:
    sections.append(f"<h2>Dev predictions (first {len(tsv[1])} rows of dev.predictions.tsv)</h2>"
                    + _table(*tsv))
  pngs = sorted(glob.glob(os.path.join(workdir, "*.png"))) + \
      sorted(glob.glob(os.path.join(workdir, "analysis", "*.png")))
  if pngs:
    rel = [os.path.relpath(p, workdir).replace(os.sep, "/") for p in pngs]
    sections.append("<h2>Plots</h2>" + "".join(_figure(r, r) for r in rel))
  if not sections:
    raise UserError("nothing to report: no results.json, TensorBoard scalars (tb/), "
                    "dev.predictions.tsv or PNG plots", os.path.abspath(workdir),
                    "run training or evaluation into this workdir first "
                    "(python main.py --workdir=...)")
  config = _load_json(os.path.join(workdir, "config.json"))
  if config:
    sections.insert(1 if results else 0, "<h2>Configuration</h2>" + config_html(config))
  title = html.escape(f"birthjax report: {os.path.basename(os.path.abspath(workdir))}")
  page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
          f"<style>{CSS}</style></head><body><h1>{title}</h1>\n" + "\n".join(sections)
          + "\n</body></html>\n")
  path = os.path.join(workdir, "report.html")
  atomic_write(path, page)
  return path


USAGE = "python -m birthjax.report WORKDIR"


def main(argv: list[str]) -> int:
  """argv[1]: the workdir (absl's app.run; no flags of its own)."""
  if len(argv) != 2:
    what = "no workdir given" if len(argv) < 2 else f"one workdir expected, got {len(argv) - 1}"
    raise cli.UsageError(what, cli.where(argv), f"usage: {USAGE}")
  path = build(argv[1])
  print(f"report written to {path}")
  return 0

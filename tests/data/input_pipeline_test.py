"""Tests for birthjax.data.input_pipeline (and the TFDS builder it reads through); the examples and
batches built from its records are tested in device_epoch_test.py and records tests."""
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from birthjax.data import corpus, input_pipeline, synthetic, tfds_builders
from birthjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---------------------------------------------------------------- load

def _cfg(cache_dir, source="a5", d=""):
  return ml_collections.ConfigDict(dict(source=source, dir=d, cache_dir=cache_dir,
                                        synthetic_seed=0, synthetic_people=600,
                                        synthetic_phrasings=0))


def _copy_dir(src, dst):
  os.makedirs(dst)
  for name in corpus.FILES:  # contents only: the shared A5 files are read-only
    with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
      g.write(f.read())
  return dst


def _edit(d, name, fn):
  path = os.path.join(d, name)
  with open(path, encoding="utf-8", newline="") as f:
    text = f.read()
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write(fn(text))
  return path


@pytest.fixture(params=["synthetic", "a5"])
def source_dir(request):
  if request.param == "a5":
    return request.getfixturevalue("a5_dir")
  return request.getfixturevalue("synthetic_dir")


def test_load_a5(a5_dir, cache_dir):
  data = input_pipeline.load(_cfg(cache_dir, "a5", a5_dir), 128)
  assert data.data_dir == a5_dir
  assert len(data.vocab) == 256
  assert len(data.documents) == 2938
  assert all(d.dtype == np.int32 for d in data.documents)
  assert data.vocab.decode(data.documents[0]).startswith("Khatchig Mouradian.")
  assert data.vocab.decode(data.documents[-2]).startswith("Gerald Palmer.")
  assert len(data.documents[-1]) == 0
  # TFDS keeps file order: every document as read from wiki.txt
  assert [data.vocab.decode(d) for d in data.documents] == corpus.read_wiki(a5_dir)
  assert len(data.finetune) == 2000
  q, a = data.finetune[0]
  assert (data.vocab.decode(q), data.vocab.decode(a)) == ("Where was Khatchig Mouradian born?",
                                                          "Lebanon")
  assert [(data.vocab.decode(q), data.vocab.decode(a)) for q, a in data.finetune] == \
      corpus.read_finetune(a5_dir)
  assert set(data.eval_sets) == {"dev", "test"}
  qs, ans = data.eval_sets["dev"]
  assert len(qs) == len(ans) == 500
  assert (qs[0], ans[0]) == ("Where was Bryan Dubreuiel born?", "Atlanta")
  assert (qs, ans) == corpus.read_eval(a5_dir, corpus.DEV)
  qs, ans = data.eval_sets["test"]
  assert len(qs) == 437 and ans is None
  assert qs[0] == "Where was Adam Bright born?"
  # a second load reuses the cache and gives the same data
  again = input_pipeline.load(_cfg(cache_dir, "a5", a5_dir), 128)
  assert again.vocab == data.vocab
  assert all(np.array_equal(u, v) for u, v in zip(again.documents, data.documents))


def test_data_sources_records(a5_dir, cache_dir):
  src = tfds_builders.data_sources(a5_dir, cache_dir)
  assert {k: len(v) for k, v in src.items()} == {"wiki": 2938, "train": 2000, "dev": 500,
                                                 "test": 437}
  assert src["wiki"][0]["text"].startswith("Khatchig Mouradian.")
  assert src["wiki"][2937] == {"text": "", "answer": "", "has_answer": False}
  assert src["train"][0] == {"text": "Where was Khatchig Mouradian born?", "answer": "Lebanon",
                             "has_answer": True}
  assert src["dev"][499] == {"text": "Where was Aaron Walden born?", "answer": "Warsaw",
                             "has_answer": True}
  assert src["test"][436] == {"text": "Where was Gerald Palmer born?", "answer": "",
                              "has_answer": False}


def test_files_digest_tracks_content(synthetic_dir, tmp_path):
  d = _copy_dir(synthetic_dir, str(tmp_path / "copy"))
  digest = tfds_builders.files_digest(d)
  assert digest == tfds_builders.files_digest(synthetic_dir)
  _edit(d, corpus.TEST, lambda t: t + "Where was Adam Abernathy born?\n")
  assert tfds_builders.files_digest(d) != digest


def test_load_synthetic(cache_dir):
  data = input_pipeline.load(_cfg(cache_dir, "synthetic"), 128)
  assert data.data_dir == os.path.join(cache_dir, "synthetic-0-600-7")
  files = synthetic.generate(seed=0)
  wiki = files["wiki.txt"].split("\n")
  assert len(data.documents) == 601 and len(data.documents[-1]) == 0
  assert [data.vocab.decode(d) for d in data.documents] == wiki
  assert data.vocab.chars[2:] == tuple(sorted(set(files["wiki.txt"])))
  assert len(data.finetune) == 400
  first_q, first_a = files["birth_places_train.tsv"].split("\n")[0].split("\t")
  assert (data.vocab.decode(data.finetune[0][0]), data.vocab.decode(data.finetune[0][1])) == \
      (first_q, first_a)
  qs, ans = data.eval_sets["dev"]
  assert len(qs) == len(ans) == 100
  qs, ans = data.eval_sets["test"]
  assert len(qs) == 100 and ans is None


def test_load_unknown_source(cache_dir):
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "nope"), 128)
  assert "'nope'" in e.value.line() and "--config.data.source" in e.value.line()


def test_load_missing_file(cache_dir, synthetic_dir, tmp_path):
  d = _copy_dir(synthetic_dir, str(tmp_path / "copy"))
  os.remove(os.path.join(d, corpus.DEV))
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", d), 128)
  assert "missing data file birth_dev.tsv" in e.value.line()
  assert "--config.data.dir" in e.value.line()


@pytest.mark.parametrize("bad, tabs", [("Where was X born? Paris", 0), ("Q?\tA\tB", 2)])
def test_load_bad_tsv_line(source_dir, cache_dir, tmp_path, bad, tabs):
  d = _copy_dir(source_dir, str(tmp_path / "copy"))
  n = len(corpus.read_finetune(d))
  path = _edit(d, corpus.TRAIN, lambda t: t + bad + "\n")
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", d), 128)
  assert e.value.where == f"{path}:{n + 1}"
  assert f"{tabs} tabs" in e.value.what


def test_load_dev_char_outside_vocab(source_dir, cache_dir, tmp_path):
  d = _copy_dir(source_dir, str(tmp_path / "copy"))

  def put_snowman_on_line_3(text):
    lines = text.split("\n")
    lines[2] = "Where was Snow \u2603 Man born?\tLondon"
    return "\n".join(lines)

  path = _edit(d, corpus.DEV, put_snowman_on_line_3)
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", d), 128)
  assert e.value.where == f"{path}:3"
  assert "'\u2603'" in e.value.line() and "column 16" in e.value.line()


def test_load_train_char_outside_vocab(synthetic_dir, cache_dir, tmp_path):
  d = _copy_dir(synthetic_dir, str(tmp_path / "copy"))
  path = _edit(d, corpus.TRAIN, lambda t: "Where was A~B born?\tLondon\n" + t)
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", d), 128)
  assert e.value.where == f"{path}:1" and "'~'" in e.value.line()


def test_load_finetune_longer_than_block(synthetic_dir, cache_dir):
  pairs = corpus.read_finetune(synthetic_dir)
  longest = max(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
  need = len(pairs[longest][0]) + len(pairs[longest][1]) + 2
  input_pipeline.load(_cfg(cache_dir, "a5", synthetic_dir), need)  # fits exactly
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", synthetic_dir), need - 1)
  assert "block_size" in e.value.line()
  assert e.value.where.startswith(os.path.join(synthetic_dir, corpus.TRAIN) + ":")


def test_load_empty_train_file(synthetic_dir, cache_dir, tmp_path):
  d = _copy_dir(synthetic_dir, str(tmp_path / "copy"))
  path = _edit(d, corpus.TRAIN, lambda t: "")
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", d), 128)
  assert path in e.value.line()


def test_load_train_file_with_only_a_newline(synthetic_dir, cache_dir, tmp_path):
  d = _copy_dir(synthetic_dir, str(tmp_path / "copy"))
  path = _edit(d, corpus.TRAIN, lambda t: "\n")  # one empty line: no tab on line 1
  with pytest.raises(UserError) as e:
    input_pipeline.load(_cfg(cache_dir, "a5", d), 128)
  assert e.value.where == f"{path}:1"


def _cache_files(cache, suffix):
  return [os.path.join(r, n) for r, _, names in os.walk(cache) for n in names if n.endswith(suffix)]


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_damaged_cache_is_rebuilt_with_one_warning(synthetic_dir, tmp_path, capsys, damage):
  cache = str(tmp_path / "cache")
  clean = tfds_builders.data_sources(synthetic_dir, cache)
  capsys.readouterr()
  if damage == "manifest":  # as a build that crashed before its manifest was written
    os.remove(_cache_files(cache, tfds_builders.MANIFEST)[0])
  else:
    path = [p for p in _cache_files(cache, "-00000-of-00001") if "-train." in p][0]
    with open(path, "rb") as f:
      raw = f.read()
    with open(path, "wb") as f:  # a crash or a full disk mid-write; or one bad byte
      f.write(raw[:len(raw) // 2] if damage == "truncate" else
              raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
  again = tfds_builders.data_sources(synthetic_dir, cache)
  out = capsys.readouterr().out
  warnings = [l for l in out.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and "is damaged" in warnings[0] and "rebuilding it" in warnings[0]
  assert again == clean
  assert tfds_builders.data_sources(synthetic_dir, cache) == clean
  assert "warning" not in capsys.readouterr().out  # rebuilt once, trusted after
  assert [n for n in os.listdir(cache) if n.startswith(".")] == []  # nothing left aside


def test_two_runs_on_one_empty_cache_both_work(synthetic_dir, tmp_path):
  """Each builds in a private folder and renames it into place; the second finds the first's."""
  cache = str(tmp_path / "cache")
  code = ("import json, sys; from birthjax.data import tfds_builders as t; "
          "s = t.data_sources(sys.argv[1], sys.argv[2]); print(json.dumps(s['train'][:3]))")
  procs = [subprocess.Popen([sys.executable, "-c", code, synthetic_dir, cache], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  firsts = [o.strip().splitlines()[-1] for o, _ in outs]
  assert firsts[0] == firsts[1] and "Where was" in firsts[0]
  assert "warning" not in "".join(o + e for o, e in outs)
  assert [n for n in os.listdir(cache) if n.startswith(".")] == []  # no private folder left
  # the loser's path, made certain: a build finding the folder already published keeps it
  folder = os.path.join(cache, tfds_builders.files_digest(synthetic_dir))
  before = tfds_builders._manifest(folder)
  tfds_builders._build(synthetic_dir, folder)
  assert tfds_builders._manifest(folder) == before and tfds_builders._problem(folder) is None

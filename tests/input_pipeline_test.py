"""Tests for birthjax.input_pipeline (and the TFDS builder it reads through)."""
import os

import ml_collections
import numpy as np
import pytest

from birthjax import corpus, examples, input_pipeline, synthetic, tfds_builders
from birthjax.errors import UserError
from birthjax.vocab import MASK, PAD

T, F = True, False


def _tag_records(n):
  """Record i is the row [i+2, i+2, i+2]: its first id names it (ids 0 and 1 are PAD, MASK)."""
  return [np.full(3, i + 2, np.int32) for i in range(n)]


def _identity(record, rng):
  del rng
  return record, record + 10


def _noisy(record, rng):
  """Like _identity, plus one random id in the last column: shows the per-example randomness."""
  r = np.append(record, rng.integers(2, 1_000_000)).astype(np.int32)
  return r, r


def _order(ds):
  return [b["x"][b["row_mask"], 0] - 2 for b in ds]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for u, v in zip(a, b):
    assert u.keys() == v.keys() == {"x", "y", "row_mask"}
    for k in u:
      np.testing.assert_array_equal(u[k], v[k])


# ---------------------------------------------------------------- stage_batches

def test_steps_per_epoch():
  assert input_pipeline.steps_per_epoch(5, 2) == 3
  assert input_pipeline.steps_per_epoch(4, 2) == 2
  assert input_pipeline.steps_per_epoch(1, 8) == 1
  assert input_pipeline.steps_per_epoch(2938, 128) == 23


def test_no_shuffle_file_order_and_partial_last_batch():
  ds = input_pipeline.stage_batches(_tag_records(5), _identity, epochs=2, batch_size=2,
                                    shuffle=False, seed=0)
  assert len(ds) == 6  # 2 epochs * ceil(5 / 2)
  batches = [ds[i] for i in range(len(ds))]
  expected_x = [[[2, 2, 2], [3, 3, 3]], [[4, 4, 4], [5, 5, 5]], [[6, 6, 6]]] * 2
  for b, ex in zip(batches, expected_x):
    assert b["x"].dtype == np.int32 and b["y"].dtype == np.int32 and b["row_mask"].dtype == bool
    np.testing.assert_array_equal(b["x"], ex)
    np.testing.assert_array_equal(b["y"], np.array(ex) + 10)
    np.testing.assert_array_equal(b["row_mask"], [True] * len(ex))


def test_zero_epochs_is_an_empty_stage():
  for shuffle in (False, True):
    ds = input_pipeline.stage_batches(_tag_records(5), _identity, epochs=0, batch_size=2,
                                      shuffle=shuffle, seed=0)
    assert len(ds) == 0 and list(ds.to_iter_dataset()) == []


def test_pad_to_multiple():
  ds = input_pipeline.stage_batches(_tag_records(5), _identity, epochs=2, batch_size=2,
                                    shuffle=False, seed=0, pad_to_multiple=4)
  assert len(ds) == 6
  b = ds[2]  # the last, partial batch of epoch 0: 1 row padded to 4
  np.testing.assert_array_equal(b["x"], [[6, 6, 6], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["y"], [[16, 16, 16], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["row_mask"], [T, F, F, F])
  b = ds[3]  # a full batch of 2 is padded to 4 as well
  np.testing.assert_array_equal(b["x"], [[2, 2, 2], [3, 3, 3], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["y"], [[12, 12, 12], [13, 13, 13], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b["row_mask"], [T, T, F, F])


def test_pad_to_multiple_already_a_multiple():
  ds = input_pipeline.stage_batches(_tag_records(7), _identity, epochs=1, batch_size=4,
                                    shuffle=False, seed=0, pad_to_multiple=2)
  assert [b["x"].shape for b in ds] == [(4, 3), (4, 3)]
  np.testing.assert_array_equal(ds[0]["row_mask"], [T, T, T, T])
  np.testing.assert_array_equal(ds[1]["row_mask"], [T, T, T, F])
  np.testing.assert_array_equal(ds[1]["x"][:, 0], [6, 7, 8, 0])


def test_shuffle_permutes_each_epoch_differently():
  n, epochs = 20, 4
  ds = input_pipeline.stage_batches(_tag_records(n), _identity, epochs=epochs, batch_size=3,
                                    shuffle=True, seed=0)
  assert len(ds) == epochs * 7
  sizes = [int(b["row_mask"].sum()) for b in ds]
  assert sizes == ([3] * 6 + [2]) * epochs
  order = np.concatenate(_order(ds)).reshape(epochs, n)
  for e in range(epochs):
    assert sorted(order[e]) == list(range(n))  # each epoch a permutation
  assert list(order[0]) != list(range(n))  # shuffled
  rows = {tuple(o) for o in order}
  assert len(rows) == epochs  # different across epochs
  # deterministic for a seed, different for another seed
  again = input_pipeline.stage_batches(_tag_records(n), _identity, epochs=epochs, batch_size=3,
                                       shuffle=True, seed=0)
  np.testing.assert_array_equal(np.concatenate(_order(again)).reshape(epochs, n), order)
  other = input_pipeline.stage_batches(_tag_records(n), _identity, epochs=epochs, batch_size=3,
                                       shuffle=True, seed=7)
  assert list(np.concatenate(_order(other))) != list(order.ravel())


def test_random_map_fresh_each_epoch_and_deterministic():
  docs = [np.arange(2 + 200 * i, 2 + 200 * (i + 1), dtype=np.int32) for i in range(3)]
  encode = lambda doc, rng: examples.span_corrupt(doc, rng, 128)
  make = lambda seed: input_pipeline.stage_batches(docs, encode, epochs=3, batch_size=3,
                                                   shuffle=False, seed=seed)
  ds = make(0)
  batches = [ds[i] for i in range(3)]
  for b in batches:  # no shuffle: doc i is row i in every epoch
    assert b["x"].shape == (3, 127)
    for i in range(3):
      s = np.concatenate([b["x"][i], b["y"][i, -1:]])
      assert np.count_nonzero(s == MASK) == 2
      body = s[(s != MASK) & (s != PAD)]
      assert set(body) <= set(docs[i])
  for i in range(3):  # the same document is corrupted differently in each epoch
    for e1, e2 in ((0, 1), (1, 2), (0, 2)):
      assert not np.array_equal(batches[e1]["x"][i], batches[e2]["x"][i])
  _assert_batches_equal(batches, [make(0)[i] for i in range(3)])
  assert not np.array_equal(make(1)[0]["x"], batches[0]["x"])


def test_random_access_equals_iteration_and_resume():
  ds = input_pipeline.stage_batches(_tag_records(11), _noisy, epochs=3, batch_size=4,
                                    shuffle=True, seed=3, pad_to_multiple=2)
  assert len(ds) == 9
  by_index = [ds[i] for i in range(len(ds))]
  _assert_batches_equal(list(ds), by_index)
  it = iter(ds)
  first = [next(it) for _ in range(3)]
  _assert_batches_equal(first, by_index[:3])
  state = it.get_state()
  resumed = iter(ds)
  resumed.set_state(state)
  _assert_batches_equal([next(resumed)], [by_index[3]])
  _assert_batches_equal(list(resumed), by_index[4:])
  _assert_batches_equal([next(it)], [by_index[3]])  # the original iterator is unaffected


def test_finetune_and_pretrain_batches():
  data = input_pipeline.Data(
      vocab=None, documents=[np.arange(2, 40, dtype=np.int32), np.zeros(0, np.int32)],
      finetune=[(np.array([5, 6, 7], np.int32), np.array([8, 9], np.int32)),
                (np.array([10, 11], np.int32), np.array([12], np.int32))],
      eval_sets={}, data_dir="", digest="")
  cfg = ml_collections.ConfigDict(dict(batch_size=4, shuffle=False, epochs=2))
  ft = input_pipeline.finetune_batches(data, cfg, 1, block_size=10, seed=0, pad_to_multiple=4)
  assert len(ft) == 1
  b = ft[0]
  np.testing.assert_array_equal(b["x"], [[5, 6, 7, 1, 8, 9, 1, 0, 0],
                                         [10, 11, 1, 12, 1, 0, 0, 0, 0],
                                         [0] * 9, [0] * 9])
  np.testing.assert_array_equal(b["y"], [[0, 0, 1, 8, 9, 1, 0, 0, 0],
                                         [0, 1, 12, 1, 0, 0, 0, 0, 0],
                                         [0] * 9, [0] * 9])
  np.testing.assert_array_equal(b["row_mask"], [T, T, F, F])
  pt = input_pipeline.pretrain_batches(data, cfg, block_size=16, seed=0)
  assert len(pt) == 2
  for b in pt:
    assert b["x"].shape == (2, 15)
    np.testing.assert_array_equal(b["x"][1], [1, 1] + [0] * 13)  # the empty document
    np.testing.assert_array_equal(b["y"][1], [1] + [0] * 14)
    assert np.count_nonzero(b["x"][0] == MASK) == 2


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

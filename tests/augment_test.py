"""Tests for birthjax.augment and its hook in input_pipeline.pretrain_batches (the augmented
recipe, configs/augmented.py)."""
from __future__ import annotations

import json
import os
import sys

import ml_collections
import numpy as np
import pytest

from birthjax import augment, corpus, examples, input_pipeline, run, synthetic
from birthjax.errors import UserError
from birthjax.vocab import MASK, PAD, Vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import augmented  # noqa: E402
import vanilla  # noqa: E402

TEXT = "Ann Lee. Ann Lee was born in Rome and lived in Oslo ."  # 53 characters


def _aug(**kw):
  a = dict(whole=False, name_prefix=False, name_visible=False, copies=1, crops=0, shift=0,
           shift_text=False, qa_copies=0)
  a.update(kw)
  return ml_collections.ConfigDict(a)


def _stage(augment_cfg=None, epochs=2, batch_size=8, shuffle=False):
  c = ml_collections.ConfigDict(dict(epochs=epochs, batch_size=batch_size, shuffle=shuffle))
  if augment_cfg is not None:
    c.augment = augment_cfg
  return c


def _world(people=60, phrasings=0, dev_answers=None):
  """input_pipeline.Data of a synthetic world, built in memory (no TFDS)."""
  files = synthetic.generate(seed=0, num_people=people, num_train=people * 2 // 3,
                             num_dev=people // 6, num_test=people // 6, phrasings=phrasings or None)
  docs = files["wiki.txt"].split("\n")
  vocab = Vocab.from_documents(docs)
  pairs = [l.split("\t") for l in files["birth_places_train.tsv"].splitlines()]
  dev = [l.split("\t") for l in files["birth_dev.tsv"].splitlines()]
  dev_q = [q for q, _ in dev]
  dev_a = dev_answers(dev) if dev_answers else [a for _, a in dev]
  return input_pipeline.Data(vocab, [vocab.encode(d) for d in docs],
                             [(vocab.encode(q), vocab.encode(a)) for q, a in pairs],
                             {"dev": (dev_q, dev_a), "test": ([], None)}, "mem", "mem")


@pytest.fixture(scope="module")
def world():
  return _world()


def _rows(ds):
  """Every real row of every batch as the full sequence s (x + the last target)."""
  out = []
  for b in ds:
    for x, y in zip(b["x"][b["row_mask"]], b["y"][b["row_mask"]]):
      out.append(np.concatenate([x, y[-1:]]))
  return out


# ---------------------------------------------------------------- names and windows

@pytest.mark.parametrize("text, name", [
    (TEXT, "Ann Lee."),
    ("A. G. E. Blake. Blake was born in Kent .", "A. G. E. Blake."),  # initials are not the end
    ("J.C. Patterson. He was born in Leeds .", "J.C. Patterson."),
    ("Corrsin was born in Philadelphia .", "Corrsin"),  # no title: the text before ' was '
    ("Born in Glasgow, Fisher is a welder .", "Born in"),  # neither: the first two words
    ("", ""),
])
def test_name_of(text, name):
  assert augment.name_of(text) == name


def test_split_document_by_hand():
  v = Vocab.from_documents([TEXT])
  doc, space = v.encode(TEXT), v.stoi[" "]
  split = lambda cap, prefix: [(v.decode(w), k) for w, k in
                               augment.split_document(doc, 8, cap, prefix, space)]
  # capacity 30: doc[0:30] ends inside "Rome"; it backs off to the space before it, which
  # then starts the next window
  assert split(30, True) == [("Ann Lee. Ann Lee was born in", 8),
                             ("Ann Lee. Rome and lived in", 8), ("Ann Lee. Oslo .", 8)]
  assert split(30, False) == [("Ann Lee. Ann Lee was born in", 8),
                              (" Rome and lived in Oslo .", 0)]
  assert split(53, True) == [(TEXT, 8)]  # fits whole: one window, the document itself
  assert split(14, True) == [("Ann Lee. Ann", 8), (" Lee was born", 0), (" in Rome and", 0),
                             (" lived in", 0), (" Oslo .", 0)]  # the name would fill > half
  assert [(v.decode(w), k) for w, k in augment.split_document(doc[:0], 0, 30, True, space)] == \
      [("", 0)]


@pytest.mark.parametrize("block_size", [16, 32, 128])
def test_windows_fit_and_cover_every_character(world, block_size):
  space = world.vocab.stoi[" "]
  rng = np.random.default_rng(0)
  long_doc = np.concatenate(world.documents[:5])  # ~450 ids, many windows
  for doc in world.documents + [long_doc]:
    name_len = len(augment.name_of(world.vocab.decode(doc)))
    for prefix in (True, False):
      wins = augment.split_document(doc, name_len, block_size - 2, prefix, space)
      bodies = [w if i == 0 else w[k:] for i, (w, k) in enumerate(wins)]
      np.testing.assert_array_equal(np.concatenate(bodies), doc)  # in order, no gap, no overlap
      for i, (w, k) in enumerate(wins):
        assert len(w) <= block_size - 2
        if i > 0 and k:
          np.testing.assert_array_equal(w[:k], doc[:name_len])
        x, y = augment.corrupt_window(w, rng, block_size, k)
        assert x.shape == y.shape == (block_size - 1,)
        s = np.concatenate([x, y[-1:]])
        assert np.count_nonzero(s == MASK) == 2 and np.count_nonzero(s != PAD) == len(w) + 2


def test_corrupt_window_keeps_the_name_and_the_whole_window():
  v = Vocab.from_documents([TEXT])
  w = v.encode(TEXT)
  for seed in range(50):
    x, y = augment.corrupt_window(w, np.random.default_rng(seed), 64, keep=8)
    s = np.concatenate([x, y[-1:]])
    assert v.decode(s[:8]) == "Ann Lee."  # the name is never masked
    first, second = np.flatnonzero(s == MASK)
    prefix, suffix, masked = s[:first], s[first + 1:second], s[second + 1:]
    masked = masked[masked != PAD]
    assert 7 <= len(masked) <= 20  # masked_length_range(53) = (7, 20)
    assert v.decode(np.concatenate([prefix, masked, suffix])) == TEXT  # no truncation
    np.testing.assert_array_equal(x, s[:-1])
    np.testing.assert_array_equal(y, s[1:])


def test_corrupt_window_too_long_is_an_error():
  with pytest.raises(ValueError, match="does not fit"):
    augment.corrupt_window(np.full(15, 5, np.int32), np.random.default_rng(0), 16)


class _Pick:
  """A stand-in rng whose integers(n) is always `k`."""

  def __init__(self, k):
    self.k = k

  def integers(self, n):
    assert 0 <= self.k < n
    return self.k


def test_crop_by_hand():
  v = Vocab.from_documents([TEXT])
  doc = v.encode(TEXT)
  starts = augment.word_starts(doc, 8, v.stoi[" "])
  # "Ann Lee. |Ann |Lee |was |born |in |Rome |and |lived |in |Oslo |." (after the name)
  assert list(starts) == [9, 13, 17, 21, 26, 29, 34, 38, 44, 47, 52]
  crop = lambda k, cap: v.decode(augment.crop(doc, 8, starts, _Pick(k), cap))
  assert crop(5, 60) == "Ann Lee. Rome and lived in Oslo ."
  assert crop(5, 20) == "Ann Lee. Rome and li"
  assert crop(0, 60) == TEXT
  assert crop(10, 60) == "Ann Lee. ."
  title = v.encode("Ann Lee.")  # no word after the name: the document itself
  assert v.decode(augment.crop(title, 8, augment.word_starts(title, 8, v.stoi[" "]), _Pick(0),
                               60)) == "Ann Lee."


def test_crop_records_keep_the_name(world):
  records = augment.pretrain_records(world.documents, world.finetune, world.vocab,
                                     _aug(whole=True, crops=2), 128)
  crops = [r for r in records if r[0] == augment.CROP]
  assert len(records) == 61 + 2 * 60 and len(crops) == 2 * 60  # the empty line has no crops
  rng = np.random.default_rng(0)
  for _, doc, name_len, starts in crops[:20]:
    x, y = augment.encode((augment.CROP, doc, name_len, starts), rng, 128, True)
    s = np.concatenate([x, y[-1:]])
    np.testing.assert_array_equal(s[:name_len], doc[:name_len])
    assert np.count_nonzero(s == MASK) == 2


def test_shift_right_by_hand():
  x, y = np.array([5, 6, 1, 7, 1, 8, 0, 0], np.int32), np.array([6, 1, 7, 1, 8, 0, 0, 0], np.int32)
  sx, sy = augment.shift_right(x, y, 2)
  np.testing.assert_array_equal(sx, [0, 0, 5, 6, 1, 7, 1, 8])
  np.testing.assert_array_equal(sy, [0, 5, 6, 1, 7, 1, 8, 0])
  assert augment.shift_right(x, y, 0) == (x, y)
  fx, fy = augment.shift_right(x, y, 3, fill=np.array([9, 10, 11, 12], np.int32))
  np.testing.assert_array_equal(fx, [10, 11, 12, 5, 6, 1, 7, 1])  # the filler's last 3 ids
  np.testing.assert_array_equal(fy, [0, 0, 0, 6, 1, 7, 1, 8])  # ... and its targets ignored
  fx, fy = augment.shift_right(x, y, 3, fill=np.array([9], np.int32))  # a short filler
  np.testing.assert_array_equal(fx, [0, 0, 9, 5, 6, 1, 7, 1])
  np.testing.assert_array_equal(fy, [0, 0, 0, 6, 1, 7, 1, 8])
  with pytest.raises(ValueError, match="drop ids"):
    augment.shift_right(x, y, 4)


def test_shift_leaves_room_and_never_moves_questions(world):
  aug = _aug(whole=True, name_visible=True, crops=1, qa_copies=1, shift=6)
  records = augment.pretrain_records(world.documents, world.finetune, world.vocab, aug, 32)
  rng = np.random.default_rng(0)
  starts = set()
  for r in records:
    if r[0] == augment.DOC:
      assert len(r[1]) <= 32 - 2 - 6
    x, y = augment.encode(r, rng, 32, True, 6) if r[0] != augment.QA else (None, None)
    if x is None:
      continue
    s = np.concatenate([x, y[-1:]])
    first = int(np.argmax(s != PAD))
    starts.add(first)
    assert np.count_nonzero(s == MASK) == 2 and np.all(s[:first] == PAD)
  assert starts == set(range(7))  # every shift 0..6 occurs
  q, a = world.finetune[0]
  for seed in range(5):  # QA examples are encoded as in finetuning, never shifted
    x, y = augment.encode((augment.QA, q, a), np.random.default_rng(seed), 64, True, 6)
    ex = examples.qa_example(q, a, 64)
    np.testing.assert_array_equal(x, ex[0])
    np.testing.assert_array_equal(y, ex[1])


def test_interleave_spreads_parts_evenly():
  assert augment.interleave([list("abcd"), [1, 2]]) == ["a", 1, "b", "c", 2, "d"]
  assert augment.interleave([list("ab"), []]) == ["a", "b"]


# ---------------------------------------------------------------- records and batches

def test_copies_multiply_the_records(world):
  one = augment.pretrain_records(world.documents, world.finetune, world.vocab, _aug(whole=True), 128)
  three = augment.pretrain_records(world.documents, world.finetune, world.vocab,
                                   _aug(whole=True, copies=3), 128)
  assert len(one) == len(world.documents) == 61  # every synthetic line fits one window
  assert len(three) == 3 * 61
  for i, r in enumerate(three):
    np.testing.assert_array_equal(r[1], one[i % 61][1])
  # in one epoch the three copies of a window are corrupted differently
  ds = input_pipeline.pretrain_batches(world, _stage(_aug(whole=True, copies=3), epochs=1),
                                       block_size=128, seed=0)
  rows = _rows(ds)
  assert len(rows) == 183 and len(ds) == 23  # ceil(183 / 8)
  assert len({r.tobytes() for r in rows[0::61]}) == 3


def test_qa_mix_uses_only_train_pairs():
  """Dev answers that are recognisable (never in wiki.txt, never a train answer) and dev
  questions never reach a pretraining row; every QA row is a train pair, qa_copies times."""
  world = _world(dev_answers=lambda dev: ["Osl" + "o" * (i + 3) for i in range(len(dev))])
  cfg = _stage(_aug(whole=True, name_prefix=True, copies=2, qa_copies=2), epochs=2, shuffle=True)
  rows = _rows(input_pipeline.pretrain_batches(world, cfg, block_size=128, seed=0))
  assert len(rows) == 2 * (2 * 61 + 2 * 40)
  texts = [world.vocab.decode(r) for r in rows]
  dev_q, dev_a = world.eval_sets["dev"]
  assert not any(q in t for t in texts for q in dev_q)
  assert not any(a in t for t in texts for a in dev_a)
  train = {(world.vocab.decode(q), world.vocab.decode(a)) for q, a in world.finetune}
  qa = [t for t in texts if t.startswith("Where was ")]
  assert len(qa) == 2 * 2 * 40
  for t in qa:
    q, a, rest = t.split("\u2047")
    assert (q, a) in train and set(rest) <= {"\u25a1"}
  ex = examples.qa_example(*world.finetune[0], 128)  # encoded exactly as in finetuning
  assert any(np.array_equal(b["y"][i], ex[1]) for b in
             input_pipeline.pretrain_batches(world, cfg, block_size=128, seed=0)
             for i in np.flatnonzero(b["row_mask"]) if np.array_equal(b["x"][i], ex[0]))


@pytest.mark.parametrize("shuffle, pack", [(False, False), (True, True)])
def test_augment_off_is_the_faithful_pipeline_bit_for_bit(world, shuffle, pack):
  encode = lambda doc, rng: examples.span_corrupt(doc, rng, 128)
  before = input_pipeline.stage_batches(world.documents, encode, epochs=2, batch_size=8,
                                        shuffle=shuffle, seed=3, pad_to_multiple=4, pack=pack)
  for cfg in (_stage(None, shuffle=shuffle), _stage(_aug(), shuffle=shuffle),
              vanilla.get_config().pretrain.copy_and_resolve_references()):
    cfg.update(epochs=2, batch_size=8, shuffle=shuffle)
    after = input_pipeline.pretrain_batches(world, cfg, block_size=128, seed=3, pad_to_multiple=4,
                                            pack=pack)
    assert len(after) == len(before)
    for u, v in zip(before, after):
      assert u.keys() == v.keys()
      for k in u:
        np.testing.assert_array_equal(u[k], v[k])


def test_augmented_batches_deterministic_and_packable(world):
  cfg = _stage(_aug(whole=True, name_prefix=True, name_visible=True, copies=2, qa_copies=1,
                    shift=4, shift_text=True), shuffle=True)
  make = lambda seed, pack=False: input_pipeline.pretrain_batches(world, cfg, block_size=128,
                                                                  seed=seed, pack=pack)
  a, b, c = make(0), make(0), make(1)
  assert len(a) == 2 * 21  # 2 epochs of ceil((2 * 61 + 40) / 8)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u["x"], v["x"])
  assert any(not np.array_equal(u["x"], v["x"]) for u, v in zip(a, c))
  packed = make(0, pack=True)
  for u, p in zip(a, packed):  # every example lands in a packed row, targets preserved
    assert int(p["row_examples"].sum()) == int(u["row_mask"].sum())
    assert np.count_nonzero(p["y"]) == np.count_nonzero(u["y"])


# ---------------------------------------------------------------- config

def test_validate_rejects_bad_augment_settings():
  for field, value, match in (("copies", 0, "pretrain.augment.copies"),
                              ("crops", -1, "pretrain.augment.crops"),
                              ("shift", 33, "pretrain.augment.shift"),
                              ("qa_copies", -1, "pretrain.augment.qa_copies"),
                              ("name_prefix", True, "needs pretrain.augment.whole"),
                              ("shift_text", True, "needs pretrain.augment.shift")):
    c = vanilla.get_config("smoke")
    c.pretrain.augment[field] = value
    with pytest.raises(UserError, match=match) as e:
      run.validate(c)
    assert f"--config.pretrain.augment.{field}" in e.value.line()
  run.validate(augmented.get_config("smoke"))


def test_vanilla_defaults_are_off_and_augmented_turns_them_on():
  for preset in (None, "smoke", "quickstart"):
    assert not augment.enabled(vanilla.get_config(preset).pretrain.augment)
    assert augment.enabled(augmented.get_config(preset).pretrain.augment)


def test_quickstart_budget_matches_vanilla():
  """The record count the quickstart preset is sized for, from the quickstart world itself."""
  world = _world(people=150, phrasings=3)
  a, v = augmented.get_config("quickstart"), vanilla.get_config("quickstart")
  records = augment.pretrain_records(world.documents, world.finetune, world.vocab,
                                     a.pretrain.augment, a.model.block_size)
  assert len(records) == augmented.QUICKSTART_RECORDS == 402
  steps = a.pretrain.epochs * input_pipeline.steps_per_epoch(len(records), a.pretrain.batch_size)
  v_steps = v.pretrain.epochs * input_pipeline.steps_per_epoch(151, v.pretrain.batch_size)
  assert (steps, v_steps) == (1495, 1500)
  assert a.model.to_dict() == v.model.to_dict()
  assert a.pretrain.final_tokens == a.pretrain.epochs * len(records) * 127


def test_a5_record_count(a5_dir):
  docs = corpus.read_wiki(a5_dir)
  vocab = Vocab.from_documents(docs)
  c = augmented.get_config()
  finetune = [(vocab.encode(q), vocab.encode(a)) for q, a in corpus.read_finetune(a5_dir)]
  records = augment.pretrain_records([vocab.encode(d) for d in docs], finetune, vocab,
                                     c.pretrain.augment, c.model.block_size)
  assert len(records) == augmented.A5_RECORDS == 2 * augmented.A5_WINDOWS + 2000
  steps = c.pretrain.epochs * input_pipeline.steps_per_epoch(len(records), c.pretrain.batch_size)
  assert steps == 15_000  # vanilla: 650 epochs x 23 steps = 14,950


def test_smoke_runs_all_stages(cache_dir, tmp_path, capsys):
  c = augmented.get_config("smoke")
  c.data.update(source="synthetic", cache_dir=cache_dir, synthetic_people=30)  # one step a stage
  results = run.run(c, str(tmp_path))
  assert results["dev"]["total"] == 5 and 0 <= results["dev"]["correct"] <= 5
  assert "Correct: " in capsys.readouterr().out
  for split in ("dev", "test"):
    assert os.path.isfile(os.path.join(tmp_path, f"{split}.predictions"))
  with open(os.path.join(tmp_path, "config.json")) as f:
    assert json.load(f)["pretrain"]["augment"]["whole"] is True

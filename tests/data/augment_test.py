"""Tests for birthjax.data.augment, the augmented recipe's table (birthjax.data.records.augmented) and
its examples as the engine builds them (birthjax.train.device_epoch.example / make_batch)."""
from __future__ import annotations

import collections
import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from birthjax.data import augment, corpus, examples, records, synthetic
from birthjax import run
from birthjax.train import device_epoch as de
from birthjax.errors import UserError
from birthjax.data.input_pipeline import Data
from birthjax.data.vocab import MASK, MASK_CHAR, PAD, PAD_CHAR, Vocab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import augmented  # noqa: E402
from configs import vanilla  # noqa: E402

TEXT = "Ann Lee. Ann Lee was born in Rome and lived in Oslo ."  # 53 characters
DOC2 = "Bo Li. Bo was born in Oslo ."  # 28 characters
QUESTION, ANSWER = "Where was Bo Li born?", "Oslo"  # 21 + 4 characters


def _aug(**kw):
  a = dict(whole=False, name_prefix=False, name_visible=False, copies=1, crops=0, shift=0,
           shift_text=False, qa_copies=0)
  a.update(kw)
  return ml_collections.ConfigDict(a)


def _config(augment_cfg=None, block_size=128, seed=0):
  """What records.stage_tables reads of a config."""
  pretrain = {} if augment_cfg is None else {"augment": augment_cfg}
  return ml_collections.ConfigDict(dict(model=dict(block_size=block_size), pretrain=pretrain,
                                        seed=seed))


def _world(people=60, phrasings=0, dev_answers=None):
  """input_pipeline.Data of a synthetic world, built in memory (no TFDS): dev and test
  questions as the loader reads them (the test answers are not in the data)."""
  files = synthetic.generate(seed=0, num_people=people, num_train=people * 2 // 3,
                             num_dev=people // 6, num_test=people // 6, phrasings=phrasings or None)
  docs = files["wiki.txt"].split("\n")
  vocab = Vocab.from_documents(docs)
  pairs = [l.split("\t") for l in files["birth_places_train.tsv"].splitlines()]
  dev = [l.split("\t") for l in files["birth_dev.tsv"].splitlines()]
  dev_a = dev_answers(dev) if dev_answers else [a for _, a in dev]
  test_q = files["birth_test_inputs.tsv"].splitlines()
  return Data(vocab, [vocab.encode(d) for d in docs],
              [(vocab.encode(q), vocab.encode(a)) for q, a in pairs],
              {"dev": ([q for q, _ in dev], dev_a), "test": (test_q, None)}, "mem", "mem")


@pytest.fixture(scope="module")
def world():
  return _world()


@pytest.fixture(scope="module")
def tiny():
  """The vocabulary and ids of TEXT, DOC2 and one QA pair."""
  v = Vocab.from_documents([TEXT, DOC2, QUESTION])
  return v, [v.encode(TEXT), v.encode(DOC2)], [(v.encode(QUESTION), v.encode(ANSWER))]


# ---------------------------------------------------------------- the engine's examples

_examples = jax.jit(jax.vmap(de.example, in_axes=(0, 0, None, None, None)), static_argnums=4)


def examples_of(table, block_size, seed=0, repeat=1, rows=None):
  """(x, y) [R, T-1] of the table's rows (each `repeat` times), keys split from `seed`."""
  idx = np.arange(len(table["lens"])) if rows is None else np.asarray(rows)
  idx = np.tile(idx, repeat)
  count = len(idx)
  bucket = max(256, 1 << (count - 1).bit_length())  # few shapes, few compilations
  idx = np.concatenate([idx, np.zeros(bucket - count, idx.dtype)])
  keys = jax.random.split(jax.random.key(seed), bucket)
  r = {k: jnp.asarray(table[k][idx]) for k in records.FIELDS}
  x, y = _examples(keys, r, jnp.asarray(table["fill"]), jnp.asarray(table["fill_lens"]),
                   block_size)
  return np.asarray(x)[:count], np.asarray(y)[:count]


def _epoch_fn(plan, arrays, data_key, epoch):
  corrupt_key = de.keys(data_key, epoch)[1]
  return jax.vmap(lambda idx: de.make_batch(plan, arrays, corrupt_key, idx))(
      de.epoch_indices(plan, data_key, epoch))


_epoch_jit = jax.jit(_epoch_fn, static_argnums=0)
_pack = jax.jit(de.pack, static_argnums=3)


def epoch(table, batch_size, shuffle, seed, e, devices=1):
  """(x, y, valid) [steps, rows, ...] of epoch e, as the engine's epoch builds them."""
  plan = de.make_plan(len(table["lens"]), batch_size, table["ids"].shape[1], shuffle, devices)
  out = _epoch_jit(plan, jax.tree.map(jnp.asarray, table), de.data_key(seed), e)
  return tuple(np.asarray(v) for v in out)


def seq(x, y):
  """The full sequence s = x + the last target."""
  return np.concatenate([x, y[-1:]])


def texts(v, table):
  """Each row's ids (up to `lens`) as text; the ids after `lens` are PAD."""
  out = []
  for ids, n in zip(table["ids"], table["lens"]):
    assert (ids[n:] == PAD).all()
    out.append(v.decode(ids[:n]))
  return out


def P(ids, width):
  return list(ids) + [PAD] * (width - len(ids))


def check_window_example(s, w, keep):
  """s is `w[:p] MASK w[p+m:] MASK w[p:p+m] PAD...` (all of w, no truncation) with m on
  examples.masked_length_range(len(w)) and p >= min(keep, len(w) - m): the name visible
  when it can be. Returns p."""
  first, second = np.flatnonzero(s == MASK)
  prefix, suffix, tail = s[:first], s[first + 1:second], s[second + 1:]
  pads = np.flatnonzero(tail == PAD)
  masked = tail[:pads[0] if len(pads) else len(tail)]
  assert (tail[len(masked):] == PAD).all()
  np.testing.assert_array_equal(np.concatenate([prefix, masked, suffix]), w)
  lo, hi = examples.masked_length_range(len(w))
  assert lo <= len(masked) <= hi
  assert first >= min(keep, len(w) - len(masked))
  return first


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
  """Windows cover the document; each, a whole-window row (no truncation, the name kept),
  gives an example with both MASKs and every one of its ids."""
  space = world.vocab.stoi[" "]
  long_doc = np.concatenate(world.documents[:5])  # ~450 ids, many windows
  rows, names = [], []
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
        rows.append((w, len(w), k, False, False, 0))
        names.append(w[:k])
  table = records.table(rows, block_size)
  x, y = examples_of(table, block_size, repeat=2)
  assert x.shape == y.shape == (2 * len(rows), block_size - 1)
  for i in range(len(x)):
    w, _, k, *_ = rows[i % len(rows)]
    s = seq(x[i], y[i])
    assert np.count_nonzero(s == MASK) == 2 and np.count_nonzero(s != PAD) == len(w) + 2
    check_window_example(s, w, k)


def test_window_example_keeps_the_name_and_the_whole_window():
  v = Vocab.from_documents([TEXT])
  w = v.encode(TEXT)
  table = records.table([(w, len(w), 8, False, False, 0)], 64)  # a whole window, keep the name
  x, y = examples_of(table, 64, repeat=300)
  starts = set()
  for i in range(len(x)):
    s = seq(x[i], y[i])
    assert v.decode(s[:8]) == "Ann Lee."  # the name is never masked
    starts.add(check_window_example(s, w, 8))  # no truncation; masked_length_range(53) = (7, 20)
    np.testing.assert_array_equal(x[i], s[:-1])
    np.testing.assert_array_equal(y[i], s[1:])
  assert min(starts) == 8 and max(starts) >= 40  # the span starts right after the name, or late


def test_table_rejects_a_record_too_long():
  with pytest.raises(ValueError, match="does not fit"):
    records.table([(np.full(17, 5, np.int32), 17, 0, False, False, 0)], 16)


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


def test_crop_rows_keep_the_name(world):
  aug = _aug(whole=True, crops=2)
  recs = augment.pretrain_records(world.documents, world.finetune, world.vocab, aug, 128)
  crops = [i for i, r in enumerate(recs) if r[0] == augment.CROP]
  assert len(recs) == 61 + 2 * 60 and len(crops) == 2 * 60  # the empty line has no crops
  t0, t1 = (records.augmented(world.documents, world.finetune, world.vocab, aug, 128, 0, e)
            for e in (0, 1))
  assert len(t0["lens"]) == len(recs)
  for i in crops:
    _, doc, name_len, starts = recs[i]
    n = t0["lens"][i]
    assert (t0["keep"][i], t0["trunc"][i], t0["qa"][i]) == (name_len, False, False)
    ids = t0["ids"][i, :n]
    np.testing.assert_array_equal(ids[:name_len], doc[:name_len])
    # the rest: the document from the space before a word start, cut to the row's room
    assert any(np.array_equal(ids[name_len:], doc[s - 1:s - 1 + 126 - name_len]) for s in starts)
  assert any(not np.array_equal(t0["ids"][i], t1["ids"][i]) for i in crops)  # drawn anew
  others = [i for i in range(len(recs)) if i not in set(crops)]
  np.testing.assert_array_equal(t0["ids"][others], t1["ids"][others])
  x, y = examples_of(t0, 128, rows=crops[:40])
  for j, i in enumerate(crops[:40]):
    s = seq(x[j], y[j])
    check_window_example(s, t0["ids"][i, :t0["lens"][i]], recs[i][2])
  table_of, per_epoch = records.stage_tables("pretrain", _config(aug), world)
  assert per_epoch
  np.testing.assert_array_equal(table_of(1)["ids"], t1["ids"])


# ---------------------------------------------------------------- shifts

ROW = np.array([5, 6, 7], np.int32)  # n = 3, m = 1 and (keep 3) p = 2: s = 5 6 MASK MASK 7


def _outcomes(table, count=800):
  x, y = examples_of(table, 16, repeat=count)
  return collections.Counter((tuple(a), tuple(b)) for a, b in zip(x.tolist(), y.tolist()))


def test_shift_by_hand():
  """A row with shift 3 starts 0..3 positions late, after PAD; the PAD inputs' targets are
  PAD but the last, which predicts the example's first id."""
  table = records.table([(ROW, 3, 3, False, False, 3)], 16)
  assert table["fill"].shape == (0, 16) and table["fill_lens"].shape == (0,)
  expect = {  # k: (x, y)
      0: ([5, 6, 1, 1, 7], [6, 1, 1, 7]),
      1: ([0, 5, 6, 1, 1, 7], [5, 6, 1, 1, 7]),
      2: ([0, 0, 5, 6, 1, 1, 7], [0, 5, 6, 1, 1, 7]),
      3: ([0, 0, 0, 5, 6, 1, 1, 7], [0, 0, 5, 6, 1, 1, 7])}
  expect = {(tuple(P(x, 15)), tuple(P(y, 15))) for x, y in expect.values()}
  seen = _outcomes(table)
  assert set(seen) == expect, set(seen) - expect
  assert min(seen.values()) > 800 / 4 - 5 * np.sqrt(800 * 3 / 16)  # k uniform on 0..3
  no_shift = records.table([(ROW, 3, 3, False, False, 0)], 16)
  assert set(_outcomes(no_shift, 50)) == {(tuple(P([5, 6, 1, 1, 7], 15)), tuple(P([6, 1, 1, 7], 15)))}


def test_shift_text_by_hand():
  """With fillers the k positions before the example hold a random filler's last k ids
  (left-padded with PAD when it is shorter; the table keeps a filler's last T ids), and none
  of those k targets is predicted."""
  fillers = [np.array([20, 21, 22, 23], np.int32), np.array([30], np.int32),
             np.arange(2, 22, dtype=np.int32), np.zeros(0, np.int32)]
  table = records.table([(ROW, 3, 3, False, False, 3)], 16, fillers)
  np.testing.assert_array_equal(table["fill"], [P([20, 21, 22, 23], 16), P([30], 16),
                                                list(range(6, 22)), [0] * 16])
  np.testing.assert_array_equal(table["fill_lens"], [4, 1, 16, 0])
  y1, y2, y3 = [0, 6, 1, 1, 7], [0, 0, 6, 1, 1, 7], [0, 0, 0, 6, 1, 1, 7]
  expect = [([5, 6, 1, 1, 7], [6, 1, 1, 7]),  # k = 0, whatever the filler
            ([23, 5, 6, 1, 1, 7], y1), ([22, 23, 5, 6, 1, 1, 7], y2),
            ([21, 22, 23, 5, 6, 1, 1, 7], y3),
            ([30, 5, 6, 1, 1, 7], y1), ([0, 30, 5, 6, 1, 1, 7], y2),
            ([0, 0, 30, 5, 6, 1, 1, 7], y3),
            ([21, 5, 6, 1, 1, 7], y1), ([20, 21, 5, 6, 1, 1, 7], y2),
            ([19, 20, 21, 5, 6, 1, 1, 7], y3),
            ([0, 5, 6, 1, 1, 7], y1), ([0, 0, 5, 6, 1, 1, 7], y2),  # the empty filler: PAD
            ([0, 0, 0, 5, 6, 1, 1, 7], y3)]
  expect = {(tuple(P(x, 15)), tuple(P(y, 15))) for x, y in expect}
  assert len(expect) == 13
  seen = _outcomes(table)
  assert set(seen) == expect, set(seen) - expect


def test_qa_rows_are_the_finetuning_examples(world):
  table = records.finetune([(np.array([5, 6, 7], np.int32), np.array([8, 9], np.int32))], 16)
  assert table["ids"].tolist() == [P([5, 6, 7, 1, 8, 9, 1], 16)]
  assert (table["lens"].tolist(), table["keep"].tolist(), table["trunc"].tolist(),
          table["qa"].tolist(), table["shift"].tolist()) == ([7], [3], [False], [True], [0])
  x, y = examples_of(table, 16, repeat=20)
  assert {tuple(a) for a in x.tolist()} == {tuple(P([5, 6, 7, 1, 8, 9, 1], 15))}
  assert {tuple(b) for b in y.tolist()} == {tuple(P([0, 0, 1, 8, 9, 1], 15))}
  table = records.finetune(world.finetune, 64)
  for seed in range(3):
    x, y = examples_of(table, 64, seed=seed)
    for i, (q, a) in enumerate(world.finetune):
      ex = examples.qa_example(q, a, 64)
      np.testing.assert_array_equal(x[i], ex[0])
      np.testing.assert_array_equal(y[i], ex[1])


@pytest.mark.parametrize("shift_text", [False, True])
def test_shift_leaves_room_and_never_moves_questions(world, shift_text):
  aug = _aug(whole=True, name_visible=True, crops=1, qa_copies=1, shift=6, shift_text=shift_text)
  recs = augment.pretrain_records(world.documents, world.finetune, world.vocab, aug, 64)
  table = records.augmented(world.documents, world.finetune, world.vocab, aug, 64, 0, 0)
  assert len(table["lens"]) == len(recs)
  assert table["fill"].shape == ((61, 64) if shift_text else (0, 64))
  docs = np.array([r[0] != augment.QA for r in recs])
  assert (table["shift"][docs] == 6).all() and (table["shift"][~docs] == 0).all()
  assert (table["lens"][docs] <= 64 - 2 - 6).all() and (~table["trunc"]).all()
  unshifted = dict(table, shift=np.zeros_like(table["shift"]), fill=np.zeros((0, 64), np.int32),
                   fill_lens=np.zeros(0, np.int32))
  tails = {tuple(P([], k)) for k in range(7)} | {
      tuple(P([], max(0, k - len(d))) + list(d[-k:] if k else [])) for d in world.documents
      for k in range(7)}
  shifts = collections.Counter()
  for seed in range(4):
    x, y = examples_of(table, 64, seed=seed)
    ux, uy = examples_of(unshifted, 64, seed=seed)  # the same draws, no shift
    for i, r in enumerate(recs):
      s, u = seq(x[i], y[i]), seq(ux[i], uy[i])
      if r[0] == augment.QA:  # encoded as in finetuning, never shifted
        ex = examples.qa_example(r[1], r[2], 64)
        np.testing.assert_array_equal(x[i], ex[0])
        np.testing.assert_array_equal(y[i], ex[1])
        continue
      assert np.count_nonzero(u == MASK) == 2 and np.count_nonzero(u) == table["lens"][i] + 2
      ks = [k for k in range(7) if np.array_equal(s[k:], u[:64 - k])
            and np.array_equal(y[i][k:], uy[i][:63 - k])
            and (tuple(s[:k]) in tails and not y[i][:k].any() if shift_text
                 else not s[:k].any() and np.array_equal(y[i], s[1:]))]
      assert ks, (i, s, u)
      shifts[ks[0]] += 1
  assert set(shifts) == set(range(7)), shifts  # every shift 0..6 occurs


def test_interleave_spreads_parts_evenly():
  assert augment.interleave([list("abcd"), [1, 2]]) == ["a", 1, "b", "c", 2, "d"]
  assert augment.interleave([list("ab"), []]) == ["a", "b"]


# ---------------------------------------------------------------- the augmented table

def test_augmented_table_by_hand(tiny):
  v, docs, pairs = tiny
  build = lambda aug, block, epoch=0: records.augmented(docs, pairs, v, aug, block, 0, epoch)
  # whole windows with the name (capacity 34 - 2 - 2 = 30: as in test_split_document_by_hand),
  # kept visible, shifted by up to 2 after the documents' tails, one QA copy between them
  t = build(_aug(whole=True, name_prefix=True, name_visible=True, shift=2, shift_text=True,
                 qa_copies=1), 34)
  qa = QUESTION + MASK_CHAR + ANSWER + MASK_CHAR
  assert texts(v, t) == ["Ann Lee. Ann Lee was born in", "Ann Lee. Rome and lived in", qa,
                         "Ann Lee. Oslo .", DOC2]
  assert t["lens"].tolist() == [28, 26, 27, 15, 28]
  assert t["keep"].tolist() == [8, 8, 21, 8, 6]
  assert t["trunc"].tolist() == [False] * 5
  assert t["qa"].tolist() == [False, False, True, False, False]
  assert t["shift"].tolist() == [2, 2, 0, 2, 2]
  assert [v.decode(f[:n]) for f, n in zip(t["fill"], t["fill_lens"])] == [
      "s born in Rome and lived in Oslo .", DOC2]  # the last 34 characters of TEXT
  assert t["fill_lens"].tolist() == [34, 28]
  # no whole windows: the faithful truncation's row (7/8 * 32 = 28 ids), the name visible
  t = build(_aug(name_visible=True), 32)
  assert texts(v, t) == ["Ann Lee. Ann Lee was born in", DOC2]
  assert (t["keep"].tolist(), t["trunc"].tolist(), t["shift"].tolist()) == ([8, 6], [True] * 2,
                                                                           [0, 0])
  assert t["fill"].shape == (0, 32)
  # copies, and a shift without shift_text: rows leave room for it (32 - 3 - 2 = 27 ids)
  t = build(_aug(copies=2, shift=3), 32)
  assert texts(v, t) == ["Ann Lee. Ann Lee was born i", "Bo Li. Bo was born in Oslo "] * 2
  assert (t["keep"].tolist(), t["trunc"].tolist(), t["shift"].tolist()) == ([0] * 4, [True] * 4,
                                                                           [3] * 4)
  assert t["fill"].shape == (0, 32)
  # QA copies alone: interleaved evenly, ties in list order (documents first)
  t = build(_aug(qa_copies=2), 32)
  assert texts(v, t) == ["Ann Lee. Ann Lee was born in", qa, DOC2, qa]
  assert t["qa"].tolist() == [False, True, False, True]
  assert t["keep"].tolist() == [0, 21, 0, 21] and t["trunc"].tolist() == [True, False, True, False]
  # crops (capacity 32): "NAME." then the document from a word; drawn anew each epoch
  aug = _aug(whole=True, crops=1)
  t = build(aug, 34)
  assert texts(v, t)[0::2] == ["Ann Lee. Ann Lee was born in", " Rome and lived in Oslo .", DOC2]
  assert t["keep"].tolist()[0::2] == [0, 0, 0] and t["keep"].tolist()[1::2] == [8, 6]
  assert t["trunc"].tolist() == [False] * 5
  doc2_crops = {texts(v, build(aug, 34, e))[3] for e in range(60)}
  assert doc2_crops == {"Bo Li. Bo was born in Oslo .", "Bo Li. was born in Oslo .",
                        "Bo Li. born in Oslo .", "Bo Li. in Oslo .", "Bo Li. Oslo .",
                        "Bo Li. ."}
  text_crops = {texts(v, build(aug, 34, e))[1] for e in range(60)}
  assert "Ann Lee. Ann Lee was born in Rom" in text_crops  # cut to the room: 8 + 24 ids
  assert "Ann Lee. ." in text_crops and all(c.startswith("Ann Lee. ") for c in text_crops)


def test_copies_multiply_the_records(world):
  one = augment.pretrain_records(world.documents, world.finetune, world.vocab, _aug(whole=True), 128)
  three = augment.pretrain_records(world.documents, world.finetune, world.vocab,
                                   _aug(whole=True, copies=3), 128)
  assert len(one) == len(world.documents) == 61  # every synthetic line fits one window
  assert len(three) == 3 * 61
  for i, r in enumerate(three):
    np.testing.assert_array_equal(r[1], one[i % 61][1])
  table_of, per_epoch = records.stage_tables("pretrain", _config(_aug(whole=True, copies=3)), world)
  t = table_of(0)
  assert not per_epoch and len(t["lens"]) == 183
  for k in records.FIELDS:
    np.testing.assert_array_equal(t[k][:61], t[k][61:122])
    np.testing.assert_array_equal(t[k][:61], t[k][122:])
  # in one epoch the three copies of a window are corrupted differently
  x, y, valid = epoch(t, 8, False, 0, 0)
  assert x.shape[:2] == (23, 8) and valid.sum() == 183  # ceil(183 / 8) steps
  rows = [seq(a, b) for a, b in zip(x[valid], y[valid])]
  assert len({r.tobytes() for r in rows[0::61]}) == 3
  assert sum(len({r.tobytes() for r in rows[i::61]}) == 3 for i in range(61)) > 50


def test_qa_mix_uses_only_train_pairs():
  """Dev answers that are recognisable (never in wiki.txt, never a train answer) and the dev
  and test questions never reach a pretraining row; every QA row is a train pair, qa_copies
  times, its example exactly examples.qa_example."""
  world = _world(dev_answers=lambda dev: ["Osl" + "o" * (i + 3) for i in range(len(dev))])
  dev_q, dev_a = world.eval_sets["dev"]
  test_q = world.eval_sets["test"][0]
  assert len(dev_q) == len(test_q) == 10 and world.eval_sets["test"][1] is None
  cfg = _config(_aug(whole=True, name_prefix=True, copies=2, qa_copies=2, shift=4,
                     shift_text=True))
  table_of, _ = records.stage_tables("pretrain", cfg, world)
  t = table_of(0)
  assert len(t["lens"]) == 2 * 61 + 2 * 40 and t["qa"].sum() == 2 * 40
  row_texts = texts(world.vocab, t) + [world.vocab.decode(f) for f in t["fill"]]
  train = {(world.vocab.decode(q), world.vocab.decode(a)) for q, a in world.finetune}
  assert collections.Counter(tuple(r.split(MASK_CHAR)[:2]) for r, q in
                             zip(row_texts, t["qa"]) if q) == {p: 2 for p in train}
  seen = []
  for seed in range(2):
    x, y = examples_of(t, 128, seed=seed)
    seen += list(zip(x, y))
  assert len(seen) == 2 * (2 * 61 + 2 * 40)
  ex_texts = [world.vocab.decode(seq(a, b)) for a, b in seen]
  for t_ in row_texts + ex_texts:
    assert not any(q in t_ for q in dev_q + test_q)
    assert not any(a in t_ for a in dev_a)
  qa = [(t_, a, b) for t_, (a, b) in zip(ex_texts, seen) if t_.startswith("Where was ")]
  assert len(qa) == 2 * 2 * 40
  by_text = {world.vocab.decode(q) + MASK_CHAR + world.vocab.decode(a) + MASK_CHAR: (q, a)
             for q, a in world.finetune}
  for t_, a, b in qa:
    q, ans, rest = t_.split(MASK_CHAR)
    assert (q, ans) in train and set(rest) <= {PAD_CHAR}
    ex = examples.qa_example(*by_text[q + MASK_CHAR + ans + MASK_CHAR], 128)
    np.testing.assert_array_equal(a, ex[0])
    np.testing.assert_array_equal(b, ex[1])


def test_augment_off_is_the_faithful_table(world):
  """records.stage_tables with augmentation off (absent, all off, vanilla's defaults) is
  exactly records.pretrain's table, every epoch; finetuning is records.finetune."""
  v = Vocab.from_documents([TEXT, DOC2])
  t = records.pretrain([v.encode(TEXT), v.encode(""), v.encode(DOC2)], 32)  # by hand
  assert texts(v, t) == ["Ann Lee. Ann Lee was born in", "", DOC2]
  assert (t["lens"].tolist(), t["keep"].tolist(), t["trunc"].tolist(), t["qa"].tolist(),
          t["shift"].tolist()) == ([28, 0, 28], [0] * 3, [True] * 3, [False] * 3, [0] * 3)
  assert t["fill"].shape == (0, 32) and t["fill_lens"].shape == (0,)
  faithful = records.pretrain(world.documents, 128)
  configs = [_config(None, seed=3), _config(_aug(), seed=3)]
  c = vanilla.get_config()
  assert not augment.enabled(c.pretrain.augment) and c.model.block_size == 128
  configs.append(c)
  for cfg in configs:
    table_of, per_epoch = records.stage_tables("pretrain", cfg, world)
    assert not per_epoch
    for e in (0, 1):
      got = table_of(e)
      assert got.keys() == faithful.keys()
      for k in faithful:
        assert got[k].dtype == faithful[k].dtype, k
        np.testing.assert_array_equal(got[k], faithful[k], err_msg=k)
  table_of, per_epoch = records.stage_tables("finetune", c, world)
  got, want = table_of(0), records.finetune(world.finetune, 128)
  assert not per_epoch and got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # and augmentation on is another table
  on = records.stage_tables("pretrain", _config(_aug(name_visible=True)), world)[0](0)
  assert not np.array_equal(on["keep"], faithful["keep"])


def test_augmented_batches_deterministic_and_packable(world):
  cfg = _config(_aug(whole=True, name_prefix=True, name_visible=True, copies=2, qa_copies=1,
                     shift=4, shift_text=True))
  t = records.stage_tables("pretrain", cfg, world)[0](0)
  assert len(t["lens"]) == 2 * 61 + 40
  make = lambda seed, e: epoch(t, 8, True, seed, e, devices=4)
  a, b, c, d = make(0, 0), make(0, 0), make(1, 0), make(0, 1)
  x, y, valid = a
  assert x.shape == (21, 8, 127)  # ceil((2 * 61 + 40) / 8) steps of 8 rows
  assert valid.sum(1).tolist() == [8] * 20 + [2]
  for u, w in zip(a, b):
    np.testing.assert_array_equal(u, w)
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
  for step in range(len(x)):  # every example lands in a packed row, targets preserved
    p, need = _pack(jnp.asarray(x[step]), jnp.asarray(y[step]), jnp.asarray(valid[step]), 8)
    assert int(p["row_examples"].sum()) == int(valid[step].sum()) and int(need) <= 8
    assert np.count_nonzero(p["y"]) == np.count_nonzero(y[step])
    assert sorted(np.asarray(p["y"])[np.asarray(p["y"]) != PAD].tolist()) == \
        sorted(y[step][y[step] != PAD].tolist())
  assert (x[~valid] == PAD).all() and (y[~valid] == PAD).all()


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
  assert not augment.enabled(None) and not augment.enabled(_aug())
  for field, value in (("whole", True), ("name_visible", True), ("copies", 2), ("crops", 1),
                       ("shift", 1), ("qa_copies", 1)):
    assert augment.enabled(_aug(**{field: value})), field


def test_quickstart_budget_matches_vanilla():
  """The record count the quickstart preset is sized for, from the quickstart world itself."""
  world = _world(people=150, phrasings=3)
  a, v = augmented.get_config("quickstart"), vanilla.get_config("quickstart")
  table_of, per_epoch = records.stage_tables("pretrain", a, world)
  n = len(table_of(0)["lens"])
  assert n == augmented.QUICKSTART_RECORDS == 402 and not per_epoch
  spe = lambda n, c: de.make_plan(n, c.pretrain.batch_size, 128, True, 1).steps_per_epoch
  assert len(records.stage_tables("pretrain", v, world)[0](0)["lens"]) == 151
  assert (a.pretrain.epochs * spe(n, a), v.pretrain.epochs * spe(151, v)) == (1495, 1500)
  assert a.model.to_dict() == v.model.to_dict()
  assert a.pretrain.final_tokens == a.pretrain.epochs * n * 127


def test_a5_record_count(a5_dir):
  docs = corpus.read_wiki(a5_dir)
  vocab = Vocab.from_documents(docs)
  c = augmented.get_config()
  finetune = [(vocab.encode(q), vocab.encode(a)) for q, a in corpus.read_finetune(a5_dir)]
  data = types.SimpleNamespace(documents=[vocab.encode(d) for d in docs], finetune=finetune,
                               vocab=vocab, qa_sep=True)
  table_of, per_epoch = records.stage_tables("pretrain", c, data)
  n = len(table_of(0)["lens"])
  assert n == augmented.A5_RECORDS == 2 * augmented.A5_WINDOWS + 2000 and not per_epoch
  spe = de.make_plan(n, c.pretrain.batch_size, c.model.block_size, True, 1).steps_per_epoch
  assert c.pretrain.epochs * spe == 15_000  # vanilla: 650 epochs x 23 steps = 14,950


def test_smoke_runs_all_stages(cache_dir, tmp_path, capsys):
  c = augmented.get_config("smoke")
  c.data.update(source="synthetic", cache_dir=cache_dir, synthetic_people=30)  # one step a stage
  results = run.run(c, str(tmp_path))
  with open(os.path.join(tmp_path, "dev.predictions.tsv")) as f:  # question, prediction, gold, ...
    rows = [l.rstrip("\n").split("\t") for l in f][1:]
  assert results["dev"]["total"] == len(rows) == 5
  assert results["dev"]["correct"] == sum(r[1] == r[2] for r in rows)
  assert "Correct: " in capsys.readouterr().out
  for split in ("dev", "test"):
    assert os.path.isfile(os.path.join(tmp_path, f"{split}.predictions"))
  with open(os.path.join(tmp_path, "config.json")) as f:
    assert json.load(f)["pretrain"]["augment"]["whole"] is True

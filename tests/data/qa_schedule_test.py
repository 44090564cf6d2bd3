"""The QA-mix schedule of the augmented recipe (`pretrain.augment.qa_from`, `qa_until`):
the train questions mixed into pretraining train only in the epochs e with
qa_from <= e / epochs < qa_until; outside them their rows are empty (no targets)."""
from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from birthjax import checks
from birthjax.data import records
from birthjax.data.vocab import PAD
from birthjax.errors import UserError
from configs import augmented
from birthjax.data.vocab import Vocab
from tests.data.augment_test import ANSWER, DOC2, QUESTION, TEXT, _aug, _config, examples_of


@pytest.fixture(scope="module")
def tiny():
  v = Vocab.from_documents([TEXT, DOC2, QUESTION])
  return v, [v.encode(TEXT), v.encode(DOC2)], [(v.encode(QUESTION), v.encode(ANSWER))]


def _scheduled_config(epochs, qa_from, qa_until):
  c = _config(_aug(whole=True, qa_copies=1, qa_from=qa_from, qa_until=qa_until))
  c.pretrain.epochs = epochs
  return c


@pytest.mark.parametrize("qa_from, qa_until, live", [
    (0.0, 1.0, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    (0.5, 1.0, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),  # the second half: 5/10 <= e/10
    (0.0, 0.3, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),  # e/10 < 0.3: epochs 0, 1, 2
    (0.25, 0.75, [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]),  # 2.5 <= e < 7.5
])
def test_live_epochs_by_hand(qa_from, qa_until, live):
  aug = _aug(qa_copies=1, qa_from=qa_from, qa_until=qa_until)
  assert [int(records.qa_live(aug, 10, e)) for e in range(10)] == live


def test_schedule_empties_only_the_qa_rows(tiny):
  v, docs, pairs = tiny
  data = type("D", (), dict(documents=docs, finetune=pairs, vocab=v, qa_sep=True))
  full = records.stage_tables("pretrain", _config(_aug(whole=True, qa_copies=1)), data)[0](0)
  table_of, per_epoch = records.stage_tables("pretrain", _scheduled_config(4, 0.5, 1.0), data)
  assert per_epoch
  off, on = table_of(1), table_of(2)
  qa = full["qa"]
  assert qa.tolist() == [False, True, False]  # TEXT, the question, DOC2 (interleaved)
  for k in records.FIELDS + ("fill", "fill_lens"):
    np.testing.assert_array_equal(on[k], full[k])  # live: the unscheduled table itself
  np.testing.assert_array_equal(off["ids"][~qa], full["ids"][~qa])
  np.testing.assert_array_equal(off["lens"][~qa], full["lens"][~qa])
  assert (off["ids"][qa] == PAD).all() and off["lens"][qa].tolist() == [0]
  assert off["keep"][qa].tolist() == [0] and off["qa"].tolist() == qa.tolist()
  # the emptied row trains nothing; the documents' examples are untouched
  x, y = examples_of(off, 128, rows=[1])
  assert (x == PAD).all() and (y == PAD).all()
  x, y = examples_of(on, 128, rows=[1])
  assert (y != PAD).sum() == len(pairs[0][1]) + 2  # MASK after the question, answer, MASK
  # packing sizes its rows on the first epoch with the questions live
  assert records.plan_epoch("pretrain", _scheduled_config(4, 0.5, 1.0)) == 2
  assert records.plan_epoch("pretrain", _scheduled_config(4, 0.0, 0.5)) == 0
  assert records.plan_epoch("finetune", _scheduled_config(4, 0.5, 1.0)) == 0


def test_default_schedule_is_not_per_epoch(tiny):
  v, docs, pairs = tiny
  data = type("D", (), dict(documents=docs, finetune=pairs, vocab=v, qa_sep=True))
  _, per_epoch = records.stage_tables("pretrain", _scheduled_config(4, 0.0, 1.0), data)
  assert not per_epoch
  assert not records.scheduled(_aug(qa_copies=0, qa_from=0.5))  # no questions: nothing to schedule


@pytest.mark.parametrize("qa_from, qa_until", [(0.5, 0.5), (-0.1, 1.0), (0.0, 1.5), (0.8, 0.2)])
def test_validate_rejects_a_bad_schedule(qa_from, qa_until):
  c = augmented.get_config("smoke")
  c.pretrain.augment.update(qa_from=qa_from, qa_until=qa_until)
  with pytest.raises(UserError) as e:
    checks.validate(c)
  assert "pretrain.augment.qa_from" in str(e.value) and "qa_until" in str(e.value)


def test_vanilla_default_is_the_whole_of_pretraining():
  c = augmented.get_config()
  assert (c.pretrain.augment.qa_from, c.pretrain.augment.qa_until) == (0.0, 1.0)
  assert isinstance(c.pretrain.augment, ml_collections.ConfigDict)

"""data.recite (birthjax/data/recite.py, decode's recite=True): hand-worked targets, prompts
and answer parsing, and the finetuning pairs input_pipeline.load builds with it."""
import os

import ml_collections
import numpy as np

from birthjax.data import examples, input_pipeline, recite
from birthjax.data.vocab import MASK, MASK_CHAR, PAD
from birthjax.infer import decode

LINE = "Ada Byron. Ada Byron was born in London and died in Paris ."
Q = "Where was Ada Byron born?"


def test_recitation_stops_where_the_answer_starts():
  assert recite.recitation(LINE, "London") == "Ada Byron. Ada Byron was born in "
  assert recite.recitation(LINE, "Paris") == "Ada Byron. Ada Byron was born in London and died in "
  assert recite.recitation(LINE, "Rome") == LINE  # not in the line: recited whole
  assert recite.recitation(LINE, "") == LINE


def test_target_and_its_cut_to_the_block():
  assert recite.target(Q, "London", LINE, 128) == "Ada Byron. Ada Byron was born in \u2047London"
  # 25 question + 6 answer + 3 MASKs leave 6 characters of recitation at block 40
  assert recite.target(Q, "London", LINE, 40) == "Ada By\u2047London"
  assert len(Q) + 1 + len(recite.target(Q, "London", LINE, 40)) + 1 == 40
  assert recite.target(Q, "London", LINE, 20) == "\u2047London"  # no room: the answer alone


def test_own_line_by_title_and_the_prompt():
  docs = ["Ada Byronson. Other .", LINE, ""]
  assert recite.own_line(Q, docs) == LINE  # "Ada Byron." is not "Ada Byronson."
  assert recite.own_line("Where was Bo Kim born?", docs) == "Bo Kim."
  assert recite.prompt(Q) == Q + MASK_CHAR + "Ada Byron."
  assert recite.pairs(docs, [(Q, "London"), ("Where was Bo Kim born?", "Rome")], 128) == [
      (Q, "Ada Byron. Ada Byron was born in \u2047London"),
      ("Where was Bo Kim born?", "Bo Kim.\u2047Rome")]


def test_the_qa_example_trains_recitation_and_answer_not_the_question():
  q, t = np.array([5, 6, 7]), np.array([8, 9, MASK, 4])  # question, "recitation MASK answer"
  x, y = examples.qa_example(q, t, 10)
  assert x.tolist() == [5, 6, 7, MASK, 8, 9, MASK, 4, MASK]
  assert y.tolist() == [PAD, PAD, MASK, 8, 9, MASK, 4, MASK, PAD]


def test_recited_answer_is_what_follows_the_first_mask():
  lp = np.log(np.array([.9, .8, .7, .6, .5, .4, .3]))
  got = decode.recited_answer([5, 6, MASK, 7, 8, MASK, 9], lp)
  assert got[0] == [7, 8, MASK, 9] and np.allclose(got[1], lp[3:])
  assert decode.answer_from_generated(got[0]) == [7, 8]
  assert np.isclose(decode.answer_confidence(*got), .6 * .5 * .4)  # answer + closing MASK
  assert decode.recited_answer([5, 6, 7], lp[:3]) is None  # the recitation never closed
  assert decode.recited_answer([5, 6, MASK], lp[:3]) is None  # closed on the block's last token


def test_load_with_recite_changes_only_the_train_targets():
  def load(**kw):
    c = ml_collections.ConfigDict(dict(
        source="synthetic", dir="data", cache_dir=os.environ.get("BIRTHJAX_CACHE", "~/.cache/birthjax"),
        synthetic_seed=0, synthetic_people=60, synthetic_phrasings=2, people=0,
        val_questions=0, val_seed=0, recite=False))
    c.update(kw)
    return input_pipeline.load(c, 128)
  plain, rec = load(), load(recite=True)
  assert rec.digest != plain.digest and rec.eval_sets == plain.eval_sets
  assert all(np.array_equal(a, b) for a, b in zip(rec.documents, plain.documents))
  docs = [plain.vocab.decode(d) for d in plain.documents]
  assert len(rec.finetune) == len(plain.finetune)
  for (q0, a0), (q1, t1) in zip(plain.finetune, rec.finetune):
    question, answer = plain.vocab.decode(q0), plain.vocab.decode(a0)
    assert np.array_equal(q0, q1)
    line = recite.own_line(question, docs)
    assert line in docs  # every synthetic train person has a line
    assert rec.vocab.decode(t1) == recite.recitation(line, answer) + MASK_CHAR + answer

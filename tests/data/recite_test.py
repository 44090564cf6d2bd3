"""data.recite (birthjax/data/recite.py, decode's recite=True): hand-worked targets, prompts
and answer parsing, and the finetuning pairs input_pipeline.load builds with it."""
import os

import ml_collections
import numpy as np
import pytest

from birthjax.data import examples, input_pipeline, recite, records
from birthjax.data.vocab import MASK, MASK_CHAR, PAD, Vocab
from birthjax.infer import decode
from configs import augmented
from configs import recite as recite_config

LINE = "Ada Byron. Ada Byron was born in London and died in Paris ."
Q = "Where was Ada Byron born?"


def test_recitation_stops_where_the_answer_ends():
  assert recite.recitation(Q, LINE, "London") == "Ada Byron. Ada Byron was born in London"
  assert recite.recitation(Q, LINE, "Paris") == "Ada Byron. Ada Byron was born in London and died in Paris"
  assert recite.recitation(Q, LINE, "Rome") == "Ada Byron. Rome"  # not in the line
  assert recite.answer_of("Ada Byron. Ada Byron was born in London") == "London"
  assert recite.answer_of("  ") == ""


def test_target_and_its_cut_to_the_block():
  assert recite.target(Q, "London", LINE, 128) == "Ada Byron. Ada Byron was born in London"
  # 25 question + 2 MASKs leave 21 characters at block 48: the title and its space (11),
  # then the recitation's last 10 characters
  assert recite.target(Q, "London", LINE, 48) == "Ada Byron.  in London"
  assert recite.target(Q, "London", LINE, 60) == "Ada Byron. ron was born in London"  # 33
  assert recite.target(Q, "London", LINE, 27) == ""  # no room at all


def test_own_line_by_title_and_the_prompt():
  docs = ["Ada Byronson. Other .", LINE, ""]
  assert recite.own_line(Q, docs) == LINE  # "Ada Byron." is not "Ada Byronson."
  assert recite.own_line("Where was Bo Kim born?", docs) == ""
  assert recite.prompt(Q) == Q + MASK_CHAR + "Ada Byron."
  assert recite.pairs(docs, [(Q, "London"), ("Where was Bo Kim born?", "Rome")], 128) == [
      (Q, "Ada Byron. Ada Byron was born in London"), ("Where was Bo Kim born?", "Bo Kim. Rome")]


def test_the_qa_example_trains_the_recitation_not_the_question():
  q, t = np.array([5, 6, 7]), np.array([8, 9, 4])  # question, recitation
  x, y = examples.qa_example(q, t, 8)
  assert x.tolist() == [5, 6, 7, MASK, 8, 9, 4]
  assert y.tolist() == [PAD, PAD, MASK, 8, 9, 4, MASK]


def test_recited_answer_is_the_last_word_before_the_first_mask():
  vocab = Vocab.from_documents(["ab cd"])  # PAD, MASK, ' ', a, b, c, d
  ids = [vocab.stoi[c] for c in "ab cd"] + [MASK, vocab.stoi["a"]]
  lp = np.log(np.array([.9, .8, .7, .6, .5, .4, .3]))
  answer, conf = decode.recited_answer(vocab, ids, lp)
  assert answer == "cd" and np.isclose(conf, .6 * .5 * .4)  # c, d and the MASK
  assert decode.recited_answer(vocab, ids[:5], lp[:5]) == ("", 0.0)  # never closed
  assert decode.recited_answer(vocab, [MASK], lp[:1]) == ("", 0.0)  # nothing recited


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
    assert line and line in docs  # every synthetic train person has a line
    assert rec.vocab.decode(t1) == recite.recitation(question, line, answer)


def test_predict_with_recite_prompts_with_the_title_and_answers_the_last_word(monkeypatch):
  vocab = Vocab.from_documents(["Where was Ada Byron born? London Paris ."])
  seen = {}
  said = " Ada Byron was born in Paris"  # after the prompt's title, then MASK, then anything

  def fake(params, cfg, prompts, *, steps, **kw):
    seen.update(prompts=[vocab.decode(p) for p in prompts], steps=steps)
    ids = [list(vocab.encode(said)) + [MASK] + [vocab.stoi["L"]], list(vocab.encode(said))]
    return ids, [np.full(len(i), np.log(.5)) for i in ids]

  monkeypatch.setattr(decode, "greedy_generate_scored", fake)
  cfg = type("Cfg", (), {"block_size": 64})()
  answers, conf = decode.predict_with_confidence(None, cfg, vocab, [Q, Q], steps=8,
                                                 recite="question")
  assert seen["prompts"] == [Q + MASK_CHAR + "Ada Byron."] * 2
  assert seen["steps"] == 64 - len(Q + MASK_CHAR + "Ada Byron.")  # to the end of the block
  assert answers == ["Paris", ""]  # the second never closed its recitation
  assert np.isclose(conf[0], .5 ** 6) and conf[1] == 0.0  # "Paris" and its MASK


def test_recite_config_is_the_measured_commands():
  """Each preset of configs/recite.py is exactly the command README's figures came from."""
  def with_(c, **over):
    for key, value in over.items():
      node = c
      *path, last = key.split(".")
      for k in path:
        node = node[k]
      node[last] = value
    return c.to_dict()
  rope_recite = {"model.positions": "rope", "data.recite": True}
  storage = {"model.dropout": 0.0, "pretrain.weight_decay": 0.0, "pretrain.augment.shift": 0}
  assert recite_config.get_config("quickstart").to_dict() == with_(
      augmented.get_config("quickstart"), **rope_recite, **{"data.val_questions": 20})
  assert recite_config.get_config("proxy").to_dict() == with_(
      augmented.get_config(), **rope_recite, **storage, **{
          "data.people": 300, "data.val_questions": 40, "pretrain.keep_every": 25})
  assert recite_config.get_config().to_dict() == with_(augmented.get_config(), **rope_recite, **storage)
  assert recite_config.get_config("smoke").to_dict() == with_(augmented.get_config("smoke"), **rope_recite)
  with pytest.raises(ValueError, match="smoke, quickstart or proxy"):
    recite_config.get_config("fast")


def test_pretraining_mixes_the_train_recitations_and_never_a_val_one(cache_dir):
  """With configs/recite.py the QA rows mixed into pretraining are `question MASK recitation
  MASK` for every train person, and no held-out val question reaches them."""
  c = recite_config.get_config("smoke")
  c.data.update(source="synthetic", cache_dir=cache_dir, synthetic_people=60, val_questions=5)
  data = input_pipeline.load(c.data, c.model.block_size)
  plain = input_pipeline.load(ml_collections.ConfigDict({**c.data.to_dict(), "recite": False}), 128)
  t = records.stage_tables("pretrain", c, data)[0](0)
  text = lambda ids: plain.vocab.decode(ids).replace(plain.vocab.decode([MASK]), MASK_CHAR)
  mixed = sorted(text(t["ids"][i][:t["lens"][i]]) for i in np.flatnonzero(t["qa"]))
  docs = [plain.vocab.decode(d) for d in plain.documents]
  train = [(plain.vocab.decode(q), plain.vocab.decode(a)) for q, a in plain.finetune]
  want = [q + MASK_CHAR + recite.recitation(q, recite.own_line(q, docs), a) + MASK_CHAR
          for q, a in train]
  assert c.pretrain.augment.qa_copies == 1 and len(train) == 35 and mixed == sorted(want)
  assert all(w.split(MASK_CHAR)[1].startswith(recite.title(w.split(MASK_CHAR)[0])) for w in want)
  val = plain.eval_sets["val"][0]
  assert len(val) == 5 and not {q for q, _ in train} & set(val)
  assert not any(m.startswith(q + MASK_CHAR) for m in mixed for q in val)


def test_title_mode_targets_prompt_and_pairs():
  """data.recite_from=title: the prompt is the title alone, the target the rest of the
  recitation, cut to fit title + target + MASK in the block."""
  assert recite.prompt(Q, "title") == "Ada Byron."
  assert recite.target(Q, "London", LINE, 128, "title") == " Ada Byron was born in London"  # 29
  # block 24: 10 title + 1 MASK leave 13: a space, then the recitation's last 12 characters
  assert recite.target(Q, "London", LINE, 24, "title") == " rn in London"
  assert recite.target(Q, "London", LINE, 11, "title") == ""  # no room at all
  docs = [LINE, ""]
  assert recite.pairs(docs, [(Q, "London"), ("Where was Bo Kim born?", "Rome")], 128, "title") == [
      ("Ada Byron.", " Ada Byron was born in London"), ("Bo Kim.", " Rome")]
  assert recite.mode(ml_collections.ConfigDict(dict(recite=False, recite_from="title"))) == ""
  assert recite.mode(ml_collections.ConfigDict(dict(recite=True, recite_from="title"))) == "title"
  assert recite.mode(ml_collections.ConfigDict(dict(recite=True))) == "question"


def test_title_mode_example_has_no_mask_between_title_and_recitation():
  t, r = np.array([5, 6, 7]), np.array([8, 9])  # title, rest of the recitation
  x, y = examples.qa_example(t, r, 8, sep=False)
  assert x.tolist() == [5, 6, 7, 8, 9, MASK, PAD]
  assert y.tolist() == [PAD, PAD, 8, 9, MASK, PAD, PAD]
  row = records.finetune([(t, r)], 8, sep=False)
  assert row["ids"][0].tolist() == [5, 6, 7, 8, 9, MASK, PAD, PAD]
  assert (row["lens"][0], row["keep"][0], row["qa"][0]) == (6, 3, True)
  assert records.finetune([(t, r)], 8)["lens"][0] == 7  # with its MASK: 5 6 7 MASK 8 9 MASK


def test_title_mode_loads_title_rows_and_decodes_from_the_title(monkeypatch, cache_dir):
  c = recite_config.get_config("smoke")
  c.data.update(source="synthetic", cache_dir=cache_dir, synthetic_people=60, recite_from="title")
  data = input_pipeline.load(c.data, c.model.block_size)
  assert not data.qa_sep
  plain = input_pipeline.load(ml_collections.ConfigDict({**c.data.to_dict(), "recite": False}), 128)
  docs = [plain.vocab.decode(d) for d in plain.documents]
  t = records.stage_tables("finetune", c, data)[0](0)
  rows = [plain.vocab.decode(t["ids"][i][:t["lens"][i]]) for i in range(len(t["lens"]))]
  mask = plain.vocab.decode([MASK])
  want = [recite.recitation(q, recite.own_line(q, docs), a) + mask for q, a in
          ((plain.vocab.decode(q), plain.vocab.decode(a)) for q, a in plain.finetune)]
  assert rows == want and len(rows) == len(plain.finetune)  # `NAME. ...ANSWER MASK`, no MASK after the title
  assert all(r.count(mask) == 1 for r in rows)
  seen = {}

  def fake(params, cfg, prompts, *, steps, **kw):
    seen.update(prompts=[data.vocab.decode(p) for p in prompts])
    return [[MASK]] * len(prompts), [np.zeros(1)] * len(prompts)

  monkeypatch.setattr(decode, "greedy_generate_scored", fake)
  cfg = type("Cfg", (), {"block_size": 64})()
  decode.predict_with_confidence(None, cfg, data.vocab, ["Where was Ada Byron born?"], recite="title")
  assert seen["prompts"] == ["Ada Byron."]

"""Confidence and abstention: the probability of the greedy answer string (computed inside
the jitted decode paths) against a plain per-prefix loop; coverage, abstention and the
predictions TSV on hand-worked examples; one end-to-end smoke run with the plot."""
import csv
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.data import subsets
from birthjax.infer import decode, evaluate
from birthjax.model import model
from birthjax import run
from birthjax.errors import UserError
from birthjax.data.vocab import MASK
from tests.infer.decode_cache_test import BATCH, CFG, PROMPTS, STEPS  # shapes compiled there too
from tests.params_util import random_params
from tests.run_test import smoke_config

CHECKED = (1, 3, 5, 6, 9, 14, 17, 21)  # prompt lengths checked: cache, recompute, cropped


def _params(cfg):
  """Random parameters whose head makes MASK win wherever token 5 is the positive maximum,
  so some answers close with a generated MASK and some run to `steps`."""
  p = random_params(cfg, 0.5, seed=3)
  head = p["head"]["kernel"]
  return dict(p, head={"kernel": head.at[:, MASK].set(1.05 * head[:, 5])})


_APPLY = {}


def _reference(cfg, params, prompt):
  """Plain loop, one prompt: model.apply on the prefix (its last block_size tokens), softmax
  of the last position's logits in float64, the argmax appended; confidence = product of
  the chosen probabilities up to the closing MASK. The prefix is right-padded to
  block_size, so one compile serves every length: both models are causal (decode_test and
  decode_cache_test check that against unpadded prefixes)."""
  if cfg not in _APPLY:
    _APPLY[cfg] = jax.jit(lambda p, x: model.build(cfg).apply({"params": p}, x)[0])
  x, probs = list(prompt), []
  for _ in range(STEPS):
    window = x[-cfg.block_size:]
    padded = np.zeros((1, cfg.block_size), np.int32)
    padded[0, :len(window)] = window
    logits = np.asarray(_APPLY[cfg](params, jnp.asarray(padded))[len(window) - 1], np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    x.append(int(np.argmax(logits)))
    probs.append(p[x[-1]])
  gen = x[len(prompt):]
  n = gen.index(MASK) + 1 if MASK in gen else STEPS
  return np.asarray(gen), float(np.prod(probs[:n]))


@pytest.mark.parametrize("variant", ["vanilla", "perceiver"])
def test_confidence_matches_plain_loop(variant):
  """vanilla: prompts of <= 5 tokens take the KV cache, the others the bucketed recompute;
  perceiver: the bucketed full recompute only."""
  cfg = dataclasses.replace(CFG, variant=variant, n_layer=2 if variant == "vanilla" else 3)
  params = _params(cfg)
  ids, logp = decode.greedy_generate_scored(params, cfg, PROMPTS, steps=STEPS, batch_size=BATCH)
  assert len(ids) == len(logp) == len(PROMPTS)
  closed, confs = 0, []
  for prompt, g, lp in zip(PROMPTS, ids, logp):
    assert lp.shape == (STEPS,) and lp.dtype == np.float32 and np.all(lp <= 0)
    confs.append(decode.answer_confidence(g, lp))
    if len(prompt) not in CHECKED:
      continue
    want_ids, want_conf = _reference(cfg, params, prompt)
    np.testing.assert_array_equal(g, want_ids, err_msg=f"prompt of length {len(prompt)}")
    np.testing.assert_allclose(confs[-1], want_conf, rtol=1e-5,
                               err_msg=f"prompt of length {len(prompt)}")
    closed += MASK in g.tolist()
  assert 0 < closed < len(CHECKED)  # both rules: closed by a MASK, and run to `steps`
  assert len({round(c, 9) for c in confs}) >= len(confs) - 4 and max(confs) < 1.0


def test_answer_confidence():
  conf = decode.answer_confidence([5, 6, MASK, 7], np.log([0.5, 0.5, 0.8, 0.1]))
  assert conf == pytest.approx(0.2)  # 0.5 * 0.5 * 0.8: the closing MASK counts, 7 does not
  assert decode.answer_confidence([MASK, 7], np.log([0.25, 0.1])) == pytest.approx(0.25)
  assert decode.answer_confidence([5, 6], np.log([0.5, 0.4])) == pytest.approx(0.2)  # no MASK
  assert decode.answer_confidence([], []) == 1.0  # steps=0: the empty answer, no choice made


# ----------------------------------------------------------------------------- coverage
CONF = [0.9, 0.1, 0.5, 0.5, 0.8, 0.2, 0.7, 0.3]
HITS = [1, 0, 1, 0, 0, 1, 1, 0]  # by confidence: T F T (T F: the tie, in order) F T F


def test_coverage_hand_worked():
  assert evaluate.coverage(CONF, HITS) == {"100": 50.0, "75": 50.0, "50": 75.0, "25": 50.0}
  # n = 5: 25% -> ceil(1.25) = 2, 50% -> 3, 75% -> 4 answers
  got = evaluate.coverage([0.5, 0.4, 0.3, 0.2, 0.1], [0, 1, 1, 1, 1])
  assert got == pytest.approx({"100": 80.0, "75": 75.0, "50": 200 / 3, "25": 50.0})
  cov, acc = evaluate.coverage_curve(CONF, HITS)
  assert cov == [12.5 * k for k in range(1, 9)]
  assert acc == pytest.approx([100, 50, 200 / 3, 75, 60, 50, 400 / 7, 50])


def test_abstain_and_summary():
  preds = ["Rome", "Oslo", "Paris", "Rome"]
  gold = ["Rome", "Rome", "Paris", "Oslo"]
  shown = evaluate.abstain(preds, [0.9, 0.2, 0.3, 0.6], 0.3)
  assert shown == ["Rome", evaluate.IDK, "Paris", "Rome"]  # 0.3 itself is answered
  assert evaluate.abstain(preds, [0.9, 0.2, 0.3, 0.6], 0.0) == preds
  s = evaluate.abstain_summary(preds, gold, [0.9, 0.2, 0.3, 0.6], 0.3)
  assert s == {"threshold": 0.3, "answered": 3, "coverage": 75.0,
               "selective_accuracy": pytest.approx(200 / 3)}
  assert evaluate.score(shown, gold) == (2, 4)  # abstentions count as wrong
  assert evaluate.abstain_line(s, 4) == ("abstain below 0.3: answered 3 of 4 (75.0%), "
                                         "selective accuracy 66.7%")
  none = evaluate.abstain_summary(["a", "b"], ["a", "b"], [0.5, 0.99], 1.0)
  assert none["answered"] == 0 and none["selective_accuracy"] is None
  assert evaluate.abstain_line(none, 2).endswith("selective accuracy n/a")


def test_names_and_tsv(tmp_path):
  assert subsets.name_of("Where was Ada Lovelace born?") == "Ada Lovelace"
  assert subsets.name_of("Who is Kim?") == "Who is Kim"
  docs = ["Ada Lovelace was born in London.", "Kim Moe"]
  names = ["Ada Lovelace", "Moe", "Lovelace was born in London. Kim", "Zoe", ""]
  assert evaluate.name_in_corpus(names, docs) == [True, True, False, False, False]
  path = str(tmp_path / "dev.predictions.tsv")
  evaluate.write_predictions_tsv(path, ["Where was\tAda born?", "Kim?"], ["Lon\ndon", "Rome"],
                                 ["London", "Oslo"], [0.123456789, 1.0], [True, False])
  with open(path, encoding="utf-8") as f:
    assert f.read() == ("question\tprediction\tgold\tconfidence\tname_in_corpus\n"
                        "Where was Ada born?\tLon don\tLondon\t0.123457\tyes\n"
                        "Kim?\tRome\tOslo\t1\tno\n")
  evaluate.write_predictions_tsv(path, ["Kim?"], ["Rome"], None, [2.5e-7], [False])
  with open(path, encoding="utf-8") as f:
    assert f.read().splitlines()[1] == "Kim?\tRome\t\t2.5e-07\tno"
  assert os.listdir(tmp_path) == ["dev.predictions.tsv"]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_abstain_below_out_of_range(cache_dir, value):
  with pytest.raises(UserError, match=r"eval.abstain_below.*\[--config.eval.abstain_below\]"):
    run.validate(smoke_config(cache_dir, **{"eval.abstain_below": value}))
  run.validate(smoke_config(cache_dir, **{"eval.abstain_below": 1.0}))


# ----------------------------------------------------------------------------- end to end
def _tsv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_smoke_run_writes_confidence_files(full_run, cache_dir, tmp_path, capsys):
  workdir, _, results = full_run  # the shared smoke run (conftest.py)
  dev = results["dev"]
  assert set(dev["coverage"]) == {"100", "75", "50", "25"} and "abstain" not in dev
  assert dev["coverage"]["100"] == pytest.approx(dev["accuracy"])
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results
  assert os.path.getsize(os.path.join(workdir, "dev.coverage.png")) > 1000
  rows = _tsv(os.path.join(workdir, "dev.predictions.tsv"))
  assert rows[0] == ["question", "prediction", "gold", "confidence", "name_in_corpus"]
  assert len(rows) == 1 + dev["total"] and all(len(r) == 5 for r in rows)
  with open(os.path.join(workdir, "dev.predictions")) as f:
    assert f.read().split("\n")[:-1] == [r[1] for r in rows[1:]]  # unchanged file, same answers
  assert sum(r[1] == r[2] for r in rows[1:]) == dev["correct"]
  confs = [float(r[3]) for r in rows[1:]]
  assert all(0.0 < c <= 1.0 for c in confs)
  assert {r[4] for r in rows[1:]} == {"yes"}  # the synthetic world has everyone's biography
  test_rows = _tsv(os.path.join(workdir, "test.predictions.tsv"))
  assert len(test_rows) == 101 and {r[2] for r in test_rows[1:]} == {""}

  # evaluate again, abstaining below 1.0: every answer not certain is "I don't know"
  again = str(tmp_path / "abstain")
  config = smoke_config(cache_dir, stages="evaluate", **{"eval.abstain_below": 1.0},
                        init_from=os.path.join(workdir, "checkpoints", "finetune"))
  res = run.run(config, again)["dev"]
  rows2 = _tsv(os.path.join(again, "dev.predictions.tsv"))
  assert [r[3] for r in rows2] == [r[3] for r in rows]  # same confidences
  certain = sum(c == 1.0 for c in confs)
  assert [r[1] for r in rows2[1:]] == [r[1] if c == 1.0 else evaluate.IDK
                                       for r, c in zip(rows[1:], confs)]
  assert res["abstain"]["answered"] == certain and res["abstain"]["threshold"] == 1.0
  assert res["correct"] == sum(r[1] == r[2] for r in rows2[1:])
  assert res["coverage"] == dev["coverage"]  # coverage ranks the model's own answers
  assert f"abstain below 1: answered {certain} of 100" in capsys.readouterr().out

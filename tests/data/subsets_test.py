"""data.people and data.val_questions (birthjax/data/subsets.py), on hand-made data and, end
to end, through input_pipeline.load on the synthetic world and the A5 files."""
import hashlib
import os

import ml_collections
import numpy as np
import pytest

from birthjax import run
from birthjax.data import input_pipeline, records, subsets
from birthjax.errors import UserError
from birthjax.train import optim


from configs import vanilla

DOCS = ["Ann Lee. Ann Lee was born in Oslo .", "Bo Kim. Bo Kim was born in Rome .",
        "Cy Ode. Cy Ode was born in Lima .", "Di Fox. Di Fox was born in Kyiv .", ""]
TRAIN = [("Where was Ann Lee born?", "Oslo"), ("Where was Cy Ode born?", "Lima"),
         ("Where was Di Fox born?", "Kyiv")]
EVALS = {"dev": (["Where was Bo Kim born?"], ["Rome"]), "test": (["Where was Ann Lee born?"], None)}


def cfg(**kw):
  return ml_collections.ConfigDict({"people": 0, "val_questions": 0, "val_seed": 0, **kw})


def by_hash(docs):
  return sorted((d for d in docs if d), key=lambda d: hashlib.sha256(d.encode()).digest())


def test_people_keeps_the_smallest_hashes_their_questions_and_the_empty_line():
  ranked = by_hash(DOCS)
  docs, train, evals, share = subsets.select(DOCS, TRAIN, EVALS, cfg(people=2))
  assert docs == [d for d in DOCS if d in ranked[:2] or not d]  # file order, empty line kept
  assert share == 3 / 5
  names = {d.split(".")[0] for d in docs if d}
  assert [q for q, _ in train] == [q for q, _ in TRAIN if q[10:-6] in names]
  for split, (questions, answers) in evals.items():
    want = [i for i, q in enumerate(EVALS[split][0]) if q[10:-6] in names]
    assert questions == [EVALS[split][0][i] for i in want]
    assert answers == (None if EVALS[split][1] is None else [EVALS[split][1][i] for i in want])


def test_people_is_nested_and_ignores_file_order():
  small = subsets.select(DOCS, TRAIN, EVALS, cfg(people=2))[0]
  large = subsets.select(DOCS, TRAIN, EVALS, cfg(people=3))[0]
  assert set(small) < set(large)
  assert set(subsets.select(DOCS[::-1], TRAIN, EVALS, cfg(people=2))[0]) == set(small)
  assert subsets.select(DOCS, TRAIN, EVALS, cfg())[:3] == (DOCS, TRAIN, EVALS)


def test_val_holds_out_train_questions_by_val_seed_only():
  docs, train, evals, share = subsets.select(DOCS, TRAIN, EVALS, cfg(val_questions=1))
  assert docs == DOCS and share == 1.0
  val = list(zip(*evals["val"]))
  assert len(val) == 1 and val[0] in TRAIN
  assert train == [p for p in TRAIN if p != val[0]]  # the rest, in file order
  assert evals["dev"] == EVALS["dev"]
  seeds = {tuple(subsets.select(DOCS, TRAIN, EVALS, cfg(val_questions=1, val_seed=s))[2]["val"][0])
           for s in range(20)}
  assert len(seeds) > 1  # val_seed chooses; the run's seed is not an input at all


def test_out_of_range_is_a_user_error():
  with pytest.raises(UserError, match="data.people=5 is more than the 4 people"):
    subsets.select(DOCS, TRAIN, EVALS, cfg(people=5))
  with pytest.raises(UserError, match="data.val_questions=3 leaves no train questions"):
    subsets.select(DOCS, TRAIN, EVALS, cfg(val_questions=3))


def test_schedule_scales_with_the_documents_kept():
  c = vanilla.get_config().pretrain  # warm-up 512 * 20 tokens, floor at 200 * 2938 * 128
  assert run.stage_optim(c, 0.25) == (
      optim.Settings(weight_decay=0.1, decay_rule="a5", grad_clip=1.0),
      optim.Schedule(warmup_tokens=2560.0, final_tokens=18_803_200.0, clamp=False))
  assert run.stage_optim(c)[1].final_tokens == 75_212_800


def _load(data_dir=None, **data):
  c = ml_collections.ConfigDict(dict(source="synthetic", dir=data_dir or "data",
                                     cache_dir=os.environ.get("BIRTHJAX_CACHE", "~/.cache/birthjax"),
                                     synthetic_seed=0, synthetic_people=60, synthetic_phrasings=2,
                                     people=0, val_questions=0, val_seed=0))
  if data_dir:
    c.source = "a5"
  c.update(data)
  return input_pipeline.load(c, 128)


def test_load_val_never_reaches_finetuning_or_the_pretraining_qa_mix():
  full, held = _load(), _load(val_questions=10)
  val_q, _ = held.eval_sets["val"]
  assert len(val_q) == 10 and len(held.finetune) == len(full.finetune) - 10
  assert held.vocab.chars == full.vocab.chars
  assert len(held.documents) == len(full.documents)
  assert all(np.array_equal(a, b) for a, b in zip(held.documents, full.documents))
  assert held.digest != full.digest and held.share == 1.0
  texts = {held.vocab.decode(q) for q, _ in held.finetune}
  assert not texts & set(val_q)
  aug = ml_collections.ConfigDict(dict(whole=False, name_prefix=False, name_visible=False, copies=1,
                                       crops=0, shift=0, shift_text=False, qa_copies=1))
  t = records.augmented(held.documents, held.finetune, held.vocab, aug, 128, 0, 0)
  mixed = {held.vocab.decode(row[:n]).split("\u2047")[0] for row, n, qa in
           zip(t["ids"], t["lens"], t["qa"]) if qa}
  assert mixed == texts  # exactly the remaining train questions, no val one


def test_a5_proxy_keeps_whole_people_and_the_full_vocabulary(a5_dir):
  full, proxy = _load(a5_dir), _load(a5_dir, people=300)
  assert len(proxy.documents) == 301  # 300 biographies + the trailing empty line
  assert proxy.share == 301 / 2938 and proxy.vocab.chars == full.vocab.chars
  lines = [proxy.vocab.decode(d) for d in proxy.documents]
  for split in ("dev", "test"):
    for q in proxy.eval_sets[split][0]:
      assert any(l.startswith(subsets.name_of(q) + ".") for l in lines), q
  n = len(proxy.finetune) + sum(len(proxy.eval_sets[s][0]) for s in ("dev", "test"))
  assert 300 <= n <= 310  # 2,937 questions for 2,937 people; a few names are shared

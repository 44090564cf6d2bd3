"""The training engine (birthjax.train.device_epoch): draws follow the span-corruption spec, batches
are built as the reference's DataLoader would (hand-worked), and scan, step loop and explicit
steps agree; run.train_stage resumes bitwise and trains the perceiver unpacked."""
import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.train import device_epoch as de, optim
from birthjax.data import examples, records
from birthjax.model import model
from birthjax import run, sharding
from birthjax.train import train
from birthjax.data.vocab import MASK
from tests.run_test import assert_same_tree, params_of, smoke_config

T = 32


def docs(seed=0, lengths=(0, 1, 3, 10, 27, 28, 40, 60, 5, 90, 17)):
  rng = np.random.default_rng(seed)
  return [rng.integers(2, 50, size=k).astype(np.int32) for k in lengths]


def test_hand_worked_corruption():
  # doc 'abcdefgh' (ids 2..9), n = 6, span of m = 2 at p = 1: a MASK d e f MASK b c
  doc = jnp.arange(2, 2 + 28, dtype=jnp.int32)
  x, y = de.corrupt(doc, 6, 2, 1, 16)
  s = [2, 1, 5, 6, 7, 1, 3, 4] + [0] * 8
  assert np.asarray(x).tolist() == s[:-1] and np.asarray(y).tolist() == s[1:]


def test_draws_follow_the_spec():
  """Truncation uniform on [4, 7/8 T], masked length uniform on [round(n/8), round(3n/8)],
  start uniform on [0, n - m]: exact ranges, and every value's frequency within 5 sigma."""
  block, k = 128, 40_000
  draw = jax.jit(jax.vmap(lambda key: de.draws(key, 1000, block)))
  n, m, p = map(np.asarray, draw(jax.random.split(jax.random.key(0), k)))
  lo, hi = examples.truncation_range(block)
  assert (n.min(), n.max()) == (lo, hi) == (4, 112)

  def uniform(values, a, b):
    counts = np.bincount(values - a, minlength=b - a + 1)
    assert len(counts) == b - a + 1 and counts.min() > 0
    expect = len(values) / (b - a + 1)
    assert np.abs(counts - expect).max() < 5 * np.sqrt(expect), (a, b, counts)
  uniform(n, lo, hi)
  for length in (112, 40, 8):
    sel = n == length
    m_lo, m_hi = examples.masked_length_range(length)
    assert (m[sel].min(), m[sel].max()) == (m_lo, m_hi)
    assert p[sel].min() == 0 and (p[sel] <= length - m[sel]).all()
  big = jax.jit(jax.vmap(lambda key: de.draws(key, 60, block)))  # n = min(L, 60): many n = 60
  n, m, p = map(np.asarray, big(jax.random.split(jax.random.key(1), k)))
  sel = n == 60
  uniform(m[sel], *examples.masked_length_range(60))  # [8, 23]
  uniform(p[sel & (m == 15)], 0, 45)


def test_epoch_indices_hand_worked():
  plan = de.make_plan(10, 4, T, False, 2)
  assert plan.steps_per_epoch == 3 and plan.rows_per_batch == 4
  idx = np.asarray(de.epoch_indices(plan, de.data_key(0), 0))
  assert idx.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]]
  plan = de.make_plan(7, 3, T, True, 4)  # 3 examples a step, padded to 4 rows
  e0, e1 = (np.asarray(de.epoch_indices(plan, de.data_key(0), e)) for e in (0, 1))
  assert e0.shape == (3, 4) and (e0[:, 3] == -1).all() and (e0[2, 1:] == -1).all()
  assert sorted(e0[e0 >= 0].tolist()) == list(range(7)) and e0.tolist() != e1.tolist()


def test_finetune_and_pretrain_batches_hand_worked():
  """The first batch of a finetuning table (QA rows: no randomness) and of a pretraining
  table (an empty document becomes MASK MASK), padded to 4 rows."""
  ft = jax.tree.map(jnp.asarray, records.finetune(
      [(np.array([5, 6, 7], np.int32), np.array([8, 9], np.int32)),
       (np.array([10, 11], np.int32), np.array([12], np.int32))], 10))
  plan = de.make_plan(2, 4, 10, False, 4)
  key = de.keys(de.data_key(0), 0)[1]
  x, y, v = map(np.asarray, de.make_batch(plan, ft, key, de.epoch_indices(plan, de.data_key(0), 0)[0]))
  np.testing.assert_array_equal(x, [[5, 6, 7, 1, 8, 9, 1, 0, 0], [10, 11, 1, 12, 1, 0, 0, 0, 0],
                                    [0] * 9, [0] * 9])
  np.testing.assert_array_equal(y, [[0, 0, 1, 8, 9, 1, 0, 0, 0], [0, 1, 12, 1, 0, 0, 0, 0, 0],
                                    [0] * 9, [0] * 9])
  assert v.tolist() == [True, True, False, False]
  pt = jax.tree.map(jnp.asarray, records.pretrain([np.arange(2, 40, dtype=np.int32),
                                                   np.zeros(0, np.int32)], 16))
  assert np.asarray(pt["lens"]).tolist() == [14, 0]  # 7/8 of 16: the most truncation keeps
  plan = de.make_plan(2, 2, 16, False, 1)
  for e in range(3):
    key = de.keys(de.data_key(0), e)[1]
    x, y, v = map(np.asarray, de.make_batch(plan, pt, key, de.epoch_indices(plan, de.data_key(0), e)[0]))
    assert x.shape == (2, 15) and v.all()
    np.testing.assert_array_equal(x[1], [1, 1] + [0] * 13)  # the empty document
    np.testing.assert_array_equal(y[1], [1] + [0] * 14)
    assert np.count_nonzero(x[0] == MASK) == 2


def test_each_epoch_draws_anew_and_the_same_key_draws_the_same():
  docs_ = docs(4, lengths=(30,) * 6)
  arr = jax.tree.map(jnp.asarray, records.pretrain(docs_, T))
  plan = de.make_plan(6, 6, T, False, 1)
  batch = lambda e: np.asarray(de.make_batch(plan, arr, de.keys(de.data_key(0), e)[1],
                                             de.epoch_indices(plan, de.data_key(0), e)[0])[0])
  assert not np.array_equal(batch(0), batch(1))
  np.testing.assert_array_equal(batch(1), batch(1))
  assert len({batch(0)[i].tobytes() for i in range(6)}) == 6  # the same text, other draws


@pytest.fixture(scope="module")
def tiny():
  cfg = model.ModelConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=T,
                          dropout=0.1, deterministic=False)
  opt = optim.Settings()
  sched = optim.Schedule(100, 20_000)
  mesh = sharding.make_mesh()
  params = model.init_params(cfg, jax.random.key(0))
  arrays = records.pretrain(docs(2, lengths=tuple(range(1, 90, 2))), T)  # 45 documents
  plan = de.make_plan(len(arrays["lens"]), 22, T, True, mesh.size)  # 3 steps of 24 rows
  plan = de.choose_rows(plan, arrays, de.data_key(3), mesh.size)
  assert 0 < plan.rows < plan.rows_per_batch
  # two packed shapes, each taken by some step of the 2 epochs the tests run
  plan = dataclasses.replace(plan, small_rows=plan.rows - mesh.size)
  return cfg, opt, sched, mesh, params, arrays, plan


def test_tiers_hand_worked():
  # rows: ceil(1.02 * 73) = 75; small: s = 62 trains 62 * 3 + 75 = 261 rows, fewer than
  # s = 60 (270), 51 (276), 73 (292) or one shape (300)
  assert de.tiers([51, 60, 62, 73], 1, 0.02, 128) == (75, 62)
  assert de.tiers([51, 60, 62, 73], 4, 0.02, 128) == (76, 64)  # multiples of 4: 64*3 + 76
  assert de.tiers([70, 70, 70], 1, 0.02, 128) == (72, 70)  # 70 * 3 < 72 * 3
  assert de.tiers([7, 7], 8, 0.0, 64) == (8, 0)  # no smaller multiple of 8 holds 7
  assert de.tiers([100, 120], 8, 0.1, 128) == (0, 0)  # no fewer than unpacked: no packing


def _epochs(tiny, scan, n=2):
  cfg, opt, sched, mesh, params, arrays, plan = tiny
  fn = de.compile_epoch(mesh, plan, model_cfg=cfg, opt=opt, base_lr=1e-2, schedule=sched, scan=scan)
  params = jax.tree.map(jnp.copy, params)  # the state is donated
  state = jax.device_put(train.init_state(params, opt.make()), sharding.replicated(mesh))
  ms = []
  for e in range(n):
    state, m = fn(state, jax.tree.map(jnp.asarray, arrays), de.data_key(3), jax.random.key(3), e)
    ms.append(jax.device_get(m))
  return state, ms


def test_scan_equals_step_loop_bitwise(tiny):
  s1, m1 = _epochs(tiny, True)
  s2, m2 = _epochs(tiny, False)
  assert_same_tree(s1, s2)
  for a, b in zip(m1, m2):
    np.testing.assert_array_equal(a["loss"], b["loss"])
  assert all(m["packed"].all() for m in m1) and np.isfinite(m1[-1]["loss"]).all()
  _, _, _, _, _, _, plan = tiny
  used = set(np.concatenate([m["rows"] for m in m1]).tolist())
  assert used == {plan.small_rows, plan.rows}, used  # both packed shapes were trained


def test_device_epoch_equals_explicit_steps_on_the_same_batches(tiny):
  """Explicit steps (each batch built, packed into the shape the tiers pick, and fed to the
  jitted train step one by one) land on the compiled epoch's parameters (float tolerance)."""
  cfg, opt, sched, mesh, params, arrays, plan = tiny
  dev_state, _ = _epochs(tiny, True, n=1)
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=1e-2, schedule=sched)
  params = jax.tree.map(jnp.copy, params)
  state = jax.device_put(train.init_state(params, opt.make()), sharding.replicated(mesh))
  corrupt_key = de.keys(de.data_key(3), 0)[1]
  for idx_B in de.epoch_indices(plan, de.data_key(3), 0):
    x, y, v = de.make_batch(plan, jax.tree.map(jnp.asarray, arrays), corrupt_key, idx_B)
    need = int(de.pack(x, y, v, plan.rows)[1])
    rows = plan.small_rows if need <= plan.small_rows else plan.rows  # the tiers' shape
    batch = jax.device_get(de.pack(x, y, v, rows)[0])
    state, _ = step(state, sharding.put_batch(batch, mesh), jax.random.key(3))
  for a, b in zip(jax.tree.leaves(dev_state), jax.tree.leaves(state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_run_resumes_bitwise(cache_dir, tmp_path):
  config = smoke_config(cache_dir, stages="pretrain",
                        **{"pretrain.epochs": 2, "pretrain.shuffle": True})
  full = str(tmp_path / "full")
  run.run(config, full)
  # pretraining: 600 synthetic documents, 5 steps an epoch; checkpoints at epoch ends
  d = os.path.join(full, "checkpoints", "pretrain")
  assert sorted(int(s) for s in os.listdir(d) if s.isdigit()) == [5, 10]
  resumed = str(tmp_path / "resumed")
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "pretrain", "10"))
  run.run(config, resumed)
  assert_same_tree(params_of(full, "pretrain", config), params_of(resumed, "pretrain", config))


def test_run_unpacked_perceiver(cache_dir, tmp_path):
  """The perceiver trains unpacked: its epochs log the rows they trained."""
  config = smoke_config(cache_dir, stages="pretrain",
                        **{"model.variant": "perceiver", "model.bottleneck_dim": 8})
  run.run(config, str(tmp_path))
  from birthjax.tools import report
  rows = report.read_scalars(os.path.join(str(tmp_path), "tb", "pretrain")).get("train/rows")
  per_batch = -(-config.pretrain.batch_size // 4) * 4  # rounded up to the 4 test devices
  assert rows and all(v == per_batch for _, v in rows), rows

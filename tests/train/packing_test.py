"""Packing (device_epoch.pack): hand-worked layout, and the packed batch trains exactly like
the unpacked one."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from birthjax.train import device_epoch as de, optim
from birthjax.model import loss, model
from birthjax.data import records
from birthjax import sharding
from birthjax.train import train
from birthjax.data.vocab import MASK, PAD

_pack = jax.jit(de.pack, static_argnums=3)


def pack(x, y, valid, rows):
  packed, need = _pack(jnp.asarray(x), jnp.asarray(y), jnp.asarray(valid), rows)
  return {k: np.asarray(v) for k, v in packed.items()}, int(need)


def test_example_lengths():
  y = np.array([[3, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 7]])
  np.testing.assert_array_equal(de.example_lengths(jnp.asarray(y)), [2, 3, 0, 1, 4])


# seven rows of width 8: (x, y, valid); the length of an example is 1 + its last target
X = np.array([[11, 12, 13, 14, 15, 16, 0, 0],  # 0: length 5 (x[5] predicts PAD: dropped)
              [21, 22, 23, 24, 0, 0, 0, 0],  # 1: length 3 (a QA-like row: leading PAD targets)
              [31, 32, 33, 0, 0, 0, 0, 0],  # 2: length 2
              [41, 42, 43, 44, 45, 46, 47, 48],  # 3: invalid (row_mask False): dropped
              [51, 52, 53, 0, 0, 0, 0, 0],  # 4: length 3, the same as row 1: after it
              [61, 0, 0, 0, 0, 0, 0, 0],  # 5: no target: length 0, takes 1 position
              [71, 72, 73, 74, 75, 76, 77, 0]])  # 6: length 6
Y = np.array([[12, 13, 14, 15, 16, 0, 0, 0],
              [0, 0, 24, 0, 0, 0, 0, 0],
              [0, 33, 0, 0, 0, 0, 0, 0],
              [42, 43, 44, 45, 46, 47, 48, 49],
              [52, 53, 54, 0, 0, 0, 0, 0],
              [0, 0, 0, 0, 0, 0, 0, 0],
              [72, 73, 74, 75, 76, 77, 0, 0]])
VALID = np.array([1, 1, 1, 0, 1, 1, 1], bool)


def test_pack_hand_worked():
  np.testing.assert_array_equal(de.example_lengths(jnp.asarray(Y)), [5, 3, 2, 8, 3, 0, 6])
  # longest first, ties by index: 6 (6), 0 (5), 1 (3), 4 (3), 2 (2), 5 (1); first fit:
  # 6 -> row 0 (2 left), 0 -> row 1 (3 left), 1 -> row 1 (full), 4 -> row 2 (5 left),
  # 2 -> back to row 0 (full), 5 -> row 2 (4 left)
  p, need = pack(X, Y, VALID, 3)
  assert need == 3 and set(p) == {"x", "y", "segments", "positions", "row_examples"}
  np.testing.assert_array_equal(p["x"], [[71, 72, 73, 74, 75, 76, 31, 32],
                                         [11, 12, 13, 14, 15, 21, 22, 23],
                                         [51, 52, 53, 61, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["y"], [[72, 73, 74, 75, 76, 77, 0, 33],
                                         [12, 13, 14, 15, 16, 0, 0, 24],
                                         [52, 53, 54, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["segments"], [[1, 1, 1, 1, 1, 1, 2, 2],
                                                [1, 1, 1, 1, 1, 2, 2, 2],
                                                [1, 1, 1, 2, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["positions"], [[0, 1, 2, 3, 4, 5, 0, 1],
                                                 [0, 1, 2, 3, 4, 0, 1, 2],
                                                 [0, 1, 2, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["row_examples"], [2, 2, 2])
  assert all(v.dtype == np.int32 for v in p.values())


def test_pack_returns_exactly_rows_rows():
  p5, need = pack(X, Y, VALID, 5)  # more rows than needed: the rest is all zeros
  assert need == 3 and all(v.shape[0] == 5 for v in p5.values())
  p3, _ = pack(X, Y, VALID, 3)
  for k in p3:
    np.testing.assert_array_equal(p5[k][:3], p3[k])
    assert (p5[k][3:] == 0).all()
  # fewer rows than needed: the examples of the later rows are dropped, the rows needed told
  p2, need = pack(X, Y, VALID, 2)
  assert need == 3 and all(v.shape[0] == 2 for v in p2.values())
  for k in p2:
    np.testing.assert_array_equal(p2[k], p3[k][:2])
  # every row invalid: nothing packed, no row needed
  p, need = pack(X, Y, np.zeros(7, bool), 2)
  assert need == 0 and all((v == 0).all() for v in p.values())


def test_pack_places_only_valid_rows():
  p, need = pack(X, Y, np.array([0, 0, 0, 1, 0, 0, 0], bool), 2)  # only the full row 3
  assert need == 1
  np.testing.assert_array_equal(p["x"], [X[3], [0] * 8])
  np.testing.assert_array_equal(p["y"], [Y[3], [0] * 8])
  np.testing.assert_array_equal(p["segments"], [[1] * 8, [0] * 8])
  np.testing.assert_array_equal(p["positions"], [list(range(8)), [0] * 8])
  np.testing.assert_array_equal(p["row_examples"], [1, 0])


T = 32
VOCAB = 30


def _table(count=22, seed=0):
  """A pretraining table of random documents (lengths 0 .. 2T, the first one empty)."""
  rng = np.random.default_rng(seed)
  docs = [np.zeros(0, np.int32)] + [rng.integers(2, VOCAB, rng.integers(0, 2 * T)).astype(np.int32)
                                    for _ in range(count - 1)]
  return jax.tree.map(jnp.asarray, records.pretrain(docs, T))


def _batch(plan, arrays, epoch, step=0):
  corrupt_key = de.keys(de.data_key(0), epoch)[1]
  idx = de.epoch_indices(plan, de.data_key(0), epoch)[step]
  return _make_batch(plan, arrays, corrupt_key, idx)


_make_batch = jax.jit(de.make_batch, static_argnums=0)


def test_packed_rows_hold_every_example():
  """Over real batches: each valid example's first `length` (x, y) is one segment of a
  packed row, positions count from 0, and nothing else is there."""
  arrays = _table(60, seed=1)
  plan = de.make_plan(60, 20, T, True, 4)
  for epoch in range(2):
    for step in range(plan.steps_per_epoch):
      x, y, valid = map(np.asarray, _batch(plan, arrays, epoch, step))
      p, need = pack(x, y, valid, plan.rows_per_batch)
      lengths = np.asarray(de.example_lengths(jnp.asarray(y)))
      found = []
      for r in range(need):
        for s in range(1, p["row_examples"][r] + 1):
          at = np.flatnonzero(p["segments"][r] == s)
          assert len(at) and (np.diff(at) == 1).all()
          np.testing.assert_array_equal(p["positions"][r, at], np.arange(len(at)))
          found.append((p["x"][r, at].tolist(), p["y"][r, at].tolist()))
      assert (p["segments"][need:] == 0).all() and (p["row_examples"][need:] == 0).all()
      expect = [(x[i, :max(lengths[i], 1)].tolist(), y[i, :max(lengths[i], 1)].tolist())
                for i in np.flatnonzero(valid)]
      assert sorted(found) == sorted(expect)
      assert np.count_nonzero(p["y"]) == np.count_nonzero(y)


def test_packed_step_equals_unpacked():
  cfg = model.ModelConfig(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, block_size=T,
                          dropout=0.0, deterministic=False)
  opt = optim.Settings()
  schedule = optim.Schedule(10.0, 1e5)
  mesh = sharding.make_mesh()
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=1e-2, schedule=schedule)
  params = jax.device_get(jax.jit(lambda k: jax.tree.map(  # host copy: steps donate
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape),
      model.init_params(cfg, k)))(jax.random.key(0)))
  plan = de.make_plan(22, 22, T, False, 4)  # 22 examples padded to 24 rows (2 invalid)
  assert plan.rows_per_batch == 24
  x, y, valid = map(np.asarray, _batch(plan, _table(22), 0))
  assert valid.tolist() == [True] * 22 + [False] * 2 and (x[22:] == PAD).all()
  assert y[0][0] == MASK and np.all(y[0][1:] == PAD)  # the empty document
  batch = {"x": x, "y": y, "row_mask": valid}
  _, need = pack(x, y, valid, 24)
  rows = -(-need // 8) * 8
  assert rows < 24  # fewer rows
  packed, need2 = pack(x, y, valid, rows)
  assert need2 == need and packed["x"].shape == (rows, T - 1)
  assert packed["row_examples"].sum() == 22
  results = []
  for b in (batch, packed):
    state = jax.device_put(train.init_state(params, opt.make()), sharding.replicated(mesh))
    for _ in range(2):
      state, m = step(state, sharding.put_batch(b, mesh), jax.random.key(2))
    results.append((jax.device_get(state), jax.device_get(m)))
  (s_u, m_u), (s_p, m_p) = results
  g_u, g_p = (_grads(cfg, params, b) for b in (batch, packed))  # dropout 0: no rng
  for a, b in zip(jax.tree.leaves(g_u), jax.tree.leaves(g_p)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(a).max())))
  np.testing.assert_allclose(m_p["loss"], m_u["loss"], rtol=1e-5)
  np.testing.assert_allclose(m_p["grad_norm"], m_u["grad_norm"], rtol=1e-5)
  assert int(m_p["tokens"]) == int(m_u["tokens"]) == 22 * (T - 1)
  assert int(s_p["tokens"]) == int(s_u["tokens"])
  # Adam moves every parameter by ~lr whatever its gradient's size, so a gradient that is
  # float noise moves it at random: the attention key biases (softmax ignores a shift of a
  # query's scores, their gradient is 0 up to rounding, ~1e-11 here) are left out
  noise = {jax.tree_util.keystr(k) for k, g in jax.tree_util.tree_leaves_with_path(g_u)
           if float(np.abs(g).max()) < 1e-8}
  assert noise and all(k.endswith("['key']['bias']") for k in noise), noise
  for (k, a), b in zip(jax.tree_util.tree_leaves_with_path(s_u["params"]),
                       jax.tree.leaves(s_p["params"])):
    if jax.tree_util.keystr(k) not in noise:
      np.testing.assert_allclose(a, b, atol=1e-4, err_msg=jax.tree_util.keystr(k))


@functools.partial(jax.jit, static_argnums=0)
def _grads(cfg, params, b):
  """The loss's gradients on a batch, unpacked or packed (segments, positions)."""
  def loss_fn(p):
    kw = {} if "segments" not in b else {"positions_BxT": b["positions"],
                                         "segments_BxT": b["segments"]}
    logits = model.build(cfg).apply({"params": p}, b["x"], **kw)
    return loss.mean_cross_entropy(logits, b["y"])
  return jax.grad(loss_fn)(params)

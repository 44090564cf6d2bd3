"""Packing: hand-worked layout, and the packed batch trains exactly like the unpacked one."""
import jax
import numpy as np

from birthjax import examples, loss, model, packing, sharding, train
from birthjax.vocab import MASK, PAD


def test_example_lengths():
  y = np.array([[3, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(packing.example_lengths(y), [2, 3, 0, 1])


def test_pack_hand_worked():
  # three real rows (lengths 5, 3, 2) and one padding row; width 8
  x = np.array([[11, 12, 13, 14, 15, 16, 0, 0], [21, 22, 23, 24, 0, 0, 0, 0],
                [31, 32, 33, 0, 0, 0, 0, 0], [0] * 8])
  y = np.array([[12, 13, 14, 15, 16, 0, 0, 0], [0, 0, 24, 0, 0, 0, 0, 0],
                [0, 33, 0, 0, 0, 0, 0, 0], [0] * 8])
  p = packing.pack({"x": x, "y": y, "row_mask": np.array([1, 1, 1, 0], bool)}, row_multiple=2)
  # first fit, longest first: row 0 = ex0 (5) + ex1 (3); row 1 = ex2 (2)
  np.testing.assert_array_equal(p["x"], [[11, 12, 13, 14, 15, 21, 22, 23],
                                         [31, 32, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["y"], [[12, 13, 14, 15, 16, 0, 0, 24],
                                         [0, 33, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["segments"], [[1, 1, 1, 1, 1, 2, 2, 2],
                                                [1, 1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["positions"], [[0, 1, 2, 3, 4, 0, 1, 2],
                                                 [0, 1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(p["row_examples"], [2, 1])


def _span_batch(rows, block, vocab, seed=0):
  rng = np.random.default_rng(seed)
  xs, ys = zip(*(examples.span_corrupt(rng.integers(2, vocab, rng.integers(0, 2 * block)), rng, block)
                 for _ in range(rows)))
  xs, ys = list(xs), list(ys)
  xs[0], ys[0] = examples.span_corrupt(np.zeros(0, np.int32), rng, block)  # the empty document
  assert ys[0][0] == MASK and np.all(ys[0][1:] == PAD)
  return {"x": np.stack(xs), "y": np.stack(ys), "row_mask": np.ones(rows, bool)}


def test_packed_step_equals_unpacked():
  cfg = model.ModelConfig(vocab_size=30, n_layer=2, n_head=2, n_embd=16, block_size=32,
                          dropout=0.0, deterministic=False)
  opt = (("weight_decay", 0.1), ("decay_rule", "a5"), ("grad_clip", 1.0))
  schedule = (("warmup_tokens", 10.0), ("final_tokens", 1e5), ("clamp", False))
  mesh = sharding.make_mesh()
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=1e-2, schedule=schedule)
  params = model.init_params(cfg, jax.random.key(0))
  params = jax.device_get(jax.tree.map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params))  # host copy: steps donate
  batch = _span_batch(24, cfg.block_size, cfg.vocab_size)
  packed = packing.pack(batch, row_multiple=8)
  assert packed["x"].shape[0] < 24  # fewer rows
  assert packed["row_examples"].sum() == 24
  results = []
  for b in (batch, packed):
    state = jax.device_put(train.init_state(params, train.make_tx(opt)), sharding.replicated(mesh))
    for _ in range(2):
      state, m = step(state, sharding.put_batch(b, mesh), jax.random.key(2))
    results.append((jax.device_get(state), jax.device_get(m)))
  (s_u, m_u), (s_p, m_p) = results
  np.testing.assert_allclose(m_p["loss"], m_u["loss"], rtol=1e-5)
  np.testing.assert_allclose(m_p["grad_norm"], m_u["grad_norm"], rtol=1e-5)
  assert int(m_p["tokens"]) == int(m_u["tokens"]) == 24 * 31
  assert int(s_p["tokens"]) == int(s_u["tokens"])
  for a, b in zip(jax.tree.leaves(s_u["params"]), jax.tree.leaves(s_p["params"])):
    np.testing.assert_allclose(a, b, atol=1e-4)  # Adam magnifies float noise in tiny gradients

  def grads(b):
    def loss_fn(p):
      kw = {} if "segments" not in b else {"positions_BxT": b["positions"],
                                           "segments_BxT": b["segments"]}
      logits = model.build(cfg).apply({"params": p}, b["x"], **kw)  # dropout 0: no rng
      return loss.mean_cross_entropy(logits, b["y"])
    return jax.grad(loss_fn)(params)

  for a, b in zip(jax.tree.leaves(grads(batch)), jax.tree.leaves(grads(packed))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(a).max())))

"""model.dropout_rng='hash' (birthjax/model/fastrng.py): the exact bits (a plain-Python reference of
the hash), every bit width, the statistics a dropout mask needs, and the train step with it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.model import fastrng, model
from birthjax import sharding
from birthjax.train import optim, train

M32 = 0xFFFFFFFF


def _fmix32(h):
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & M32
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & M32
  return h ^ (h >> 16)


def _word(i, k0, k1):
  """The docstring's formula in Python ints: fmix32(fmix32((i ^ k0) * golden + c1) ^ k1 ^ c2)."""
  return _fmix32(_fmix32((((i ^ k0) * 0x9E3779B9) + 0x6A09E667) & M32) ^ k1 ^ 0xBB67AE85)


def _key(k0, k1):
  return jax.random.wrap_key_data(jnp.array([k0, k1], jnp.uint32), impl=fastrng.HASH)


def test_bits_match_the_formula_at_every_width():
  k0, k1 = 0x12345678, 0xCAFEBABE
  key = _key(k0, k1)
  words = [_word(i, k0, k1) for i in range(5)]
  np.testing.assert_array_equal(jax.random.bits(key, (5,), jnp.uint32), np.array(words, np.uint32))
  np.testing.assert_array_equal(jax.random.bits(key, (2, 2), jnp.uint32),
                                np.array(words[:4], np.uint32).reshape(2, 2))
  # narrower draws are the little-endian pieces of the same words, in order
  as_bytes = np.array(words, "<u4").view(np.uint8)
  np.testing.assert_array_equal(jax.random.bits(key, (7,), jnp.uint8), as_bytes[:7])
  np.testing.assert_array_equal(jax.random.bits(key, (3,), jnp.uint16),
                                np.array(words, "<u4").view("<u2")[:3])
  # the all-zero key does not start at fmix32(0) = 0
  assert int(jax.random.bits(_key(0, 0), (1,), jnp.uint32)[0]) == _word(0, 0, 0) != 0


def test_split_and_fold_in_are_threefrys():
  k = jax.random.key(3)
  h = fastrng.rewrap(k, "hash")
  assert fastrng.rewrap(k, "threefry") is k
  for a, b in ((jax.random.fold_in(k, 7), jax.random.fold_in(h, 7)),
               (jax.random.split(k, 3), jax.random.split(h, 3))):
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  with pytest.raises(ValueError, match="unknown dropout rng"):
    fastrng.rewrap(k, "philox")


def test_dropout_mask_statistics():
  key = fastrng.rewrap(jax.random.key(0), "hash")
  n, p = 1 << 20, 0.1
  drop = nn.Dropout(p, deterministic=False)
  y = drop.apply({}, jnp.ones((n,)), rngs={"dropout": key})
  rate = float(jnp.mean(y == 0))
  assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / n)
  np.testing.assert_allclose(float(y.max()), 1 / (1 - p), rtol=1e-6)
  # neighbours within one draw, and the same positions under two step keys, are uncorrelated
  m = np.asarray(y == 0, np.float64)
  r = lambda a, b: np.corrcoef(a, b)[0, 1]
  for lag in (1, 2, 4, 32):
    assert abs(r(m[:-lag], m[lag:])) < 5 / np.sqrt(n)
  m2 = np.asarray(drop.apply({}, jnp.ones((n,)), rngs={"dropout": jax.random.fold_in(key, 1)}) == 0)
  assert abs(r(m, m2)) < 5 / np.sqrt(n)
  # per position over 4000 keys (e.g. steps): every position drops at rate p
  keys = jax.random.split(key, 4000)
  masks = jax.vmap(lambda k: jax.random.bernoulli(k, p, (64,)))(keys)
  per_pos = np.asarray(masks.mean(0))
  assert np.all(np.abs(per_pos - p) < 5 * np.sqrt(p * (1 - p) / 4000))


def test_train_step_with_hash_dropout():
  base = dict(vocab_size=20, n_layer=1, n_head=2, n_embd=16, block_size=16, deterministic=False)
  opt = optim.Settings()
  sched = optim.Schedule(10.0, 1e5)
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  x = rng.integers(2, 20, (8, 15)).astype(np.int32)
  batch = {"x": x, "y": np.roll(x, -1, 1), "row_mask": np.ones(8, bool)}
  params = jax.device_get(model.init_params(model.ModelConfig(**base), jax.random.key(0)))

  def run(dropout, impl):
    cfg = model.ModelConfig(**base, dropout=dropout, dropout_rng=impl)
    step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=1e-2, schedule=sched)
    state = jax.device_put(train.init_state(params, opt.make()), sharding.replicated(mesh))
    state, m = step(state, sharding.put_batch(batch, mesh), jax.random.key(1))
    return float(m["loss"]), jax.device_get(state["params"])

  flat = lambda p: np.concatenate([np.ravel(a) for a in jax.tree.leaves(p)])
  hash_a, hash_b, three = run(0.1, "hash"), run(0.1, "hash"), run(0.1, "threefry")
  np.testing.assert_array_equal(flat(hash_a[1]), flat(hash_b[1]))  # deterministic
  assert hash_a[0] != three[0]  # other masks
  assert np.isfinite(hash_a[0])
  # no dropout: no bits drawn, so the two impls train identically
  np.testing.assert_array_equal(flat(run(0.0, "hash")[1]), flat(run(0.0, "threefry")[1]))

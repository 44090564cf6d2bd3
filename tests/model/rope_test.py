"""model.positions=rope: rotary queries and keys in place of the learned pos_emb (vanilla)."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.infer import decode
from birthjax.model import attention, model
from birthjax.errors import UserError
from birthjax import run

from tests.run_test import smoke_config

CFG = model.ModelConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=32,
                        dropout=0.0, positions="rope")


def test_rotary_by_hand():
  # D = 2: one pair, angle = position * 10000^0 = position
  x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  got = np.asarray(attention.rotary(x, jnp.array([0, 1, 2])))
  np.testing.assert_allclose(got, [[1, 0], [math.cos(1), math.sin(1)],
                                   [-2 * math.sin(2), 2 * math.cos(2)]], atol=1e-6)
  # D = 4: pairs (0, 1) and (2, 3), angles 3 * 1 and 3 * 10000^(-2/4) = 3 * 0.01
  got = np.asarray(attention.rotary(jnp.array([[1.0, 0.0, 0.0, 1.0]]), jnp.array([3])))
  np.testing.assert_allclose(got, [[math.cos(3), math.sin(3), -math.sin(0.03), math.cos(0.03)]],
                             atol=1e-6)


def test_scores_depend_only_on_the_distance():
  q, k = jax.random.normal(jax.random.key(0), (2, 8))
  score = lambda i, j: float(attention.rotary(q, jnp.array(i)) @ attention.rotary(k, jnp.array(j)))
  scale = float(jnp.linalg.norm(q) * jnp.linalg.norm(k))  # float32 sums of terms this size
  assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-6 * scale)
  assert abs(score(5, 2) - score(5, 3)) > 1e-2 * scale


def test_no_pos_emb_and_the_a5_parameter_count():
  learned = model.ModelConfig(vocab_size=256)
  rope = dataclasses.replace(learned, positions="rope")
  p_rope = model.init_params(rope, jax.random.key(0))
  assert "pos_emb" not in p_rope
  assert model.param_count(p_rope) == 3_323_392 - 128 * 256  # the learned positions' table


def test_shifting_a_text_shifts_nothing_but_its_start():
  """With rope a text's logits do not depend on where it starts (the attention sees only
  distances); with learned positions they do."""
  idx = jax.random.randint(jax.random.key(1), (1, 12), 2, CFG.vocab_size)
  for positions, same in (("rope", True), ("learned", False)):
    cfg = dataclasses.replace(CFG, positions=positions)
    params = model.init_params(cfg, jax.random.key(2))
    if positions == "learned":  # pos_emb starts at zero: make it matter
      params = dict(params, pos_emb=jax.random.normal(jax.random.key(3), params["pos_emb"].shape))
    net = model.build(cfg)
    a = net.apply({"params": params}, idx, positions_BxT=jnp.arange(12)[None])
    b = net.apply({"params": params}, idx, positions_BxT=jnp.arange(7, 19)[None])
    assert np.allclose(a, b, atol=1e-4) == same, positions


def test_cached_decoding_equals_the_full_recompute():
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(4), p.shape),
                        model.init_params(CFG, jax.random.key(5)))
  prompts = [np.array(p, np.int32) for p in ([3, 4, 5], [3, 4, 9, 9, 7, 2], [3, 4, 6, 8])]
  cached, c_lp = decode.greedy_generate_scored(params, CFG, prompts, steps=10, use_cache=True)
  full, f_lp = decode.greedy_generate_scored(params, CFG, prompts, steps=10, use_cache=False)
  for a, b in zip(cached, full):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(np.concatenate(c_lp), np.concatenate(f_lp), atol=1e-4)
  assert len({tuple(g) for g in cached}) > 1  # not a degenerate model


def test_rope_is_for_the_vanilla_variant(cache_dir):
  c = smoke_config(cache_dir, **{"model.variant": "perceiver", "model.positions": "rope"})
  with pytest.raises(UserError, match="model.positions='rope' is only for the vanilla variant"):
    run.validate(c)

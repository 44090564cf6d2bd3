"""Random parameters for tests: every leaf N(0, scale), LayerNorm scales around 1, so
pos_emb, biases and the perceiver's C all matter and greedy argmaxes are not ties."""
import flax
import jax
import jax.numpy as jnp
import numpy as np

from birthjax.model import model


def random_params(cfg, scale, seed=0):
  x = jax.ShapeDtypeStruct((1, cfg.block_size), jnp.int32)
  base = jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(base)
  out = {k: (rng.normal(0.0, scale, v.shape) + (1.0 if k[-1] == "scale" else 0.0)).astype(np.float32)
         for k, v in flat.items()}
  return jax.tree.map(jnp.asarray, flax.traverse_util.unflatten_dict(out))

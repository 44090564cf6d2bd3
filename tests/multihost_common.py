"""The training run shared by the 2-process workers and the single-process reference."""
import jax
import numpy as np

from birthjax.model import model
from birthjax import sharding
from birthjax.train import optim, train

CFG = model.ModelConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=16, block_size=16,
                        dropout=0.1, deterministic=False)
OPT = optim.Settings()
SCHEDULE = optim.Schedule(10.0, 1e5)
STEPS = 3


def batch(step):
  rng = np.random.default_rng(step)
  x = rng.integers(1, 20, (8, 15)).astype(np.int32)
  y = rng.integers(0, 20, (8, 15)).astype(np.int32)
  return {"x": x, "y": y, "row_mask": np.arange(8) < 7}  # one padding row


def run_steps(mesh):
  step_fn = train.compile_train_step(mesh, model_cfg=CFG, opt=OPT, base_lr=1e-2, schedule=SCHEDULE)
  params = model.init_params(CFG, jax.random.key(0))
  state = jax.device_put(train.init_state(params, OPT.make()), sharding.replicated(mesh))
  for step in range(STEPS):
    state, _ = step_fn(state, sharding.put_batch(batch(step), mesh), jax.random.key(1))
  return state

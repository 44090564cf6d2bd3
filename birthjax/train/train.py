"""Train state and the pure train step; `compile_train_step` jits it once over the mesh.

state = {'params', 'opt_state', 'step', 'tokens'}; `tokens` counts the target positions of
real rows (PAD included, as the reference counts them) and drives the lr schedule.
The step's dropout key is fold_in(seed_key, step), so a resumed run sees the same keys;
with model.dropout_rng='hash' its bits come from birthjax.model.fastrng.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from birthjax.model import fastrng, loss, model, perceiver
from birthjax.train import optim
from birthjax import sharding


def init_state(params, tx) -> dict:
  return {"params": params, "opt_state": tx.init(params),
          "step": jnp.zeros((), jnp.int32), "tokens": jnp.zeros((), jnp.int32)}


def train_step(state, batch, seed_key, *, model_cfg, tx, base_lr, schedule):
  """One AdamW step on a batch {'x','y': [B, T], 'row_mask': [B]} -> (state, metrics).

  A packed batch (birthjax.packing) has 'segments', 'positions' and 'row_examples' instead
  of 'row_mask'.
  """
  net = model.build(model_cfg)
  rng = fastrng.rewrap(jax.random.fold_in(seed_key, state["step"]), model_cfg.dropout_rng)

  end, targets = perceiver.training_window(model_cfg, batch["y"])
  packed = {} if "segments" not in batch else {
      "positions_BxT": batch["positions"], "segments_BxT": batch["segments"]}

  def loss_fn(params):
    logits = net.apply({"params": params}, batch["x"], end, rngs={"dropout": rng}, **packed)
    return loss.mean_cross_entropy(logits, targets)

  value, grads = jax.value_and_grad(loss_fn)(state["params"])
  lr = base_lr * schedule.multiplier(state["tokens"])
  opt_state = optim.set_lr(state["opt_state"], lr)
  updates, opt_state = tx.update(grads, opt_state, state["params"])
  params = jax.tree.map(jnp.add, state["params"], updates)
  # the reference counts every target position of its (unpacked) rows, PAD included
  examples = batch["row_examples"] if "row_examples" in batch else batch["row_mask"]
  n_tokens = jnp.sum(examples) * batch["y"].shape[1]
  new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
               "tokens": state["tokens"] + n_tokens}
  metrics = {"loss": value, "lr": lr, "tokens": n_tokens,
             "grad_norm": jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))}
  return new_state, metrics


@functools.lru_cache(maxsize=16)
def compile_train_step(mesh, *, model_cfg, opt: optim.Settings, base_lr: float,
                       schedule: optim.Schedule):
  """jit(train_step): state replicated and donated, batch sharded on 'data'.

  All arguments are hashable and the jitted function is cached, so runs with equal
  settings (e.g. tests) share one compilation.
  """
  step = functools.partial(train_step, model_cfg=model_cfg, tx=opt.make(), base_lr=base_lr,
                           schedule=schedule)
  rep, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,))

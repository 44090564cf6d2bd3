"""AdamW with the A5 weight-decay rule, global-norm clipping, and the A5 token-count lr schedule.

The reference (trainer.py) counts tokens as every target position of the batch, PAD
included, and updates the learning rate AFTER each step from the tokens seen so far:

  mult(tokens) = tokens / warmup                              if tokens < warmup
               = max(0.1, 0.5 * (1 + cos(pi * progress)))     otherwise,
  progress = (tokens - warmup) / (final - warmup)             (not clamped to 1)

and step 1 runs at the full rate (the optimizer's initial lr). So the rate of a step
that starts with `tokens` counted is base * (1 if tokens == 0 else mult(tokens)).
"""
from __future__ import annotations

import dataclasses
import functools

import flax
import jax.numpy as jnp
import optax


def lr_multiplier(tokens, *, warmup_tokens: float, final_tokens: float, clamp: bool = False,
                  first_step_full: bool = True):
  """The multiplier of the base lr for a step that starts with `tokens` counted."""
  tokens = jnp.asarray(tokens, jnp.float32)
  warm = tokens / max(1.0, warmup_tokens)
  progress = (tokens - warmup_tokens) / max(1.0, final_tokens - warmup_tokens)
  if clamp:  # a proper schedule: cosine to the floor, then stay there
    progress = jnp.minimum(progress, 1.0)
  cos = jnp.maximum(0.1, 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
  mult = jnp.where(tokens < warmup_tokens, warm, cos)
  if first_step_full:  # the reference's first step runs at the optimizer's initial lr
    mult = jnp.where(tokens == 0, 1.0, mult)
  return mult


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A stage's lr schedule (hashable: compiled steps are cached by it)."""
  warmup_tokens: float
  final_tokens: float
  clamp: bool = False

  def multiplier(self, tokens):
    return lr_multiplier(tokens, warmup_tokens=self.warmup_tokens,
                         final_tokens=self.final_tokens, clamp=self.clamp)


@dataclasses.dataclass(frozen=True)
class Settings:
  """A stage's optimizer settings (hashable: compiled steps are cached by them)."""
  weight_decay: float = 0.1
  decay_rule: str = "a5"
  grad_clip: float = 1.0

  def make(self):
    return make_optimizer(weight_decay=self.weight_decay, decay_rule=self.decay_rule,
                          grad_clip=self.grad_clip)


def decay_mask(params, rule: str = "a5"):
  """True where weight decay applies.

  'a5': every parameter whose torch name lacks 'bias' (the reference also lists
  'LayerNorm.weight', which never matches its module names: LN weights, embeddings and
  pos_emb are decayed). 'clean': only Linear weights (kernels), as minGPT intended.
  """
  flat = flax.traverse_util.flatten_dict(params)
  if rule == "a5":
    keep = {k: k[-1] != "bias" for k in flat}
  elif rule == "clean":
    keep = {k: k[-1] == "kernel" for k in flat}
  else:
    raise ValueError(f"unknown weight decay rule {rule!r}")
  return flax.traverse_util.unflatten_dict(keep)


def make_optimizer(*, weight_decay: float = 0.1, decay_rule: str = "a5", grad_clip: float = 1.0,
                   b1: float = 0.9, b2: float = 0.95):
  """clip -> AdamW (torch defaults eps=1e-8); the lr is injected per step by train_step."""
  decay_mask(({}), decay_rule)  # fail early on an unknown rule
  adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
      learning_rate=0.0, b1=b1, b2=b2, eps=1e-8, weight_decay=weight_decay,
      mask=functools.partial(decay_mask, rule=decay_rule))
  return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)


def set_lr(opt_state, lr):
  """Return opt_state with the injected AdamW learning rate replaced."""
  clip_state, adamw_state = opt_state
  hp = dict(adamw_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
  return (clip_state, adamw_state._replace(hyperparams=hp))

"""Masked cross-entropy, as sums and a count so train and eval steps share it; the
log-probability of chosen tokens (decoding's confidences)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from birthjax.data.vocab import PAD


def cross_entropy_sum(logits_BxTxV, targets_BxT):
  """(sum of token losses over non-PAD targets, number of non-PAD targets)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxTxV.astype(jnp.float32), targets_BxT)
  weights = (targets_BxT != PAD).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(weights)


def mean_cross_entropy(logits_BxTxV, targets_BxT):
  """The reference's F.cross_entropy(..., ignore_index=PAD): mean over non-PAD targets."""
  total, count = cross_entropy_sum(logits_BxTxV, targets_BxT)
  return total / jnp.maximum(count, 1.0)


def chosen_logprob(logits_BxV, tok_B):
  """float32 log-softmax of each row's chosen token (the argmax is taken on the raw logits)."""
  lp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(lp_BxV, tok_B[:, None].astype(jnp.int32), axis=1)[:, 0]

"""The model's configuration: one frozen dataclass (hashable, so compiled functions are cached
by it), built from the ml_collections config in one place (`ModelConfig.from_config`).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  variant: str = "vanilla"  # 'vanilla' | 'perceiver' | 'perceiver_ar'
  n_layer: int = 4
  n_head: int = 8
  n_embd: int = 256
  block_size: int = 128
  dropout: float = 0.1
  dropout_rng: str = "threefry"  # 'threefry' | 'hash' (birthjax.model.fastrng): how dropout bits are drawn
  bottleneck_dim: int = 64  # m: latents of the perceiver variants
  deterministic: bool = True  # False while training (dropout on)
  dtype: str = "float32"  # 'float32' | 'bfloat16': compute dtype (parameters stay float32)

  def __post_init__(self):
    if self.dtype not in DTYPES:
      raise ValueError(f"model dtype {self.dtype!r}: expected one of {DTYPES}")

  @classmethod
  def from_config(cls, m, deterministic: bool = True) -> "ModelConfig":
    """From the config's `model` section (ml_collections; fields missing from an older
    run's config.json take their defaults)."""
    return cls(vocab_size=m.vocab_size, variant=m.variant, n_layer=m.n_layer, n_head=m.n_head,
               n_embd=m.n_embd, block_size=m.block_size, dropout=m.dropout,
               dropout_rng=m.get("dropout_rng", "threefry"), bottleneck_dim=m.bottleneck_dim,
               dtype=m.get("dtype", "float32"), deterministic=deterministic)


def compute_dtype(cfg: ModelConfig):
  """The dtype of matmuls and activations."""
  return jnp.dtype(cfg.dtype)

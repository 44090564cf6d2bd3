"""The model's configuration: one frozen dataclass (hashable, so compiled functions are cached
by it), built from the ml_collections config in one place (`ModelConfig.from_config`).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")
POSITIONS = ("learned", "rope")


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
  positions: str = "learned"  # 'learned': absolute pos_emb (A5); 'rope': rotary q/k (vanilla only)

  def __post_init__(self):
    if self.dtype not in DTYPES:
      raise ValueError(f"model dtype {self.dtype!r}: expected one of {DTYPES}")
    if self.positions not in POSITIONS:
      raise ValueError(f"model positions {self.positions!r}: expected one of {POSITIONS}")

  @classmethod
  def from_config(cls, m, deterministic: bool = True) -> "ModelConfig":
    """From the config's `model` section (an ml_collections ConfigDict or a plain dict, e.g.
    a run's config.json; fields an older run's config lacks take their defaults)."""
    return cls(vocab_size=int(m["vocab_size"]), variant=str(m["variant"]),
               n_layer=int(m["n_layer"]), n_head=int(m["n_head"]), n_embd=int(m["n_embd"]),
               block_size=int(m["block_size"]), dropout=float(m["dropout"]),
               dropout_rng=m.get("dropout_rng", "threefry"),
               bottleneck_dim=int(m["bottleneck_dim"]), dtype=m.get("dtype", "float32"),
               positions=m.get("positions", "learned"), deterministic=deterministic)


def compute_dtype(cfg: ModelConfig):
  """The dtype of matmuls and activations."""
  return jnp.dtype(cfg.dtype)

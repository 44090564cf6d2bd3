"""The A5 Perceiver: vanilla's recipe with the latent bottleneck. Presets as vanilla's.

bottleneck_dim m = 64, as in the handout's commands (the reference's run.py defaults to 32).
"""
from configs import vanilla


def get_config(preset=None):
  c = vanilla.get_config(preset)
  c.model.variant = "perceiver"
  c.model.bottleneck_dim = 64
  if preset == "smoke":
    c.model.bottleneck_dim = 16
  return c

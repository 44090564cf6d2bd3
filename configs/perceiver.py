"""The A5 Perceiver: vanilla's recipe with the latent bottleneck. Presets as vanilla's.

bottleneck_dim m = 64, as in the handout's commands (the reference's run.py defaults to 32).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vanilla  # noqa: E402


def get_config(preset=None):
  c = vanilla.get_config(preset)
  c.model.variant = "perceiver"
  c.model.bottleneck_dim = 64
  if preset == "smoke":
    c.model.bottleneck_dim = 16
  return c

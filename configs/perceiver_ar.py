"""Perceiver-AR: latents at the last m predicted positions, cross-attending to all inputs.

Same recipe and presets as vanilla; see birthjax/perceiver.py for the design.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vanilla  # noqa: E402


def get_config(preset=None):
  c = vanilla.get_config(preset)
  c.model.variant = "perceiver_ar"
  c.model.bottleneck_dim = 64
  if preset == "smoke":
    c.model.bottleneck_dim = 16
  return c

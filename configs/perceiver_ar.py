"""Perceiver-AR: latents at the last m predicted positions, cross-attending to all inputs.

The perceiver config (same recipe, presets and m) with the other variant; see
birthjax/model/perceiver.py for the design.
"""
from configs import perceiver


def get_config(preset=None):
  c = perceiver.get_config(preset)
  c.model.variant = "perceiver_ar"
  return c

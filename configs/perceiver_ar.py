"""Perceiver-AR: latents at the last m predicted positions, cross-attending to all inputs.

The perceiver config (same recipe, presets and m) with the other variant; see
birthjax/model/perceiver.py for the design.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perceiver  # noqa: E402


def get_config(preset=None):
  c = perceiver.get_config(preset)
  c.model.variant = "perceiver_ar"
  return c

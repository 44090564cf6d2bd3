"""A cheap random-bits generator for dropout masks (`model.dropout_rng='hash'`).

Dropout draws a fresh bit for every activation and every attention weight of every step:
with JAX's default threefry that is about a third of a CPU pretraining step (threefry-2x32
is 20 rounds per pair of words; it is built to be a strong PRNG, which a dropout mask does
not need). The 'hash' impl keeps threefry's seed, split and fold_in (so keys, and everything
derived from them, are the same) and replaces only `random_bits`: word i of a draw is a
double murmur3 finaliser, fmix32(fmix32((i ^ k0) * golden + c1) ^ k1 ^ c2), keyed by the
key's two words (c1, c2: SHA-2 constants, so an all-zero key does not hit fmix32(0) = 0).
Each stage is a bijection of the 32-bit word, so a draw never repeats a word. About 14
integer ops a word: a [64, 8, 128, 128] Bernoulli mask takes ~5 ms here, threefry ~90 ms.

Registered with `jax.extend.random.define_prng_impl`, so flax's nn.Dropout and
jax.random.bernoulli use it unchanged: train_step rewraps its dropout key (`rewrap`).
Statistics (keep rate, independence across keys and positions) are tested in
tests/model/fastrng_test.py. Default stays threefry ('threefry'), the A5-faithful setting.
"""
from __future__ import annotations

import math

import jax
import jax.extend.random as jex_random
import numpy as np
from jax import lax

_threefry = jax.random.key_impl(jax.random.key(0))
_GOLDEN, _M1, _M2 = np.uint32(0x9E3779B9), np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_C1, _C2 = np.uint32(0x6A09E667), np.uint32(0xBB67AE85)


def _fmix32(h):
  h = h ^ (h >> 16)
  h = h * _M1
  h = h ^ (h >> 13)
  h = h * _M2
  return h ^ (h >> 16)


def _random_bits(key_data, bit_width: int, shape):
  n = math.prod(shape)
  words = -(-n * bit_width // 32)
  i = lax.iota(np.uint32, words)
  h = _fmix32(_fmix32((i ^ key_data[0]) * _GOLDEN + _C1) ^ key_data[1] ^ _C2)
  dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bit_width]
  if bit_width < 32:
    h = lax.bitcast_convert_type(h, dtype).reshape(-1)[:n]
  elif bit_width == 64:
    h = lax.bitcast_convert_type(h.reshape(-1, 2), dtype)
  return h.reshape(shape)


def _seed(seed):
  return jax.random.key_data(jax.random.key(seed))


def _split(key_data, shape):
  keys = jax.random.split(jax.random.wrap_key_data(key_data), shape)
  return jax.random.key_data(keys)


def _fold_in(key_data, data):
  return jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key_data), data))


HASH = jex_random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name="birthjax_hash", tag="bjh")

IMPLS = ("threefry", "hash")


def rewrap(key, impl: str):
  """The same key data under `impl` ('threefry': the key unchanged)."""
  if impl == "threefry":
    return key
  if impl == "hash":
    return jax.random.wrap_key_data(jax.random.key_data(key), impl=HASH)
  raise ValueError(f"unknown dropout rng {impl!r}: use one of {IMPLS}")

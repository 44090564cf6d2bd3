"""The training engine: a whole epoch of a stage is one compiled program.

A stage's records are one table of arrays on the device (birthjax.data.records: the text to
span-corrupt, or a whole QA sequence, and how to draw from it). One jitted call runs an
epoch: its order (a permutation when `shuffle`), each example built with jax.random,
packing, batching and every train step, a `lax.scan` over the epoch's steps; the host
reads the metrics back once per epoch, and checkpoints fall on epoch boundaries.

* example k of epoch e is record order[k]; its draws come from the key
  fold_in(corruption key of e, record), with the reference's ranges (birthjax.data.examples):
  truncated length n, masked length m, masked start p (`draws`), then `corrupt` builds
  `doc[:p] MASK doc[p+m:n] MASK doc[p:p+m] PAD...`; a QA row is taken as it is, its
  targets before the question's last character PAD; a row with `shift` starts 0..shift
  positions late, after PAD or the tail of a random filler document (`example`);
* batches are consecutive runs of `batch_size` examples, the last one partial (as the
  reference's DataLoader), padded with invalid rows (row_mask False) to a multiple of the
  device count;
* packing (vanilla) is first-fit by decreasing length (ties by batch index) into a fixed
  number of rows `rows`, chosen from the first epoch's batches with 2% headroom; a batch
  that needs more rows trains unpacked (`lax.switch`), whose loss, gradients and token
  count are the packed ones up to float rounding.
`compile_epoch(..., scan=False)` runs the same step function from a Python loop, one
jitted call per step: the debugging path (`--config.epoch_scan=False`), equal to the scan
bit for bit on CPU (tested).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from birthjax.data import examples
from birthjax import sharding
from birthjax.train import optim, train
from birthjax.data.vocab import MASK, PAD


# ----------------------------------------------------------------------------- examples
def draws(key, length, block_size: int, trunc=True, keep=0):
  """(n, m, p) of one record of `length` ids: n = min(uniform [4, 7/8 block], length) when
  `trunc` (else length), m uniform on examples.masked_length_range(n), p uniform on
  [min(keep, n - m), n - m] (the first `keep` ids, a name, stay visible when they can)."""
  lo, hi = examples.truncation_range(block_size)
  k_n, k_m, k_p = jax.random.split(key, 3)
  n = jnp.where(trunc, jnp.minimum(jax.random.randint(k_n, (), lo, hi + 1), length), length)
  m_lo = jnp.where(n == 0, 0, jnp.maximum(1, (n + 4) // 8))  # examples.masked_length_range
  m_hi = jnp.where(n == 0, 0, jnp.maximum(1, (3 * n + 4) // 8))
  m = jax.random.randint(k_m, (), m_lo, m_hi + 1)
  p = jax.random.randint(k_p, (), jnp.minimum(keep, n - m), n - m + 1)
  return n, m, p


def corrupt(doc_C, n, m, p, block_size: int):
  """The span-corrupted example `doc[:p] MASK doc[p+m:n] MASK doc[p:p+m] PAD...` as (x, y)."""
  i = jnp.arange(block_size)
  b = n - p - m  # suffix length
  src = jnp.select([i < p, i <= p + b], [i, i - 1 + m], i - (n - m + 2) + p)
  ids = jnp.take(doc_C, jnp.clip(src, 0, doc_C.shape[0] - 1))
  s = jnp.where((i == p) | (i == p + b + 1), MASK, ids)
  s = jnp.where(i < n + 2, s, PAD).astype(jnp.int32)
  return s[:-1], s[1:]


def example(key, row: dict, fill, fill_lens, block_size: int):
  """(x, y) of one table row (birthjax.data.records); `fill` [F, T] fillers (F = 0: PAD)."""
  n, m, p = draws(key, row["lens"], block_size, row["trunc"], row["keep"])
  xc, yc = corrupt(row["ids"], n, m, p, block_size)
  s = jnp.where(row["qa"], row["ids"][:block_size], jnp.concatenate([xc, yc[-1:]]))
  i = jnp.arange(block_size)
  k = jax.random.randint(jax.random.fold_in(key, 3), (), 0, row["shift"] + 1)
  head = jnp.full(block_size, PAD, jnp.int32)
  if fill.shape[0]:  # the last k ids of a random filler, left-padded with PAD
    j = jax.random.randint(jax.random.fold_in(key, 4), (), 0, fill.shape[0])
    at = fill_lens[j] - k + i
    head = jnp.where(at >= 0, jnp.take(fill[j], jnp.clip(at, 0, fill.shape[1] - 1)), PAD)
  s = jnp.where(i >= k, jnp.take(s, jnp.clip(i - k, 0, block_size - 1)), head)
  t = jnp.arange(block_size - 1)
  hidden = (row["qa"] & (t < row["keep"] - 1)) | ((t < k) if fill.shape[0] else False)
  return s[:-1], jnp.where(hidden, PAD, s[1:])


# ----------------------------------------------------------------------------- packing
def example_lengths(y_BxT):
  """1 + the index of each row's last non-PAD target (0 for a row without targets)."""
  has = y_BxT != PAD
  t = y_BxT.shape[1]
  return jnp.where(has.any(1), t - jnp.argmax(has[:, ::-1], axis=1), 0)


def pack(x_BxT, y_BxT, valid_B, rows: int) -> tuple[dict, jax.Array]:
  """The valid rows' examples packed into `rows` rows: (packed batch, rows needed).

  An example needs its first `length` positions (example_lengths, at least 1); examples
  are placed first-fit by decreasing length. A packed row carries `segments` (1, 2, ...
  per example, 0 for padding), `positions` (the position inside the example, for the
  position embedding) and `row_examples` (how many examples it holds, for the token
  count). With attention restricted to the same segment, every target sees the context
  it had unpacked. `rows` is at most the batch's rows; examples that do not fit in them
  are dropped: the caller trains such a batch unpacked (it knows from the rows needed)."""
  b, w = x_BxT.shape
  lengths = example_lengths(y_BxT)
  n_B = jnp.where(valid_B, jnp.maximum(lengths, 1), 0)
  order = jnp.argsort(-jnp.where(valid_B, lengths, -1), stable=True)

  def place(carry, i):  # first fit: the first row with room (there are b rows, all fit)
    free, count = carry
    ni = n_B[i]
    r = jnp.argmax(free >= ni)
    r = jnp.where(ni > 0, r, b)  # invalid rows are dropped
    off = w - free[jnp.minimum(r, b - 1)]
    free = free.at[r].add(-ni, mode="drop")
    seg = count[jnp.minimum(r, b - 1)] + 1
    count = count.at[r].add(1, mode="drop")
    return (free, count), (r, off, seg)

  (_, count), (r, off, seg) = jax.lax.scan(
      place, (jnp.full(b, w, jnp.int32), jnp.zeros(b, jnp.int32)), order)
  row_B, off_B, seg_B = (jnp.zeros(b, jnp.int32).at[order].set(v) for v in (r, off, seg))
  t = jnp.arange(w)[None, :]
  cols = jnp.where(t < n_B[:, None], off_B[:, None] + t, w)  # out of range: dropped
  rows_idx = jnp.broadcast_to(row_B[:, None], (b, w))
  scatter = lambda v: jnp.zeros((b, w), jnp.int32).at[rows_idx, cols].set(v, mode="drop")[:rows]
  packed = {"x": scatter(x_BxT), "y": scatter(y_BxT),
            "segments": scatter(jnp.broadcast_to(seg_B[:, None], (b, w))),
            "positions": scatter(jnp.broadcast_to(t, (b, w))), "row_examples": count[:rows]}
  return packed, jnp.sum(count > 0)


# ----------------------------------------------------------------------------- epochs
@dataclasses.dataclass(frozen=True)
class Plan:
  """The static shape of a stage's epochs."""
  n_records: int
  batch_size: int  # examples a step, as configured
  rows_per_batch: int  # batch_size padded to a multiple of the device count
  block_size: int
  shuffle: bool
  rows: int = 0  # packed rows a step; 0: unpacked
  small_rows: int = 0  # a second, smaller packed shape for batches that fit it; 0: none

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.n_records / self.batch_size)


def make_plan(n_records, batch_size, block_size, shuffle, devices) -> Plan:
  return Plan(n_records, batch_size, -(-batch_size // devices) * devices, block_size, shuffle)


def keys(data_key, epoch):
  """(order key, corruption key) of an epoch."""
  return jax.random.split(jax.random.fold_in(data_key, epoch))


def epoch_indices(plan: Plan, data_key, epoch):
  """[steps, rows_per_batch] record indices of the epoch's batches, -1 for padding rows."""
  n, b, spe = plan.n_records, plan.batch_size, plan.steps_per_epoch
  order = jnp.arange(n, dtype=jnp.int32)
  if plan.shuffle:
    order = jax.random.permutation(keys(data_key, epoch)[0], order)
  idx = jnp.full(spe * b, -1, jnp.int32).at[:n].set(order).reshape(spe, b)
  return jnp.pad(idx, ((0, 0), (0, plan.rows_per_batch - b)), constant_values=-1)


def make_batch(plan: Plan, arrays: dict, corrupt_key, idx_B):
  """(x, y, valid) of one step's records; invalid rows are all PAD."""
  valid = idx_B >= 0
  ids = jnp.maximum(idx_B, 0)
  rows = {k: v[ids] for k, v in arrays.items() if k not in ("fill", "fill_lens")}
  keys = jax.vmap(lambda i: jax.random.fold_in(corrupt_key, i))(ids)
  x, y = jax.vmap(lambda k, r: example(k, r, arrays["fill"], arrays["fill_lens"],
                                       plan.block_size))(keys, rows)
  return jnp.where(valid[:, None], x, PAD), jnp.where(valid[:, None], y, PAD), valid


def choose_rows(plan: Plan, arrays: dict, data_key, multiple: int, margin: float = 0.02,
                small: bool = True) -> Plan:
  """The plan with packed rows: the most the first epoch's batches need, plus `margin`,
  rounded up to `multiple` (the device count), at most the unpacked rows (then there is no
  point packing). A step's time grows with its rows (A5 pretraining on a CPU: 64 rows 1.65 s,
  80 rows 1.99 s), so the margin is small: over 5 A5 epochs the need was 51-73 rows (mean
  62), the first epoch's most; a batch that needs more than the rows trains unpacked.
  With `small`, also `small_rows`: the second shape that minimises the first epoch's rows
  (a batch trains in the smallest shape that holds it; A5 pretraining: 64 and 75 rows)."""
  @jax.jit
  def needed(arrays):
    corrupt_key = keys(data_key, 0)[1]
    def one(idx_B):
      x, y, valid = make_batch(plan, arrays, corrupt_key, idx_B)
      return pack(x, y, valid, plan.rows_per_batch)[1]
    return jax.vmap(one)(epoch_indices(plan, data_key, 0))
  rows, small_rows = tiers(np.asarray(needed(arrays)), multiple, margin, plan.rows_per_batch)
  return dataclasses.replace(plan, rows=rows, small_rows=small_rows if small else 0)


def tiers(need, multiple: int, margin: float, unpacked: int) -> tuple[int, int]:
  """(rows, small_rows) from the rows each batch needs: rows = the most + margin (0 when
  that is no fewer than `unpacked`), small_rows = the size s < rows minimising the rows
  trained, sum(s if n <= s else rows), or 0 when none saves any; multiples of `multiple`."""
  up = lambda n: -(-int(n) // multiple) * multiple
  rows = up(math.ceil((1 + margin) * int(np.max(need))))
  if rows >= unpacked:
    return 0, 0
  cost = lambda s: int(np.where(np.asarray(need) <= s, s, rows).sum())
  best = min(range(up(np.min(need)), rows, multiple), key=cost, default=0)
  return rows, best if best and cost(best) < cost(rows) else 0


@functools.lru_cache(maxsize=8)
def compile_epoch(mesh, plan: Plan, *, model_cfg, opt: optim.Settings, base_lr: float,
                  schedule: optim.Schedule,
                  scan: bool = True):
  """jit(epoch)(state, arrays, data_key, seed_key, epoch) -> (state, metrics [steps]).

  With scan=False, a function of the same signature that runs one jitted call per step.
  """
  step_fn = functools.partial(train.train_step, model_cfg=model_cfg, tx=opt.make(),
                              base_lr=base_lr, schedule=schedule)
  data = sharding.batch_sharding(mesh)
  on_mesh = lambda batch: jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, data), batch)

  def one_step(state, arrays, corrupt_key, seed_key, idx_B):
    x, y, valid = make_batch(plan, arrays, corrupt_key, idx_B)
    unpacked = on_mesh({"x": x, "y": y, "row_mask": valid})
    if not plan.rows:
      state, m = step_fn(state, unpacked, seed_key)
      return state, dict(m, packed=jnp.bool_(False), rows=jnp.int32(plan.rows_per_batch))
    packed, need = pack(x, y, valid, plan.rows)  # first fit fills rows 0..need-1
    sizes = [r for r in (plan.small_rows, plan.rows) if r]
    branches = [lambda s, r=r: step_fn(s, on_mesh(jax.tree.map(lambda a: a[:r], packed)), seed_key)
                for r in sizes] + [lambda s: step_fn(s, unpacked, seed_key)]
    tier = jnp.sum(jnp.array(sizes) < need)  # the smallest shape that holds the batch
    state, m = jax.lax.switch(tier, branches, state)
    rows = jnp.array(sizes + [plan.rows_per_batch])[tier]
    return state, dict(m, packed=need <= plan.rows, rows=rows)

  rep = sharding.replicated(mesh)
  if scan:
    def epoch_fn(state, arrays, data_key, seed_key, epoch):
      corrupt_key = keys(data_key, epoch)[1]
      body = lambda s, idx_B: one_step(s, arrays, corrupt_key, seed_key, idx_B)
      return jax.lax.scan(body, state, epoch_indices(plan, data_key, epoch))
    return jax.jit(epoch_fn, in_shardings=rep, out_shardings=rep, donate_argnums=(0,))

  step_jit = jax.jit(one_step, in_shardings=rep, out_shardings=rep, donate_argnums=(0,))
  indices = jax.jit(lambda k, e: (epoch_indices(plan, k, e), keys(k, e)[1]))

  def epoch_loop(state, arrays, data_key, seed_key, epoch):
    idx, corrupt_key = indices(data_key, epoch)
    ms = []
    for idx_B in idx:
      state, m = step_jit(state, arrays, corrupt_key, seed_key, idx_B)
      ms.append(m)
    return state, jax.tree.map(lambda *v: jnp.stack(v), *ms)
  return epoch_loop


def data_key(seed: int):
  """The key of the data stream; dropout uses jax.random.key(seed) (birthjax.train.train)."""
  return jax.random.fold_in(jax.random.key(seed), 0x7FFFFFFF)

"""Data parallelism with jax.sharding: a 1-D Mesh with a 'data' axis over all devices.

The batch is sharded on 'data', parameters and optimizer state are replicated. Each
process contributes its slice of the global batch (jax.make_array_from_process_local_data),
so the same code runs on one device, many host devices, or several processes started
with jax.distributed.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Host numpy global batch -> global jax arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  n, i = jax.process_count(), jax.process_index()

  def put(a):
    rows = a.shape[0] // n
    return jax.make_array_from_process_local_data(sharding, a[i * rows:(i + 1) * rows], a.shape)

  return jax.tree.map(put, batch)

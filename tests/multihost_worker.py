"""One process of the 2-process test: `python tests/multihost_worker.py ID PORT OUT_DIR`.

Each process has 2 CPU devices; together they form one 4-device 'data' mesh. Runs a few
train steps feeding this process's half of each global batch, saves and restores an orbax
checkpoint, and writes the final params (process 0) to OUT_DIR/params.npz.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_platforms", "cpu")


def main(process_id: int, port: int, out_dir: str):
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  import numpy as np
  from birthjax.train import checkpoint, train
  from birthjax.model import model
  from birthjax import sharding
  from tests import multihost_common as common

  mesh = sharding.make_mesh()
  assert mesh.size == 4 and jax.process_count() == 2
  state = common.run_steps(mesh)
  ckpts = checkpoint.StageCheckpoints(os.path.join(out_dir, "ckpt"))
  ckpts.save(state, {"next_index": common.STEPS}, {"stage": "test"})
  restored, data_state, _ = ckpts.restore(state)
  ckpts.close()
  assert data_state == {"next_index": common.STEPS}
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(restored["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if process_id == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(state["params"])}
    np.savez(os.path.join(out_dir, "params.npz"), **flat)
  del model, train


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])

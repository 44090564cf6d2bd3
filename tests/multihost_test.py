"""Two processes on this machine (jax.distributed on localhost, 2 CPU devices each) train
exactly as one process with 4 devices, and save/restore an orbax checkpoint together."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from birthjax import sharding
from tests import multihost_common as common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py"),
                             str(i), str(port), str(tmp_path)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert len(jax.devices()) == 4  # this process: 4 host devices (conftest)
  state = common.run_steps(sharding.make_mesh())
  saved = np.load(os.path.join(tmp_path, "params.npz"))
  for path, leaf in jax.tree_util.tree_leaves_with_path(state["params"]):
    np.testing.assert_allclose(saved[jax.tree_util.keystr(path)], np.asarray(leaf),
                               rtol=1e-4, atol=1e-4)  # reduction order differs

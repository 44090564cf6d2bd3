"""Test setup: 4 XLA host devices (data parallelism on CPU), a private TFDS cache, shared fixtures."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["BIRTHJAX_COMPILE_CACHE"] = ""  # hermetic: no compiled programs from earlier runs
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

A5_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                      "data", "cs224n_a5")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds_cache"))
  os.environ["BIRTHJAX_CACHE"] = d
  return d


@pytest.fixture(scope="session")
def a5_dir():
  if not os.path.isfile(os.path.join(A5_DIR, "wiki.txt")):
    pytest.skip("the A5 files are not in ../shared/data/cs224n_a5 (hermetic run)")
  return A5_DIR


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
  from birthjax.data import synthetic
  d = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write(d, seed=0)
  return d


@pytest.fixture(scope="session")
def full_run(cache_dir, tmp_path_factory):
  """(workdir, config, results) of one finished smoke run (pretrain 2 epochs, keep_every=2,
  finetune, evaluate) on the synthetic world, shared by every module that only reads it."""
  from birthjax import run
  from tests.run_test import smoke_config
  workdir = str(tmp_path_factory.mktemp("full"))
  config = smoke_config(cache_dir, **{"pretrain.epochs": 2,  # checkpoints at epochs' ends
                                      "pretrain.keep_every": 2})  # epoch 2: a curve point
  results = run.run(config, workdir)
  return workdir, config, results


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
  """The subprocess launcher of kill_resume_test and preempt_test, one for the session: both
  compare against one uninterrupted reference run and share its compilation cache."""
  from tests.kill_resume_test import Runs
  return Runs(str(tmp_path_factory.mktemp("kill_resume")))


@pytest.fixture(scope="session")
def reference(runs):
  from tests.kill_resume_test import run_reference
  return run_reference(runs)


# Modules that share a session fixture run in one pytest-xdist worker (README's test command:
# `-n auto --dist loadgroup`), so the fixture is built once; every other module is its own
# group (its module fixtures built once too).
SHARED = ("full_run", "reference")


def pytest_collection_modifyitems(items):
  group = {item.path: str(item.path) for item in items}
  for item in items:
    group.update((item.path, f) for f in SHARED if f in item.fixturenames)
  for item in items:
    item.add_marker(pytest.mark.xdist_group(group[item.path]))

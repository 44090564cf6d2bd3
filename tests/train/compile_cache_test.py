"""config.compile_cache: JAX's persistent compilation cache in a per-CPU folder."""
import os
import subprocess
import sys
import textwrap

from birthjax.train import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CPU = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx2 avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
cpu MHz\t\t: 2601.233
flags\t\t: fpu sse2 avx2 avx512f
"""


def test_host_key_follows_cpu_model_and_features_only():
  key = compile_cache.host_key(CPU)
  assert key == compile_cache.host_key(CPU.replace("2600.000", "1800.5"))  # clock: same machine
  assert key == compile_cache.host_key(CPU.split("\n\n")[0])  # other processors: not read
  assert key != compile_cache.host_key(CPU.replace(" avx512f", "", 1))  # fewer features
  assert key != compile_cache.host_key(CPU.replace("9B14", "7B13", 1))
  assert compile_cache.host_key() == compile_cache.host_key()


def test_off_when_empty():
  assert compile_cache.enable("") is None


# a fresh process: point the cache at argv[1], compile one function, print the cache events
PROBE = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from jax import monitoring
    from birthjax.train import compile_cache
    events = []
    monitoring.register_event_listener(lambda name, **kw: events.append(name))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    print(compile_cache.enable(sys.argv[1]))
    x = jnp.arange(64, dtype=jnp.float32).reshape(8, 8) / 7
    y = jax.jit(lambda x: jnp.tanh(jnp.sin(x) @ x.T + 1) @ x)(x)
    print(sum(e.endswith("/cache_hits") for e in events), sum(e.endswith("/cache_misses") for e in events))
    print(y.tobytes().hex())
""")


def _probe(path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  out = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True,
                       env=env, timeout=300, check=True).stdout.split("\n")
  return out[0], tuple(int(x) for x in out[1].split()), out[2]


def test_second_process_loads_what_the_first_compiled(tmp_path):
  folder, (hits, misses), compiled = _probe(str(tmp_path / "xla"))
  assert folder == str(tmp_path / "xla" / compile_cache.host_key())
  assert hits == 0 and misses >= 1
  assert any(f.endswith("-cache") for f in os.listdir(folder))
  _, (hits, misses), loaded = _probe(str(tmp_path / "xla"))
  assert hits >= 1 and misses == 0
  assert loaded == compiled  # bit for bit: the cached executable is the compiled one
  _, (hits, _), fresh = _probe("")
  assert hits == 0 and fresh == compiled

"""JAX's persistent compilation cache, one folder per machine (`config.compile_cache`).

A second run of the same shapes (an ablation that changes a learning rate, a resumed run,
`--config.stages=evaluate`) loads its compiled programs from disk instead of compiling them
again: on a 2-core CPU the A5 dev-set decoder's first call drops from ~20 s to ~6 s.
Results are the same: the cache holds the very executables a compile would produce.

XLA:CPU executables are native code, and XLA only logs a warning when it loads one built for
a CPU with other features (a shared home folder on a cluster): the cache therefore lives in
a subfolder named after this machine's CPU (model and feature flags). JAX's own key already
holds the jax version, the backend, the devices and the XLA flags.

The cache is trusted code (JAX's warning): do not point it at a folder others can write.
An explicit $JAX_COMPILATION_CACHE_DIR wins over the config.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform

import jax
from jax.experimental.compilation_cache import compilation_cache

from birthjax.errors import UserError

MAX_BYTES = 2 << 30  # JAX's LRU eviction keeps the folder under 2 GiB (with filelock)


def host_key(cpuinfo: str | None = None) -> str:
  """`<machine>-<12 hex>`: a digest of the first CPU's model name and feature flags."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:  # not Linux
      cpuinfo = platform.processor() + platform.platform()
  first = cpuinfo.split("\n\n")[0]
  keep = [l for l in first.splitlines() if l.split(":")[0].strip() in
          ("vendor_id", "model name", "flags", "Features", "CPU part", "CPU implementer")]
  text = "\n".join(keep) or first
  return f"{platform.machine() or 'cpu'}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def enable(path: str) -> str | None:
  """Point JAX's compilation cache at `path`/<host_key> (created); '' turns it off.
  Returns the folder in use (None: off). Safe to call again with another path."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  current = jax.config.jax_compilation_cache_dir
  folder = os.path.join(os.path.expanduser(path), host_key()) if path else None
  if folder:
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create the compilation cache folder ({e.strerror or e})",
                      os.path.abspath(folder), "set --config.compile_cache to a writable "
                      "folder, or to '' to compile every run from scratch") from None
  if folder != current:
    compilation_cache.set_cache_dir(folder)
    if importlib.util.find_spec("filelock"):  # JAX's size bound needs it (requirements.txt)
      jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    compilation_cache.reset_cache()  # the next compile opens the new folder
  return folder

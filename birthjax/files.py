"""Files written then renamed: a failed write leaves the previous file and no temporary one;
and the workdir lock, so that two runs never write one workdir's checkpoints at once."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from birthjax.errors import UserError


def atomic_write(path: str, text: str | bytes, flag: str = "--workdir"):
  """Write `text` (str: UTF-8; or bytes) to a temporary file beside `path`, then rename it
  over `path`: a failed write (disk full, no permission) leaves the previous file intact and
  no temporary file, and is a UserError (whose fix names `flag`, where the path came from)."""
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with (open(tmp, "wb") if isinstance(text, bytes) else open(tmp, "w", encoding="utf-8")) as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    kept = " (the previous file is kept)" if os.path.exists(path) else ""
    raise UserError(f"cannot write {os.path.basename(path)}: {e.strerror or e}{kept}",
                    os.path.abspath(path),
                    f"free some disk space, or use another {flag}" if full else
                    f"make that folder writable, or use another {flag}") from None


@contextlib.contextmanager
def workdir_lock(workdir: str, take: bool = True):
  """Hold W/.lock, an exclusive kernel lock (flock), while a run uses the workdir: a second
  process started on it stops with a UserError instead of saving checkpoints beside the
  first one's. The kernel drops the lock with its process, even after kill -9, so a .lock
  file left behind never blocks a rerun; a clean exit removes it. `take=False` (the other
  processes of a multi-host run, whose process 0 holds it) and filesystems without flock:
  no lock."""
  if not take:
    yield
    return
  path = os.path.join(workdir, ".lock")
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise UserError(f"cannot write the workdir's lock file: {e.strerror or e}",
                      os.path.abspath(path), "make that folder writable, or use another "
                      "--workdir") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
      os.close(fd)
      raise UserError(f"another process (pid {pid}) is running in this workdir",
                      os.path.abspath(workdir), "wait for it to end, or stop it (kill PID saves "
                      "after the epoch in flight) and rerun, or use another --workdir") from None
    except OSError:  # no flock on this filesystem: run unlocked
      break
    try:  # the file may have been removed by a run ending meanwhile: lock the one at `path`
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    with contextlib.suppress(OSError):
      os.remove(path)
    os.close(fd)

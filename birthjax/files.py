"""Files written then renamed: a failed write leaves the previous file and no temporary one."""
from __future__ import annotations

import errno
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

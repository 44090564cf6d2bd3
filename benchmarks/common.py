"""Shared by the benchmarks: pausing a background training run while timing.

A background run is a python process whose script is main.py, at a lowered priority (nice
> 0). `Paused` sends it SIGSTOP on entry and SIGCONT on exit (also on error); a watchdog
process sends SIGCONT if the benchmark dies without cleaning up (killed, timed out).
main.py processes at normal priority (someone's foreground work, tests) are left alone.
"""
import os
import signal
import subprocess


def background_runs():
  """(pid, nice, stat, args) of python processes whose script is main.py (not this one)."""
  out = subprocess.run(["ps", "-eo", "pid=,ni=,stat=,args="], capture_output=True, text=True).stdout
  runs = []
  for line in out.splitlines():
    fields = line.split()
    if len(fields) < 5 or int(fields[0]) == os.getpid():
      continue
    argv = fields[3:]
    if "python" in os.path.basename(argv[0]) and any(os.path.basename(t) == "main.py" for t in argv[1:]):
      nice = int(fields[1]) if fields[1].lstrip("-").isdigit() else 0
      runs.append((int(fields[0]), nice, fields[2], " ".join(argv)))
  return runs


class Paused:
  """Context: SIGSTOP the nice'd background training runs on entry, SIGCONT them on exit
  (and by a watchdog if this process dies first). main.py processes at normal priority
  (someone else's foreground work) are left alone and reported."""

  def __enter__(self):
    runs = background_runs()
    self.pids = [p for p, nice, stat, _ in runs if nice > 0 and not stat.startswith("T")]
    others = [p for p, nice, _, _ in runs if nice <= 0]
    if others:
      print(f"not paused (normal priority, not a background run): main.py {others}", flush=True)
    self.watchdog = None
    if self.pids:
      cont = " ".join(str(p) for p in self.pids)
      self.watchdog = subprocess.Popen(
          ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; "
                       f"kill -CONT {cont} 2>/dev/null"], start_new_session=True)
      for p in self.pids:
        os.kill(p, signal.SIGSTOP)
      print(f"paused main.py run(s) {self.pids} (SIGSTOP)", flush=True)
    return self

  def __exit__(self, *exc):
    for p in self.pids:
      try:
        os.kill(p, signal.SIGCONT)
      except ProcessLookupError:
        pass
    if self.pids:
      print(f"resumed main.py run(s) {self.pids} (SIGCONT)", flush=True)
    if self.watchdog:
      self.watchdog.terminate()
      self.watchdog.wait()
    return False

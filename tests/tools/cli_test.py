"""The `python -m birthjax.X` commands: one absl flag namespace, --help, errors as one line."""
from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import subprocess
import sys

import birthjax.tools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = ("analysis", "report", "interop", "ask", "curve", "compare", "london_baseline")
# Entries still calling absl's app.run, whose --help exits 1 (and lists no flags): move them to
# birthjax.tools.cli.run(main) and drop them here.
BAD = {  # an invocation each command refuses: (args, what its one error line says)
    "analysis": (["plots", "--out=x"], "unknown subcommand 'plots'"),
    "report": ([], "no workdir given"),
    "interop": (["export", "ckpt"], "--out is required"),
    "ask": ([], "no workdir given"),
    "curve": ([], "one workdir expected, got 0"),
    "compare": ([], "no workdirs to compare"),
    "london_baseline": (["--data_dir=/nonexistent/birthjax"], "missing data file"),
}


def _tool_modules():
  names = [f"birthjax.tools.{m.name}" for m in pkgutil.iter_modules(birthjax.tools.__path__)]
  if importlib.util.find_spec("torch") is None:  # torch_a5: the optional interop extra
    names.remove("birthjax.tools.torch_a5")
  return names + [f"birthjax.{c}" for c in COMMANDS]


def test_every_tool_imports_into_one_process_without_flag_clashes():
  """absl's FLAGS is global: two modules defining one name raise DuplicateFlagError on import.
  A fresh process, so every flag definition runs here. (main.py is no tool: its --config would
  clash with interop's; nothing imports both.)"""
  code = ("import importlib, json, sys\nfrom absl import flags\n"
          "for m in sys.argv[1:]: importlib.import_module(m)\n"
          "print(json.dumps({m: sorted(f.name for f in flags.FLAGS.get_key_flags_for_module(m))"
          " for m in sys.argv[1:]}))")
  r = subprocess.run([sys.executable, "-c", code, *_tool_modules()], cwd=ROOT,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr
  key = {m.rsplit(".", 1)[1]: set(v) for m, v in json.loads(r.stdout).items()
         if m.startswith("birthjax.tools.")}
  assert key["analysis"] == {"out", "lengths", "m", "n_layer", "n_embd", "batch"}
  assert key["interop_cli"] == {"out", "config"}
  assert key["cli"] == {"out"} and key["report"] == set()
  assert key["ask"] == {"abstain_below", "steps"} and key["compare"] == {"split", "london"}


def _run_all(argvs):
  """(returncode, stdout, stderr) of each `python -m birthjax.X ...`, run in parallel."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE) for argv in argvs]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    results.append((p.returncode, out, err))
  return results


def test_help_and_bad_invocations_in_a_subprocess():
  """--help exits 0 and lists the tool's flags; a bad command line is one `error:` line on
  stderr (what, where, fix), a non-zero exit and no traceback."""
  cases = [(c, "help", [f"birthjax.{c}", "--help"]) for c in COMMANDS]
  cases += [(c, "bad", [f"birthjax.{c}", *BAD[c][0]]) for c in COMMANDS]
  cases += [(c, "flag", [f"birthjax.{c}", "x", "--no_such_flag=1"]) for c in COMMANDS]
  for (command, kind, argv), (rc, out, err) in zip(cases, _run_all([a for *_, a in cases])):
    assert "Traceback" not in err, (argv, err)
    if kind == "help":
      assert rc == 0, (argv, rc, err)
      assert f"python -m birthjax.{command}" in out, (argv, out)
      listed = {"analysis": ("--out", "--lengths", "--batch"), "interop": ("--out", "--config")}
      assert all(f"  {name}: " in out for name in listed.get(command, ())), (argv, out)
      continue
    lines = err.splitlines()
    assert rc != 0 and len(lines) == 1 and lines[0].startswith("error: "), (argv, rc, err)
    what = BAD[command][1] if kind == "bad" else "Unknown command line flag 'no_such_flag'"
    assert what in lines[0] and "; fix: " in lines[0] and out == "", (argv, lines[0], out)

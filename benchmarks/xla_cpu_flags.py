"""XLA:CPU options of the installed jaxlib side by side: matmul libraries, fusion modes, math.

  python benchmarks/xla_cpu_flags.py [--settings=no_ynn,fast_math,...] [--rows=64] [--steps=5]
      [--timeout=240] [--quick] [--list] [--json=PATH]

Lists the xla_cpu_ flags the jaxlib registers, with defaults (XLA's usage text, printed when
it refuses a value; the other xla_cpu_ strings of libjax_common.so are proto fields and
removed flags, which XLA_FLAGS refuses). Each setting (SETTINGS: a name, an XLA_FLAGS) runs
in its own process (flags are read once a process), after a tiny jit in another has shown
that it starts (an unknown flag or value aborts: "rejected"). A run times, for model.dtype
float32 and bfloat16, the jitted A5 pretraining train step (forward, backward, AdamW;
configs/vanilla.py defaults: dropout 0.1, dropout_rng 'hash') on a fixed random batch of
--rows x 127, compiled once: the median of --steps steps after one untimed step, whose loss
is shown against the default setting's (beyond LOSS_TOL: never kept); and a 2048^3 matmul.
The default runs first and last; a line is printed (step over the first default's) and the
json rewritten as each dtype is done. The summary divides by both default runs and keeps
the fastest setting >= 5% faster than each. --quick: a 2-layer 64-wide model, 8 rows, 2
steps, only `no_ynn` unless --settings: a smoke test, its ratios noise. A background
main.py run is paused while timing (benchmarks/common.py).

Found in jax/jaxlib 0.10.2 (the census of the compiled step's library fusions is printed):
YNNPACK fusions (dots with their elementwise and reduce neighbours) are on by default;
`--xla_cpu_experimental_ynn_fusion_type=` (empty) turns them off (Eigen dots). The XNNPACK
fusion flags are accepted but inert (no xnn fusion appears; XLA's XNN fusion thunk is
deprecated). oneDNN fusions (use_onednn + onednn_fusion_type, `dot` alone too) kill the
train step on its first run (SIGILL, "partition compile failed"): XLA puts a sum of two dots
(the input gradient of the q/k/v projections) in one oneDNN fusion oneDNN cannot compile; a
lone dot works. Both stay in SETTINGS, out of DEFAULT_TRY.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import Paused  # noqa: E402

NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
SETTINGS = {
    "default": "",  # YNNPACK fusions (dots + neighbours), LLVM-emitted loops elsewhere
    "no_ynn": NO_YNN,  # XLA's own: Eigen dots, XLA loop fusions
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",  # YNNPACK: lone dots
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "vector512": "--xla_cpu_prefer_vector_width=512",  # default 256 (AVX-512 machines)
    "fast_runtime": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
    "concurrency_scheduler": "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
    "eigen_one_thread": NO_YNN + " --xla_cpu_multi_thread_eigen=false",
    "xnn": NO_YNN + " --xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce"
                    " --xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "onednn": NO_YNN + " --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
}
DEFAULT_TRY = "no_ynn,ynn_dot,fast_math,vector512,fast_runtime,concurrency_scheduler"
DTYPES = ("float32", "bfloat16")
LOSS_TOL = {"float32": 1e-4, "bfloat16": 2e-2}


def timed(fn, reps):
  """(median wall s, median process CPU s, all wall s) of `reps` calls of fn."""
  walls, cpus = [], []
  for _ in range(reps):
    t, c = time.perf_counter(), time.process_time()
    fn()
    walls.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
  return statistics.median(walls), statistics.median(cpus), walls


def child(a):
  """In a process with XLA_FLAGS set: print one 'RESULT {json}' line per dtype when it is done."""
  import dataclasses
  import jax
  import jax.numpy as jnp
  import numpy as np
  if a.probe:
    print("RESULT", json.dumps({"ok": float(jax.jit(lambda x: (x @ x).sum())(jnp.ones((8, 8))))}))
    return
  from configs import vanilla
  from birthjax.model import model
  from birthjax import run, sharding
  from birthjax.train import train
  from birthjax.data.vocab import PAD
  config = vanilla.get_config()
  if a.quick:
    config.model.update(n_layer=2, n_head=4, n_embd=64)
  c, width, key = config.pretrain, config.model.block_size - 1, jax.random.key(0)
  opt, sched = run.stage_optim(c)
  x, y = np.random.default_rng(0).integers(2, 256, (2, a.rows, width), dtype=np.int32)
  y[:, width // 2:] = PAD  # half of each row's targets PAD, as short documents are
  mesh = sharding.make_mesh()
  batch = sharding.put_batch({"x": x, "y": y, "row_mask": np.ones(a.rows, bool)}, mesh)
  cfg = run.model_config(config, deterministic=False)
  host = jax.tree.map(np.asarray, model.init_params(dataclasses.replace(cfg, dtype="float32"), key))
  n, mm = (512, 3) if a.quick else (2048, 5)
  for dtype in DTYPES:
    cfg = dataclasses.replace(cfg, dtype=dtype)
    step = train.compile_train_step(mesh, model_cfg=cfg, opt=opt, base_lr=c.learning_rate,
                                    schedule=sched)
    state = train.init_state(jax.tree.map(jnp.array, host), opt.make())
    box = [jax.device_put(jax.tree.map(lambda v: jnp.array(v, copy=True), state),
                          sharding.replicated(mesh))]  # donated: no buffer may be shared
    t = time.perf_counter()
    compiled = step.lower(box[0], batch, key).compile()
    compile_s, hlo = time.perf_counter() - t, compiled.as_text()

    def one_step():
      box[0], m = compiled(box[0], batch, key)
      return jax.block_until_ready(m)
    loss = float(one_step()["loss"])  # the first step: its loss, untimed
    step_s, cpu_s, all_s = timed(one_step, a.steps)
    f, mat = jax.jit(lambda v: v @ v), jnp.ones((n, n), dtype)
    f(mat).block_until_ready()
    print("RESULT", json.dumps({
        "dtype": dtype, "step_s": step_s, "cpu_s": cpu_s, "all_s": all_s, "compile_s": compile_s,
        "loss": loss, "loss_finite": bool(np.isfinite(loss)), "matmul_n": n,
        "matmul_gflops": 2 * n ** 3 / timed(lambda: f(mat).block_until_ready(), mm)[0] / 1e9,
        "fusions": {k: hlo.count(f'"kind":"__{k}_fusion"') for k in ("ynn", "xnn", "onednn")},
        "custom_calls": sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo))),
        "dots": len(re.findall(r" dot\(", hlo))}), flush=True)


def run_child(flags, extra, timeout):
  """Yield ('result', dict) as the child prints them, then ('end', (status, last log lines))."""
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false")
  with tempfile.TemporaryFile("w+") as log:
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", *extra],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline, seen, status = time.time() + timeout, 0, None
    while status is None:
      time.sleep(0.5)
      if p.poll() is not None:
        rc = p.returncode
        status = "ok" if rc == 0 else f"exit {rc}" if rc > 0 else f"killed by signal {-rc}"
      elif time.time() > deadline:
        p.kill()
        p.wait()
        status = f"timeout ({timeout} s)"
      log.seek(0)
      lines = log.read().splitlines()
      results = [json.loads(l[7:]) for l in lines if l.startswith("RESULT ")]
      yield from (("result", r) for r in results[seen:])
      seen = len(results)
    log_lines = [l for l in lines if not l.startswith("RESULT ")]
    errors = [l for l in log_lines if re.match(r"[EF]\d{4} |usage: --", l)]  # XLA's complaints
    yield "end", (status, (errors or log_lines)[-3:])


def registered_flags():
  """{name: 'default type'}: the xla_cpu_ flags in XLA's usage text (printed on a refused value)."""
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_enable_fast_math=refused", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--probe"], env=env,
                       capture_output=True, text=True, timeout=120)
  return {m[0]: f"{m[1]} {m[2]}" for m in re.findall(
      r"--(xla_cpu_\w+)=(\S*)\s+(bool|string|int32|int64|float)\b", out.stdout + out.stderr)}


def show(n, v, ref):
  """Print one setting's result for one dtype against the first default run's."""
  d = v["dtype"]
  v["ratio_to_first_default"], v["loss_diff"] = v["step_s"] / ref["step_s"], v["loss"] - ref["loss"]
  v["numerics_ok"] = v["loss_finite"] and abs(v["loss_diff"]) <= LOSS_TOL[d]
  fused = " ".join(f"{k} {c}" for k, c in v["fusions"].items() if c) or "none"
  print(f"{n:<22} {d:<8} step {v['step_s']:7.3f} s x{v['ratio_to_first_default']:.3f} (cpu "
        f"{v['cpu_s']:6.2f} s) compile {v['compile_s']:5.1f} s  loss {v['loss']:.5f} "
        f"({v['loss_diff']:+.1e}{'' if v['numerics_ok'] else ' CHANGED'})  matmul "
        f"{v['matmul_gflops']:6.1f} GFLOP/s  library fusions: {fused}, dots {v['dots']}",
        flush=True)


def summary(out):
  """Each setting over both default runs; keep those >= 5% faster than both, numerics unchanged."""
  defaults = [r["results"] for r in out["runs"] if r["setting"] == "default"]
  print("\nsummary: step time over each default run, same dtype (default runs: " + "; ".join(
      f"{d} " + " / ".join(f"{r[d]['step_s']:.3f} s" for r in defaults if d in r) for d in DTYPES)
      + ")")
  keep = {d: [] for d in DTYPES}
  for r in out["runs"][1:-1]:
    cells = []
    for d, v in r["results"].items():
      ratios = [v["step_s"] / x[d]["step_s"] for x in defaults if d in x]
      if len(ratios) == 2 and max(ratios) <= 0.95 and v["numerics_ok"]:
        keep[d].append((v["step_s"], r["setting"]))
      cells.append(f"{d} " + " / ".join(f"x{q:.3f}" for q in ratios)
                   + ("" if v["numerics_ok"] else " (numerics changed)"))
    print(f"  {r['setting']:<22} " + ("; ".join(cells) or r.get("status", "")))
  out["keep"] = {d: [n for _, n in sorted(k)] for d, k in keep.items()}
  for d, best in out["keep"].items():
    print(f"keep for {d}{' (--quick: noise)' if out['quick'] else ''}: " + (
        f"XLA_FLAGS='{SETTINGS[best[0]]}' ({', '.join(best)})" if best
        else "nothing (no setting >= 5% faster than both default runs)"))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--settings", default=None, help=f"of {list(SETTINGS)}; default {DEFAULT_TRY}")
  p.add_argument("--rows", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--timeout", type=int, default=240, help="seconds a setting's process may run")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--list", action="store_true", help="list the flags and settings, time nothing")
  p.add_argument("--json", default="")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.quick:
    a.rows, a.steps = 8, 2
  if a.child:
    return child(a)
  chosen = (a.settings or ("no_ynn" if a.quick else DEFAULT_TRY)).split(",")
  names = ["default"] + [n for n in chosen if n != "default"]
  if set(names) - set(SETTINGS):
    p.error(f"unknown settings {sorted(set(names) - set(SETTINGS))}; known: {list(SETTINGS)}")
  flags = registered_flags()
  print(f"xla_cpu_ flags of this jaxlib, default values ({len(flags)}): "
        + ", ".join(f"{k}={v.split()[0]}" for k, v in flags.items()))
  for n in names:
    bad = [f for f in re.findall(r"--(\w+)=", SETTINGS[n]) if flags and f not in flags]
    print(f"  {n:<22} XLA_FLAGS='{SETTINGS[n]}'" + (f"  (not registered: {bad})" if bad else ""))
  out = {"registered_flags": flags, "settings": SETTINGS, "rows": a.rows, "steps": a.steps,
         "quick": a.quick, "rejected": {}, "runs": []}

  def save():
    if a.json:
      with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
  if a.list:
    return
  extra = [f"--rows={a.rows}", f"--steps={a.steps}"] + (["--quick"] if a.quick else [])
  with Paused():
    print(f"load average: {os.getloadavg()}", flush=True)
    for n in names:  # does it start? (XLA aborts on an unknown flag or value)
      *res, (_, (status, tail)) = run_child(SETTINGS[n], ["--probe"], 120)
      if status != "ok" or not res:
        out["rejected"][n] = tail
        print(f"{n:<22} rejected ({status}): {' | '.join(tail)[-300:]}", flush=True)
    if "default" in out["rejected"]:
      sys.exit("the default setting does not start")
    ref = {}
    for n in [n for n in names if n not in out["rejected"]] + ["default"]:
      run = {"setting": n, "results": {}}
      out["runs"].append(run)
      for kind, v in run_child(SETTINGS[n], extra, a.timeout):
        if kind == "result":
          run["results"][v["dtype"]] = v
          show(n, v, ref.setdefault(v["dtype"], v))
        else:
          run["status"], run["tail"] = v
          if v[0] != "ok":
            print(f"{n:<22} {v[0]}: {' | '.join(v[1])[-300:]}", flush=True)
        save()
  summary(out)
  save()


if __name__ == "__main__":
  main()

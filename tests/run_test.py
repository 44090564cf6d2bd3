"""End-to-end: the real stages on the smoke preset and the synthetic world (4 host devices)."""
import json
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.train import checkpoint, optim
from birthjax.model import model
from birthjax import files, run
from birthjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from configs import vanilla  # noqa: E402


def smoke_config(cache_dir, **overrides):
  c = vanilla.get_config("smoke")
  c.data.source, c.data.cache_dir = "synthetic", cache_dir
  c.checkpoint_every = 2
  for k, v in overrides.items():
    section, _, field = k.rpartition(".")
    (c[section] if section else c)[field] = v
  return c


def params_of(workdir, stage, config):
  like = model.init_params(run.model_config(config), jax.random.key(0))
  params, _ = checkpoint.restore_params(os.path.join(workdir, "checkpoints", stage), like)
  return params


def assert_same_tree(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_full_run_writes_everything(full_run):
  workdir, config, results = full_run
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk == results and on_disk["dev"]["total"] == 100
  with open(os.path.join(workdir, "dev.predictions.tsv")) as f:  # question, prediction, gold, ...
    rows = [l.rstrip("\n").split("\t") for l in f][1:]
  assert len(rows) == 100 and on_disk["dev"]["correct"] == sum(r[1] == r[2] for r in rows)
  assert on_disk["dev"]["accuracy"] == pytest.approx(on_disk["dev"]["correct"])  # 100 questions
  for split, n in (("dev", 100), ("test", 100)):
    with open(os.path.join(workdir, f"{split}.predictions")) as f:
      assert len(f.read().split("\n")) == n + 1
  assert os.listdir(os.path.join(workdir, "tb", "pretrain"))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["n_embd"] == config.model.n_embd
  # pretrain: 600 documents / 128 = 5 steps an epoch; finetune after pretraining: 1 epoch of 400 / 256
  assert checkpoint.StageCheckpoints(os.path.join(workdir, "checkpoints", "pretrain")).latest_step() == 10
  assert checkpoint.StageCheckpoints(os.path.join(workdir, "checkpoints", "finetune")).latest_step() == 2


def test_evaluate_from_init_from_reproduces_predictions(full_run, cache_dir, tmp_path):
  workdir, _, results = full_run
  config = smoke_config(cache_dir, stages="evaluate",
                        init_from=os.path.join(workdir, "checkpoints", "finetune"))
  assert run.run(config, str(tmp_path)) == results
  for split in ("dev", "test"):
    with open(os.path.join(workdir, f"{split}.predictions")) as a, \
         open(os.path.join(tmp_path, f"{split}.predictions")) as b:
      assert a.read() == b.read()


def test_resume_is_bitwise_equal(full_run, cache_dir, tmp_path):
  """Drop the last checkpoints of a finished run, rerun: it resumes and lands on the same params."""
  workdir, config, _ = full_run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  for stage, keep in (("pretrain", 5), ("finetune", None)):
    d = os.path.join(resumed, "checkpoints", stage)
    for step in os.listdir(d):
      if step.isdigit() and (keep is None or int(step) > keep):
        shutil.rmtree(os.path.join(d, step))
  run.run(config, resumed)
  for stage in ("pretrain", "finetune"):
    assert_same_tree(params_of(workdir, stage, config), params_of(resumed, stage, config))
  with open(os.path.join(workdir, "dev.predictions")) as a, \
       open(os.path.join(resumed, "dev.predictions")) as b:
    assert a.read() == b.read()


def _tree(folder):
  return {os.path.relpath(os.path.join(r, n), folder): open(os.path.join(r, n), "rb").read()
          for r, _, names in os.walk(folder) for n in names}


@pytest.mark.parametrize("stages,override", [("pretrain", "pretrain.learning_rate"),
                                             ("pretrain,finetune", "finetune.learning_rate")])
def test_other_config_over_existing_checkpoints_stops(full_run, cache_dir, stages, override):
  """Refused before anything is written: config.json, checkpoints and logs byte-identical, even
  when only a later stage differs (the pretraining that fits is not resumed first)."""
  workdir = full_run[0]
  before = _tree(workdir)
  config = smoke_config(cache_dir, **{"stages": stages, "pretrain.epochs": 2,
                                      "pretrain.keep_every": 2, override: 1e-3})
  with pytest.raises(UserError, match="different configuration") as e:
    run.run(config, workdir)
  assert override.split(".")[0] in str(e.value)
  assert _tree(workdir) == before


def test_bad_stage_and_range_errors(cache_dir, tmp_path):
  with pytest.raises(UserError, match="unknown stage 'pretrian'"):
    run.run(smoke_config(cache_dir, stages="pretrian"), str(tmp_path))
  with pytest.raises(UserError, match="model.n_head"):
    run.run(smoke_config(cache_dir, **{"model.n_head": 3}), str(tmp_path))


_HOLDER = ("import sys\nfrom birthjax import files\nwith files.workdir_lock(sys.argv[1]):\n"
           "  print('held', flush=True)\n  sys.stdin.read()\n")


def _holder(workdir):
  """Another process holding `workdir` until its stdin closes."""
  p = subprocess.Popen([sys.executable, "-c", _HOLDER, workdir], cwd=ROOT, text=True,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  assert p.stdout.readline() == "held\n"
  return p


def test_a_second_process_in_a_workdir_stops_before_writing(cache_dir, tmp_path):
  """Two runs never write one workdir at once: the second stops with the holder's pid and
  leaves the workdir as it was; the lock goes with its process, even after kill -9 (the
  .lock file stays, and blocks nothing), and a clean exit removes the file."""
  w = str(tmp_path / "w")
  os.mkdir(w)
  with open(os.path.join(w, "sentinel.txt"), "w") as f:
    f.write("untouched\n")
  holder = _holder(w)
  with pytest.raises(UserError) as e:
    run.run(smoke_config(cache_dir, stages="pretrain"), w)
  assert e.value.line() == (
      f"error: another process (pid {holder.pid}) is running in this workdir [{w}]; fix: wait "
      "for it to end, or stop it (kill PID saves after the epoch in flight) and rerun, or use "
      "another --workdir")
  assert sorted(os.listdir(w)) == [".lock", "sentinel.txt"]
  holder.kill()
  holder.wait()
  assert sorted(os.listdir(w)) == [".lock", "sentinel.txt"]
  with files.workdir_lock(w):
    with open(os.path.join(w, ".lock")) as f:
      assert f.read() == f"{os.getpid()}\n"
    with pytest.raises(UserError, match="another process"):  # a second lock, same process
      with files.workdir_lock(w):
        pass
  assert os.listdir(w) == ["sentinel.txt"]
  holder = _holder(w)
  holder.stdin.close()
  assert holder.wait() == 0 and os.listdir(w) == ["sentinel.txt"]
  with open(os.path.join(w, "sentinel.txt")) as f:
    assert f.read() == "untouched\n"


def _main(*args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_main_prints_full_parameter_count(tmp_path):
  r = _main("--config=configs/vanilla.py", f"--workdir={tmp_path}", "--config.stages=",
            "--config.seed=3")
  assert r.returncode == 0, r.stderr
  assert "number of parameters: 3323392" in r.stdout
  with open(tmp_path / "command.json") as f:  # what birthjax.compare names the run by
    assert json.load(f) == {"config": "configs/vanilla.py",
                            "overrides": ["--config.stages=", "--config.seed=3"]}


def test_main_missing_data_is_one_clear_line(tmp_path):
  r = _main("--config=configs/vanilla.py", f"--workdir={tmp_path}",
            f"--config.data.dir={tmp_path}/nowhere", f"--config.data.cache_dir={tmp_path}/c")
  assert r.returncode == 1
  assert "Traceback" not in r.stderr
  lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, r.stderr
  assert "wiki.txt" in lines[0] and "nowhere" in lines[0]
  assert "--config.data.dir" in lines[0] and "--config.data.source=synthetic" in lines[0]


def test_london_baseline_on_a5(a5_dir):
  r = subprocess.run([sys.executable, "-m", "birthjax.london_baseline", f"--data_dir={a5_dir}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == "Correct: 25 out of 500: 5.0%"


def _array_files(d):
  """The files holding an orbax item's array data (its ocdbt data files)."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs
           if os.sep + "ocdbt.process_0" + os.sep + "d" + os.sep in os.path.join(r, f)]
  assert files, d
  return files


def _corrupt(path, how):
  with open(path, "r+b") as f:
    if how == "truncate":
      f.truncate(os.path.getsize(path) // 2)
    else:  # flip one byte in the middle: orbax restores this silently
      f.seek(os.path.getsize(path) // 2)
      b = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("how, item", [("flip", "params"), ("truncate", "train")])
def test_corrupt_latest_checkpoint_falls_back(full_run, tmp_path, capsys, how, item):
  workdir, config, _ = full_run
  broken = str(tmp_path / "broken")
  shutil.copytree(workdir, broken)
  shutil.rmtree(os.path.join(broken, "checkpoints", "finetune"))
  files = _array_files(os.path.join(broken, "checkpoints", "pretrain", "10", item))
  # flip: one byte in the middle of each data file. orbax restores a flipped byte of array
  # data silently (the checksum catches it); a file's middle byte may also be a part that the
  # restore never reads (the layout varies from run to run), hence every file
  for path in files:
    _corrupt(path, how)
  run.run(config, broken)
  assert "checkpoints/pretrain/10 is corrupt" in capsys.readouterr().out
  for stage in ("pretrain", "finetune"):
    assert_same_tree(params_of(workdir, stage, config), params_of(broken, stage, config))


def test_no_intact_checkpoint_is_a_clear_error(full_run, tmp_path):
  workdir, config, _ = full_run
  broken = str(tmp_path / "broken")
  shutil.copytree(workdir, broken)
  for step in ("5", "10"):
    for path in _array_files(os.path.join(broken, "checkpoints", "pretrain", step, "params")):
      _corrupt(path, "flip")
  with pytest.raises(UserError, match="no intact checkpoint left"):
    run.run(config, broken)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(cache_dir, tmp_path, monkeypatch):
  """Step 8 (1-based, in the second epoch) reports a NaN loss: the run stops naming it, and
  the first epoch's checkpoint (step 5) stays the latest."""
  real = run.train.train_step

  def poisoned(state, batch, seed_key, **kwargs):
    new_state, m = real(state, batch, seed_key, **kwargs)
    return new_state, dict(m, loss=jnp.where(state["step"] == 7, jnp.nan, m["loss"]))

  monkeypatch.setattr(run.train, "train_step", poisoned)
  config = smoke_config(cache_dir, **{"stages": "pretrain", "pretrain.epochs": 2,
                                      "pretrain.learning_rate": 5.5e-3})  # a fresh compile
  with pytest.raises(UserError, match="non-finite .* at step 8"):
    run.run(config, str(tmp_path))
  d = os.path.join(tmp_path, "checkpoints", "pretrain")
  assert checkpoint.StageCheckpoints(d).latest_step() == 5


def test_tensorflow_is_never_imported(full_run):
  assert "tensorflow" not in sys.modules  # TFDS and tensorboardX both ran without it


def test_ask_answers_as_evaluation_did(full_run):
  """birthjax.tools.ask on a finished run: the same answers and confidences as its dev predictions;
  a question it cannot ask is one error line, the others are still answered."""
  from birthjax.tools import ask
  workdir, _, _ = full_run
  with open(os.path.join(workdir, "dev.predictions.tsv")) as f:
    rows = [l.rstrip("\n").split("\t") for l in f][1:4]  # question, prediction, gold, conf, in corpus
  questions = [r[0] for r in rows]
  long_q = "Where was " + "x" * 120 + " born?"
  got, errors = ask.ask(workdir, [questions[0], "Where was Zoé born?", questions[1], long_q,
                                  questions[2]])
  assert [g[0] for g in got] == questions
  assert [g[1] for g in got] == [r[1] for r in rows]
  assert [round(g[2], 4) for g in got] == pytest.approx([float(r[3]) for r in rows], abs=1e-4)
  assert all(g[3] for g in got)  # every dev person has a wiki line
  assert len(errors) == 2 and errors[0].startswith("error: character 'é' (U+00E9) at column 13")
  assert "[question 2: " in errors[0]
  assert errors[1].startswith("error: the question is 136 characters, too long for block_size 128 (at most 126)")
  top = max(g[2] for g in got)
  assert [g[1] for g in ask.ask(workdir, questions, abstain_below=top + 1e-6)[0]] == ["I don't know"] * 3


def test_ask_reads_standard_input(full_run):
  workdir, _, _ = full_run
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "birthjax.ask", workdir], cwd=ROOT, env=env, text=True,
                     input="Where was Nobody Here born?\nWhere was Zoé born?\n",
                     capture_output=True, timeout=300)
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert [l for l in r.stderr.splitlines() if l.startswith("error:")][0].startswith(
      "error: character 'é'")
  out = [l.split("\t") for l in r.stdout.splitlines() if l.startswith("Where was")]
  assert len(out) == 1 and out[0][0] == "Where was Nobody Here born?" and out[0][3] == "no"
  assert 0.0 <= float(out[0][2]) <= 1.0


def test_curve_point_is_the_run_itself_and_resumes(full_run, monkeypatch):
  """birthjax.tools.curve on the run (keep_every=2: epoch 2, step 10, is kept): finetuning from the
  kept checkpoint with the run's settings is the run's own finetune, so the point's dev
  result is the run's results.json; the rerun recomputes nothing."""
  from birthjax.tools import curve
  workdir, _, results = full_run
  assert curve.kept_points(workdir) == [(2, 10)]
  points = curve.curve(workdir)
  assert len(points) == 1
  p = points[0]
  assert (p["epoch"], p["step"], p["dev_correct"], p["dev_total"]) == (
      2, 10, results["dev"]["correct"], 100)
  assert p["dev_accuracy"] == pytest.approx(results["dev"]["accuracy"])
  assert p["tokens"] == 2 * 601 * 127  # 2 epochs of 601 documents, every target position
  assert p["recall_prompts"] == 100  # the synthetic world states every birth place in its line
  with open(os.path.join(workdir, "curve.json")) as f:
    assert json.load(f)["points"] == points
  assert os.path.getsize(os.path.join(workdir, "curve.png")) > 1000
  with open(os.path.join(workdir, "dev.predictions")) as a, \
       open(os.path.join(workdir, "curve", "2", "dev.predictions")) as b:
    assert a.read() == b.read()
  monkeypatch.setattr(curve, "point", lambda *a: pytest.fail("a finished point was recomputed"))
  assert curve.curve(workdir) == points


def test_curve_of_a_run_without_kept_checkpoints_is_one_error_line(full_run, tmp_path):
  workdir, _, _ = full_run
  other = str(tmp_path / "w")
  shutil.copytree(os.path.join(workdir, "checkpoints", "pretrain"),
                  os.path.join(other, "checkpoints", "pretrain"))
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  config["pretrain"]["keep_every"] = 0  # as a run started without the flag
  with open(os.path.join(other, "config.json"), "w") as f:
    json.dump(config, f)
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "birthjax.curve", other], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith(
      "error: the run kept no pretraining checkpoints for a curve")


def test_stage_settings_built_once_from_the_config():
  c, data = vanilla.get_config(), types.SimpleNamespace(share=1.0)
  pre = run.stage_settings("pretrain", c, data)
  assert (pre.epochs, pre.batch_size, pre.learning_rate, pre.shuffle, pre.seed) == (650, 128, 6e-3, False, 0)
  assert pre.schedule == optim.Schedule(10_240, 200 * 2938 * 128, False)
  assert pre.opt == optim.Settings(0.1, "a5", 1.0)
  # finetuning from scratch runs epochs_from_scratch (75), after pretraining its 10 epochs
  assert run.stage_settings("finetune", c, data, "scratch").epochs == 75
  fine = run.stage_settings("finetune", c, data, "pretrain")
  assert (fine.epochs, fine.batch_size, fine.learning_rate, fine.seed) == (10, 256, 6e-4, 1)
  hash(fine)  # frozen: compiled programs are cached by such settings

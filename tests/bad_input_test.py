"""Bad input, case by case: one `error:` line (what is wrong [where]; fix: how), exit != 0,
no traceback, nothing in the workdir lost.

Each row of CASES runs either as a real `python main.py ...` subprocess ("main": the exit
code / no traceback / one stderr line contract; these all start, in parallel, when this
module's first test starts) or in-process ("run": `birthjax.run.run`, whose UserError is
the line main.py prints; "write": writing predictions). Every data and config error is
raised before a model is built or the workdir is written (run.run checks the config, the
workdir and the four files first), so no case compiles or trains. Before each case the
workdir holds a sentinel file and a `dev.predictions`; afterwards both are unchanged and
nothing was added (no config.json, no temporary file).

Decisions documented here:
- a character outside the vocabulary in an evaluation question STOPS the run (the reference
  would crash with a KeyError in its stoi lookup); evaluation questions are not ASCII-filtered.
- a finetuning line longer than block_size stops the run; an evaluation question longer than
  block_size WORKS: decoding crops to the last block_size characters, as the reference does.
- CRLF line endings and a UTF-8 BOM are accepted: the data are the same as the clean files'.
- a batch size that is not a multiple of the device count works: batches are padded with
  rows that add nothing to the loss or the token count.
"""
import collections
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from birthjax.train import checkpoint, device_epoch, optim
from birthjax.infer import decode, evaluate
from birthjax.data import examples, input_pipeline
from birthjax import files
from birthjax.model import model
from birthjax.data import records
from birthjax import run
from birthjax.train import train
from birthjax.errors import UserError
from birthjax.data.vocab import Vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from configs import vanilla  # noqa: E402

DEV, TRAIN, TEST, WIKI = "birth_dev.tsv", "birth_places_train.tsv", "birth_test_inputs.tsv", "wiki.txt"
SENTINEL = {"sentinel.txt": b"do not touch\n", "dev.predictions": b"Paris\nLondon\n"}
LONG_QUESTION = "Where was " + "Anna Maria " * 18 + "Rossi born?"  # 219 characters


# ----------------------------------------------------------------------------- editing a data copy
def _path(d, name):
  return os.path.join(d, name)


def _edit_line(name, n, new):
  """Replace line n (1-based) of a file by `new` (str, or bytes written raw)."""
  def setup(d, w):
    with open(_path(d, name), "rb") as f:
      lines = f.read().split(b"\n")
    lines[n - 1] = new if isinstance(new, bytes) else new.encode("utf-8")
    with open(_path(d, name), "wb") as f:
      f.write(b"\n".join(lines))
  return setup


def _truncate(name):
  def setup(d, w):
    open(_path(d, name), "wb").close()
  return setup


def _remove(name):
  def setup(d, w):
    os.remove(_path(d, name))
  return setup


def _folder_for(name):
  def setup(d, w):
    os.remove(_path(d, name))
    os.mkdir(_path(d, name))
  return setup


def _file_as_workdir(d, w):
  with open(w + ".file", "w") as f:
    f.write("a file, not a folder\n")
  return {"workdir": w + ".file"}


def _workdir_under_file(d, w):
  return {"workdir": os.path.join(w, "sentinel.txt", "run")}


class _FailingWrite:
  """A real file whose write fails with `err` after 3 characters (as on a full disk)."""

  def __init__(self, f, err):
    self.f, self.err = f, err

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()

  def write(self, text):
    self.f.write(text[:3])
    raise OSError(self.err, os.strerror(self.err))


def _failing_writes(err, on_open=False):
  """Every file files.atomic_write opens fails with `err` (monkeypatched): on open (as in a
  read-only folder), or on write, after the file was created (as on a full disk)."""
  def fake_open(*args, **kwargs):
    if on_open:
      raise OSError(err, os.strerror(err), args[0])
    return _FailingWrite(open(*args, **kwargs), err)

  def patch(monkeypatch, w):
    monkeypatch.setattr(files, "open", fake_open, raising=False)
  return patch


def _file_as_compile_cache(d, w):
  with open(w + ".xla", "w") as f:
    f.write("a file, not a folder\n")
  return {"compile_cache": w + ".xla"}


def _checkpoint_of(**model_overrides):
  """A finetune checkpoint of the smoke model (with `model_overrides`) beside the workdir, in
  {w}.ckpt/checkpoints/finetune, evaluated with the smoke config; the folder's every file is
  recorded in {w}.ckpt.manifest so the test can check that nothing in it moved or changed."""
  def setup(d, w):
    c = _config({f"model.{k}": v for k, v in model_overrides.items()})
    params = model.init_params(run.model_config(c), jax.random.key(0))
    tx = optim.Settings().make()
    folder = os.path.join(w + ".ckpt", "checkpoints", "finetune")
    ckpts = checkpoint.StageCheckpoints(folder)
    ckpts.save(dict(train.init_state(params, tx), step=np.int32(8)), {"epoch": 1},
               {"stage": "finetune", "model": c.model.to_dict()})
    ckpts.close()
    with open(w + ".ckpt.manifest", "w") as f:
      json.dump(_tree_snapshot(w + ".ckpt"), f)
    return {"stages": "evaluate", "init_from": folder}
  return setup


def _tree_snapshot(folder):
  """{relative path: sha256} of every file under `folder`."""
  return {os.path.relpath(os.path.join(r, n), folder):
          hashlib.sha256(open(os.path.join(r, n), "rb").read()).hexdigest()
          for r, _, names in os.walk(folder) for n in names}


def _params_file(n_embd=None):
  """{w}.params beside the workdir: a reference state dict of the smoke model with `n_embd`
  (torch.save, through the interop export), or with None a text file that is no state dict."""
  def setup(d, w):
    path = w + ".params"
    if n_embd is None:
      with open(path, "w") as f:
        f.write("not a state dict\n")
    else:
      pytest.importorskip("torch")
      from birthjax.model import interop
      c = _config({"model.n_embd": n_embd})
      params = model.init_params(run.model_config(c), jax.random.key(0))
      interop.save_torch_file(params, run.model_config(c), path)
    with open(w + ".ckpt.manifest", "w") as f:  # checked like a checkpoint folder: unchanged
      json.dump({"": hashlib.sha256(open(path, "rb").read()).hexdigest()}, f)
    return {"init_from": path}
  return setup


def _empty_folder(d, w):
  os.mkdir(w + ".empty")
  return {"init_from": w + ".empty"}


def _file_as_cache(d, w):
  with open(w + ".cache", "w") as f:
    f.write("a file, not a folder\n")
  return {"data.cache_dir": w + ".cache"}


# ----------------------------------------------------------------------------- the table
# id; via: "main" (subprocess), "run" (run.run in-process) or "write" (writing W/dev.predictions);
# setup(data_dir, workdir) -> extra overrides or None; overrides; strings the error line must
# hold ({d}: data dir, {w}: workdir); exit code (main only); patch(monkeypatch, workdir) or None
Case = collections.namedtuple("Case", "id via setup overrides expect code patch",
                              defaults=(None, {}, (), 1, None))
CASES = [
    Case("missing_file", "main", _remove(DEV), {},
         ("missing data file birth_dev.tsv", "[{d}/birth_dev.tsv]", "--config.data.dir")),
    Case("empty_file", "run", _truncate(TRAIN), {},
         ("the finetuning file birth_places_train.tsv is empty", "[{d}/birth_places_train.tsv]")),
    Case("empty_wiki", "run", _truncate(WIKI), {},
         ("the pretraining text wiki.txt is empty", "[{d}/wiki.txt]")),
    Case("folder_instead_of_file", "run", _folder_for(WIKI), {},
         ("data file wiki.txt is a folder, not a file", "[{d}/wiki.txt]")),
    Case("tsv_line_without_tab", "run", _edit_line(TRAIN, 3, "Where was Anna Rossi born? Paris"), {},
         ("line 3 has 0 tabs, expected exactly one", "[{d}/birth_places_train.tsv:3]")),
    Case("tsv_line_extra_tabs", "run", _edit_line(TRAIN, 5, "Where was Anna Rossi born?\tParis\tRome"),
         {}, ("line 5 has 2 tabs, expected exactly one", "[{d}/birth_places_train.tsv:5]")),
    Case("dev_line_extra_tabs", "run", _edit_line(DEV, 2, "Where was Anna Rossi born?\tParis\t"), {},
         ("line 2 has 2 tabs, expected at most one", "[{d}/birth_dev.tsv:2]")),
    Case("train_line_empty_answer", "run", _edit_line(TRAIN, 6, "Where was Anna Rossi born?\t "),
         {}, ("line 6 has an empty answer", "[{d}/birth_places_train.tsv:6]")),
    Case("dev_line_empty_answer", "run", _edit_line(DEV, 3, "Where was Anna Rossi born?\t"), {},
         ("line 3 has an empty answer", "[{d}/birth_dev.tsv:3]")),
    Case("test_line_extra_tabs", "run", _edit_line(TEST, 2, "Where was Anna Rossi born?\tx\ty"),
         {}, ("line 2 has 2 tabs, expected at most one", "[{d}/birth_test_inputs.tsv:2]")),
    Case("dev_line_without_answer", "run", _edit_line(DEV, 4, "Where was Anna Rossi born?"), {},
         ("line 4 lacks an answer column", "[{d}/birth_dev.tsv:4]")),
    Case("non_utf8_bytes", "run", _edit_line(DEV, 7, b"Where was Ren\xe9 Rossi born?\tParis"), {},
         ("birth_dev.tsv is not valid UTF-8", "byte 0xe9 at line 7", "[{d}/birth_dev.tsv:7]",
          "re-save the file as UTF-8")),
    Case("char_outside_vocab_in_dev", "main",
         _edit_line(DEV, 3, "Where was Zoé Rossi born?\tParis"), {},
         ("character 'é' (U+00E9) at column 13 is not in the vocabulary", "[{d}/birth_dev.tsv:3]",
          "wiki.txt")),
    Case("reserved_char_in_wiki", "run",
         _edit_line(WIKI, 2, "Anna \u2047 Rossi was born in Paris."), {},
         ("wiki.txt contains the reserved character '⁇' (U+2047, the MASK token) at column 6",
          "[{d}/wiki.txt:2]")),
    Case("finetune_line_too_long", "run", _edit_line(TRAIN, 2, LONG_QUESTION + "\tParis"), {},
         ("question+answer is 226 characters with the two MASKs, more than block_size 128",
          "[{d}/birth_places_train.tsv:2]", "--config.model.block_size")),
    Case("vocab_size_too_small", "run", None, {"model.vocab_size": 20},
         ("the data's vocabulary has 71 characters, more than model.vocab_size=20", "[{d}]",
          "--config.model.vocab_size=71")),
    Case("unknown_config_field", "main", None, {"model.n_hed": 3},
         ("unknown config field model.n_hed (did you mean model.n_head?)",
          "[--config.model.n_hed=3]"), 2),
    Case("bad_flag_type", "main", None, {"pretrain.epochs": "ten"},
         ("--config.pretrain.epochs=ten", "invalid literal for int()"), 2),
    Case("negative_epochs", "run", None, {"pretrain.epochs": -1},
         ("config value pretrain.epochs=-1 is out of range", "[--config.pretrain.epochs]",
          "use an integer >= 0")),
    Case("zero_batch_size", "run", None, {"finetune.batch_size": 0},
         ("config value finetune.batch_size=0 is out of range", "[--config.finetune.batch_size]")),
    Case("zero_eval_batch_size", "run", None, {"eval.batch_size": 0},
         ("config value eval.batch_size=0 is out of range", "[--config.eval.batch_size]")),
    Case("n_embd_not_divisible_by_n_head", "run", None, {"model.n_head": 3},
         ("model.n_embd=32 is not divisible by model.n_head=3", "[--config.model.n_head]")),
    Case("bottleneck_larger_than_block", "run", None,
         {"model.variant": "perceiver", "model.bottleneck_dim": 200},
         ("model.bottleneck_dim=200 is larger than model.block_size=128",
          "[--config.model.bottleneck_dim]")),
    Case("unknown_variant", "run", None, {"model.variant": "gpt5"},
         ("unknown model.variant 'gpt5'", "[--config.model.variant]", "vanilla, perceiver")),
    Case("unknown_dropout_rng", "run", None, {"model.dropout_rng": "philox"},
         ("unknown model.dropout_rng 'philox'", "[--config.model.dropout_rng]", "'hash'")),
    Case("unknown_recite_from", "run", None, {"data.recite_from": "name"},
         ("unknown data.recite_from 'name'", "[--config.data.recite_from]", "'title'")),
    Case("unknown_data_source", "run", None, {"data.source": "wiki"},
         ("unknown data.source 'wiki'", "[--config.data.source]")),
    Case("more_people_than_the_data", "run", None, {"data.people": 100000},
         ("data.people=100000 is more than the", "people (biographies) in the data",
          "[--config.data.people]", "0: everyone")),
    Case("val_takes_every_train_question", "run", None, {"data.val_questions": 100000},
         ("data.val_questions=100000 leaves no train questions", "[--config.data.val_questions]")),
    Case("negative_people", "run", None, {"data.people": -1},
         ("config value data.people=-1 is out of range", "[--config.data.people]")),
    Case("unknown_stage", "run", None, {"stages": "pretrain,fientune"},
         ("unknown stage 'fientune'", "[--config.stages]", "pretrain,finetune,evaluate")),
    Case("workdir_is_a_file", "main", _file_as_workdir, {},
         ("the workdir exists and is not a folder", "[{w}.file]", "--workdir")),
    Case("workdir_under_a_file", "run", _workdir_under_file, {},
         ("cannot create the workdir (Not a directory)", "[{w}/sentinel.txt/run]", "--workdir")),
    Case("read_only_workdir", "run", None, {},  # EACCES simulated: these tests run as root
         ("cannot write config.json: Permission denied", "[{w}/config.json]", "make that folder "
          "writable, or use another --workdir"), 1, _failing_writes(errno.EACCES, on_open=True)),
    Case("disk_full_writing_predictions", "write", None, {},
         ("cannot write dev.predictions: No space left on device (the previous file is kept) "
          "[{w}/dev.predictions]; fix: free some disk space, or use another --workdir",),
         1, _failing_writes(errno.ENOSPC)),
    Case("cache_dir_is_a_file", "run", _file_as_cache, {},
         ("the data cache folder exists and is not a folder", "[{w}.cache]",
          "--config.data.cache_dir")),
    Case("compile_cache_is_a_file", "run", _file_as_compile_cache, {},
         ("cannot create the compilation cache folder", "[{w}.xla/", "--config.compile_cache")),
    Case("init_from_points_to_nothing", "run", None,
         {"init_from": "/nonexistent/checkpoints/finetune"},
         ("init_from points to nothing", "[/nonexistent/checkpoints/finetune]",
          "--config.init_from")),
    # a readable checkpoint that does not fit the config is an error, never "corrupt": this
    # once moved a good checkpoint to corrupt.8 after a mistyped --config.model.n_embd
    Case("init_from_checkpoint_of_another_size", "main", _checkpoint_of(), {"model.n_embd": 48},
         ("the checkpoint (vanilla n_layer=2 n_head=2 n_embd=32 block_size=128 vocab_size=256) "
          "does not fit the model this config builds: blocks_0/attn/key/bias is (32,) in the "
          "checkpoint, (48,) in the config's model", "[{w}.ckpt/checkpoints/finetune/8]",
          "the checkpoint is left as it is")),
    Case("init_from_checkpoint_of_another_variant", "run",
         _checkpoint_of(variant="perceiver", bottleneck_dim=16), {},
         ("the checkpoint (perceiver n_layer=2 n_head=2 n_embd=32 block_size=128 vocab_size=256 "
          "bottleneck_dim=16) does not fit the model this config builds",
          "arrays only in the checkpoint", "only in the config's model (e.g. blocks_0/attn/key/bias)",
          "[{w}.ckpt/checkpoints/finetune/8]")),
    Case("init_from_folder_without_checkpoint", "run", _empty_folder, {},
         ("no checkpoint found", "[{w}.empty]", "--config.init_from")),
    Case("init_from_params_of_another_shape", "run", _params_file(n_embd=48), {},
         ("weight 'blocks.0.attn.key.bias' has shape [48] in the torch state dict, the model "
          "needs [32]", "[{w}.params]", "n_embd=48, block_size=128", "--config.model.n_embd=48")),
    Case("init_from_file_that_is_not_a_state_dict", "main", _params_file(), {},
         ("cannot read the torch file", "[{w}.params]", "torch.save(model.state_dict(), FILE)")),
    Case("infinite_learning_rate", "run", None, {"pretrain.learning_rate": float("inf")},
         ("config value pretrain.learning_rate=inf is out of range",
          "[--config.pretrain.learning_rate]", "finite")),
    Case("nan_weight_decay", "main", None, {"finetune.weight_decay": "nan"},
         ("config value finetune.weight_decay=nan is out of range",
          "[--config.finetune.weight_decay]")),
    Case("negative_grad_clip", "run", None, {"pretrain.grad_clip": -1.0},
         ("config value pretrain.grad_clip=-1.0 is out of range", "[--config.pretrain.grad_clip]")),
    Case("zero_final_tokens", "run", None, {"finetune.final_tokens": 0},
         ("config value finetune.final_tokens=0 is out of range",
          "[--config.finetune.final_tokens]")),
    Case("block_too_short_for_the_questions", "run", None, {"model.block_size": 16},
         ("more than block_size 16", "[{d}/birth_places_train.tsv:1]", "--config.model.block_size")),
    Case("evaluate_without_checkpoint", "run", None, {"stages": "evaluate"},
         ("nothing to evaluate: no finetune checkpoint in the workdir",
          "[{w}/checkpoints/finetune]")),
    Case("unknown_preset", "main", None, {"config": "configs/vanilla.py:smok"},
         ("error: unknown preset 'smok': use smoke or quickstart [command line: "
          "--config=configs/vanilla.py:smok", "fix: correct that flag"), 2),
]
MAIN_CASES = [c for c in CASES if c.via == "main"]
ORDER = [c for c in CASES if c.via != "main"] + MAIN_CASES  # in-process first: see `launched`


def _prepare(case, base, synthetic_dir, cache_dir):
  """A fresh data copy and a workdir holding the sentinel files: (data_dir, workdir, overrides)."""
  d, w = os.path.join(base, "data"), os.path.join(base, "work")
  shutil.copytree(synthetic_dir, d)
  os.mkdir(w)
  for name, content in SENTINEL.items():
    with open(os.path.join(w, name), "wb") as f:
      f.write(content)
  overrides = {"data.dir": d, "data.cache_dir": cache_dir, "workdir": w, **case.overrides}
  if case.setup:
    overrides.update(case.setup(d, w) or {})
  return d, w, overrides


def _snapshot(w):
  return {name: open(os.path.join(w, name), "rb").read() for name in sorted(os.listdir(w))
          if os.path.isfile(os.path.join(w, name))}


def _check_line(line, case, d, w):
  assert line.startswith("error: ") and "\n" not in line and "; fix: " in line, line
  for s in case.expect:
    assert s.format(d=d, w=w) in line, (s.format(d=d, w=w), line)


def _check_workdir(w):
  assert sorted(os.listdir(w)) == sorted(SENTINEL)  # nothing added (no config.json, no tmp file)
  assert _snapshot(w) == SENTINEL  # nothing changed


def _argv(overrides):
  config = overrides.pop("config", "configs/vanilla.py:smoke")
  return ["main.py", f"--config={config}", f"--workdir={overrides.pop('workdir')}"] + [
      f"--config.{k}={v}" for k, v in overrides.items()]


@pytest.fixture(scope="module", autouse=True)
def launched(request, tmp_path_factory, synthetic_dir, cache_dir):
  """The selected "main" cases, all started when this module's first test starts: they run
  (mostly importing) while the in-process cases run, which come first in test order."""
  selected = {item.callspec.params["case"].id for item in request.session.items
              if item.parent is request.node
              and getattr(item, "originalname", "") == "test_bad_input"}
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  procs = {}
  for case in [c for c in MAIN_CASES if c.id in selected]:
    d, w, overrides = _prepare(case, str(tmp_path_factory.mktemp(case.id)), synthetic_dir, cache_dir)
    p = subprocess.Popen([sys.executable, *_argv(overrides)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs[case.id] = (p, d, w)
  yield procs
  for p, _, _ in procs.values():
    if p.poll() is None:
      p.kill()
      p.wait()


def _config(overrides):
  c = vanilla.get_config("smoke")
  for k, v in overrides.items():
    section, _, field = k.rpartition(".")
    (c[section] if section else c)[field] = v
  return c


# ----------------------------------------------------------------------------- what simply works
def _data_cfg(d, cache_dir):
  c = vanilla.get_config("smoke").data
  c.dir, c.cache_dir = d, cache_dir
  return c


def test_crlf_and_bom_load_like_the_clean_files(tmp_path, synthetic_dir, cache_dir):
  messy = str(tmp_path / "messy")
  shutil.copytree(synthetic_dir, messy)
  for name in (WIKI, TRAIN, DEV, TEST):
    with open(_path(messy, name), "rb") as f:
      raw = f.read()
    with open(_path(messy, name), "wb") as f:
      f.write(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))
  clean = input_pipeline.load(_data_cfg(synthetic_dir, cache_dir), 128)
  got = input_pipeline.load(_data_cfg(messy, cache_dir), 128)
  assert got.digest != clean.digest  # really other bytes
  assert got.vocab == clean.vocab and "\r" not in got.vocab.chars and "\ufeff" not in got.vocab.chars
  assert len(got.documents) == len(clean.documents) == 601
  for a, b in zip(got.documents, clean.documents):
    np.testing.assert_array_equal(a, b)
  assert len(got.finetune) == len(clean.finetune) == 400
  for (qa, aa), (qb, ab) in zip(got.finetune, clean.finetune):
    np.testing.assert_array_equal(qa, qb)
    np.testing.assert_array_equal(aa, ab)
  assert got.eval_sets == clean.eval_sets


def test_eval_question_longer_than_block_size_is_cropped(tmp_path, synthetic_dir, cache_dir):
  """Accepted by the data checks; decoding sees its last block_size characters (the reference's
  crop), so its answer is that of the question cut to its last block_size - 1 characters."""
  d = str(tmp_path / "data")
  shutil.copytree(synthetic_dir, d)
  _edit_line(DEV, 5, LONG_QUESTION + "\tParis")(d, None)
  c = _data_cfg(d, cache_dir)
  assert input_pipeline.check_data(c, 128, 256) == d
  cfg = run.model_config(vanilla.get_config("smoke"))
  params = model.init_params(cfg, jax.random.key(0))
  vocab = Vocab.from_documents(open(_path(d, WIKI)).read().split("\n"))
  questions = [LONG_QUESTION, LONG_QUESTION[-(cfg.block_size - 1):], "Where was Anna Rossi born?"]
  prompts = [examples.prompt(vocab.encode(q)) for q in questions]
  assert len(prompts[0]) > cfg.block_size and len(prompts[1]) == cfg.block_size
  # the ids, not the text: an untrained model may predict ids beyond this small vocabulary
  out = decode.greedy_generate(params, cfg, prompts, steps=3)
  assert [len(o) for o in out] == [3, 3, 3]
  np.testing.assert_array_equal(out[0], out[1])


def test_batch_size_not_a_multiple_of_devices_is_padded():
  """4 devices (conftest), batch size 3 over 7 records: every batch padded to 4 rows, the
  padding rows masked out (all PAD); no record lost or repeated."""
  assert jax.device_count() == 4
  plan = device_epoch.make_plan(7, 3, 16, False, jax.device_count())
  qa = [(np.full(3, i + 2, np.int32), np.array([9], np.int32)) for i in range(7)]
  arrays = jax.tree.map(jax.numpy.asarray, records.finetune(qa, 16))
  key = device_epoch.keys(device_epoch.data_key(0), 0)[1]
  batches = [[np.asarray(a) for a in device_epoch.make_batch(plan, arrays, key, idx)]
             for idx in device_epoch.epoch_indices(plan, device_epoch.data_key(0), 0)]
  assert [x.shape for x, _, _ in batches] == [(4, 15)] * 3
  assert [v.tolist() for _, _, v in batches] == [[True] * 3 + [False]] * 2 + [[True] + [False] * 3]
  assert [int(r) - 2 for x, _, v in batches for r in x[v, 0]] == list(range(7))
  assert all((x[~v] == 0).all() and (y[~v] == 0).all() for x, y, v in batches)


# ----------------------------------------------------------------------------- the table, run
@pytest.mark.parametrize("case", ORDER, ids=[c.id for c in ORDER])
def test_bad_input(case, request, tmp_path, synthetic_dir, cache_dir, monkeypatch):
  if case.via == "main":
    p, d, w = request.getfixturevalue("launched")[case.id]
    out, err = p.communicate(timeout=300)
    assert p.returncode == case.code, (out, err)
    assert "Traceback" not in out + err, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    line = lines[0]
  else:
    d, w, overrides = _prepare(case, str(tmp_path), synthetic_dir, cache_dir)
    workdir = overrides.pop("workdir")
    if case.patch:
      case.patch(monkeypatch, w)
    with pytest.raises(UserError) as e:
      if case.via == "write":
        evaluate.write_predictions(os.path.join(workdir, "dev.predictions"), ["Rome", "Oslo"])
      else:
        run.run(_config(overrides), workdir)
    line = e.value.line()
  print(f"{case.id}: {line}")
  _check_line(line, case, d, w)
  _check_workdir(w)
  if os.path.exists(w + ".ckpt.manifest"):  # the checkpoint it was pointed at: byte-identical
    got = ({"": hashlib.sha256(open(w + ".params", "rb").read()).hexdigest()}
           if os.path.isfile(w + ".params") else _tree_snapshot(w + ".ckpt"))
    assert got == json.load(open(w + ".ckpt.manifest"))

"""TFDS builder that writes the four A5-format files to ArrayRecord, read back with tfds.data_source.

The files are parsed by `birthjax.data.corpus` (the reference's rules); the builder stores the
parsed records in file order (`disable_shuffling=True`). The build happens once, into a
cache folder keyed by the SHA-256 of the four files, so an edited file is rebuilt and an
unchanged one is reused. A build is published by renaming a finished private folder, with a
manifest of its files' SHA-256; a cache that no longer matches it is rebuilt. TensorFlow is
never imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from birthjax.data import corpus

SPLITS = {"wiki": corpus.WIKI, "train": corpus.TRAIN, "dev": corpus.DEV, "test": corpus.TEST}


def files_digest(data_dir: str) -> str:
  h = hashlib.sha256()
  for name in corpus.FILES:
    with open(corpus.path_of(data_dir, name), "rb") as f:
      h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
  return h.hexdigest()[:16]


class BirthPlaces(tfds.core.GeneratorBasedBuilder):
  """wiki (documents) and train/dev/test (question, answer) splits of one data folder."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, source_dir: str, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"A5-format birth-place data from {self._source_dir}",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),  # wiki document, or the question
            "answer": tfds.features.Text(),  # '' for wiki and for unanswered questions
            "has_answer": tfds.features.Scalar(dtype=np.bool_),
        }),
        disable_shuffling=True,  # keep file order
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    d = self._source_dir
    if split == "wiki":
      rows = [(doc, "", False) for doc in corpus.read_wiki(d)]
    elif split == "train":
      rows = [(q, a, True) for q, a in corpus.read_finetune(d)]
    else:
      qs, ans = corpus.read_eval(d, SPLITS[split])
      rows = [(q, a, True) for q, a in zip(qs, ans)] if ans is not None else [(q, "", False) for q in qs]
    for i, (text, answer, has_answer) in enumerate(rows):
      yield i, {"text": text, "answer": answer, "has_answer": has_answer}


MANIFEST = "birthjax-manifest.json"  # SHA-256 of every file of a finished build


def _manifest(folder: str) -> dict:
  out = {}
  for root, _, names in os.walk(folder):
    for n in names:
      path = os.path.join(root, n)
      if n != MANIFEST:
        with open(path, "rb") as f:
          out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _problem(folder: str) -> str | None:
  """Why a cache folder cannot be trusted (None: every file is as the build left it)."""
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      want = json.load(f)
  except FileNotFoundError:
    return "it has no manifest: an unfinished build, or one by an older birthjax"
  except (OSError, ValueError) as e:
    return f"its manifest cannot be read ({type(e).__name__})"
  have = _manifest(folder)
  bad = sorted(set(want) ^ set(have)) + sorted(k for k in set(want) & set(have) if want[k] != have[k])
  return f"{len(bad)} file(s) differ from what was built, e.g. {bad[0]}" if bad else None


def _build(data_dir: str, folder: str):
  """Build into a private folder beside `folder`, then rename it into place (a run that
  crashes leaves no half-built cache; of two runs building at once, the first rename wins
  and the other's build is dropped)."""
  # parse first, so bad input fails with our message before TFDS starts writing
  corpus.read_wiki(data_dir), corpus.read_finetune(data_dir)
  corpus.read_eval(data_dir, corpus.DEV), corpus.read_eval(data_dir, corpus.TEST)
  os.makedirs(os.path.dirname(folder), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=f".{os.path.basename(folder)}.")
  try:
    tfds.disable_progress_bar()
    builder = BirthPlaces(source_dir=data_dir, data_dir=tmp, file_format="array_record")
    verbose = logging.getLogger().isEnabledFor(logging.INFO)  # main.py: --verbosity=0 or more
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare()  # TFDS prints "Downloading and preparing dataset ..."
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(_manifest(tmp), f)
    try:
      os.rename(tmp, folder)
    except OSError:  # another run published the same build first: use it
      if not os.path.isdir(folder):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _read(data_dir: str, folder: str) -> dict:
  builder = BirthPlaces(source_dir=data_dir, data_dir=folder, file_format="array_record")
  out = {}
  for split, src in builder.as_data_source().items():
    out[split] = [{"text": r["text"].decode("utf-8"), "answer": r["answer"].decode("utf-8"),
                   "has_answer": bool(r["has_answer"])} for r in (src[i] for i in range(len(src)))]
  return out


def data_sources(data_dir: str, cache_dir: str) -> dict:
  """{split: [{'text', 'answer', 'has_answer'}] in file order}, from the cache folder of the
  files' digest, built if missing. A cache whose files differ from its manifest (a crash, a
  full disk, an edit) or that cannot be read is set aside and rebuilt, with one warning."""
  for name in corpus.FILES:  # clear errors for missing files, before TFDS sees them
    corpus.path_of(data_dir, name)
  folder = os.path.join(os.path.expanduser(cache_dir), files_digest(data_dir))
  if not os.path.isdir(folder):
    _build(data_dir, folder)
  problem = _problem(folder)
  if problem is None:
    try:
      return _read(data_dir, folder)
    except Exception as e:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
      problem = f"it cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
  print(f"warning: the data cache {folder} is damaged ({problem}); rebuilding it from {data_dir}",
        flush=True)
  aside = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=f".{os.path.basename(folder)}.bad.")
  try:
    os.rename(folder, os.path.join(aside, "cache"))
  except OSError:  # another run set it aside first
    pass
  shutil.rmtree(aside, ignore_errors=True)
  _build(data_dir, folder)
  return _read(data_dir, folder)

"""TFDS builder that writes the four A5-format files to ArrayRecord, read back with tfds.data_source.

The files are parsed by `birthjax.corpus` (the reference's rules); the builder stores the
parsed records in file order (`disable_shuffling=True`). The build happens once, into a
cache folder keyed by the SHA-256 of the four files, so an edited file is rebuilt and an
unchanged one is reused. TensorFlow is never imported.
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from birthjax import corpus

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


def data_sources(data_dir: str, cache_dir: str) -> dict:
  """{split: random-access source of dicts with str values}, building the cache if needed."""
  for name in corpus.FILES:  # clear errors for missing files, before TFDS sees them
    corpus.path_of(data_dir, name)
  builder_dir = os.path.join(os.path.expanduser(cache_dir), files_digest(data_dir))
  builder = BirthPlaces(source_dir=data_dir, data_dir=builder_dir, file_format="array_record")
  if not os.path.isdir(os.path.join(builder_dir, builder.name, str(builder.VERSION))):
    # parse first, so bad input fails with our message before TFDS starts writing
    corpus.read_wiki(data_dir), corpus.read_finetune(data_dir)
    corpus.read_eval(data_dir, corpus.DEV), corpus.read_eval(data_dir, corpus.TEST)
    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.WARNING)
    builder.download_and_prepare()
  return {split: _Decoded(src) for split, src in builder.as_data_source().items()}


class _Decoded:
  """A TFDS data source whose Text features come back as str."""

  def __init__(self, source):
    self._source = source

  def __len__(self):
    return len(self._source)

  def __getitem__(self, i):
    r = self._source[i]
    return {"text": r["text"].decode("utf-8"), "answer": r["answer"].decode("utf-8"),
            "has_answer": bool(r["has_answer"])}

"""From the data folder to encoded records: the four files checked, read through TFDS
(birthjax.data.tfds_builders), encoded with the wiki.txt vocabulary. birthjax.data.records turns them
into the tables the training engine (birthjax.train.device_epoch) builds its examples from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from birthjax.data import corpus, recite, subsets, synthetic, tfds_builders
from birthjax.errors import UserError
from birthjax.data.vocab import Vocab


@dataclasses.dataclass
class Data:
  vocab: Vocab
  documents: list[np.ndarray]  # wiki.txt documents as ids
  finetune: list[tuple[np.ndarray, np.ndarray]]  # (question, answer) ids
  eval_sets: dict  # name -> (questions: list[str], answers: list[str] | None)
  data_dir: str
  digest: str  # SHA-256 prefix of the four files (and of data.people / data.val_questions)
  share: float = 1.0  # the documents' kept fraction (data.people): the token counts scale by it
  qa_sep: bool = True  # a MASK between question and answer (examples.qa_example); not with recite_from=title


def resolve_data_dir(data_cfg) -> str:
  if data_cfg.source == "a5":
    return data_cfg.dir
  if data_cfg.source == "synthetic":
    n = data_cfg.synthetic_people
    if n < 6:
      raise UserError(f"data.synthetic_people={n} is too small", "--config.data.synthetic_people",
                      "use at least 6 (2/3 train, 1/6 dev, 1/6 test questions)")
    k = data_cfg.synthetic_phrasings or len(synthetic.TEMPLATES)
    if not 1 <= k <= len(synthetic.TEMPLATES):
      raise UserError(f"data.synthetic_phrasings={k} is out of range",
                      "--config.data.synthetic_phrasings",
                      f"use 1..{len(synthetic.TEMPLATES)} (0 means all)")
    d = os.path.join(os.path.expanduser(data_cfg.cache_dir),
                     f"synthetic-{data_cfg.synthetic_seed}-{n}-{k}")
    if not os.path.isfile(os.path.join(d, corpus.TEST)):
      try:
        synthetic.write(d, seed=data_cfg.synthetic_seed, num_people=n, num_train=n * 2 // 3,
                        num_dev=n // 6, num_test=n // 6, phrasings=k)
      except OSError as e:
        raise UserError(f"cannot write the synthetic world ({e.strerror or e})", os.path.abspath(d),
                        "set --config.data.cache_dir (or $BIRTHJAX_CACHE) to a writable folder"
                        ) from None
    return d
  raise UserError(f"unknown data.source {data_cfg.source!r}", "--config.data.source",
                  "use 'a5' or 'synthetic'")


def _encode_all(data_dir, docs, train_pairs, eval_questions, block_size: int, vocab_size=None):
  """The vocabulary and the encoded documents and finetuning pairs, checking every rule that
  a file's content can break (characters outside the vocabulary, lines too long)."""
  vocab = Vocab.from_documents(docs)
  if vocab_size is not None and len(vocab) > vocab_size:
    raise UserError(f"the data's vocabulary has {len(vocab)} characters, more than "
                    f"model.vocab_size={vocab_size}", data_dir,
                    f"set --config.model.vocab_size={len(vocab)} or more")
  wiki_path = os.path.join(data_dir, corpus.WIKI)
  documents = [vocab.encode(d, f"{wiki_path}:{i + 1}") for i, d in enumerate(docs)]
  train_path = os.path.join(data_dir, corpus.TRAIN)
  finetune = []
  for i, (question, answer) in enumerate(train_pairs):
    where = f"{train_path}:{i + 1}"
    q, a = vocab.encode(question, where), vocab.encode(answer, where)
    if len(q) + len(a) + 2 > block_size:
      raise UserError(f"question+answer is {len(q) + len(a) + 2} characters with the two MASKs, "
                      f"more than block_size {block_size}", where,
                      "shorten the line or raise --config.model.block_size")
    finetune.append((q, a))
  # evaluation questions longer than block_size are fine: decoding crops to the last
  # block_size characters, as the reference does
  for name, questions in eval_questions.items():  # fail early on characters outside the vocabulary
    path = os.path.join(data_dir, name)
    for i, q in enumerate(questions):
      vocab.encode(q, f"{path}:{i + 1}")
  return vocab, documents, finetune


def make_cache_dir(cache_dir: str) -> str:
  path = os.path.expanduser(cache_dir)
  fix = "set --config.data.cache_dir (or $BIRTHJAX_CACHE) to a writable folder"
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError("the data cache folder exists and is not a folder", os.path.abspath(path), fix)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the data cache folder ({e.strerror or e})", os.path.abspath(path),
                    fix) from None
  return path


def check_data(data_cfg, block_size: int, vocab_size: int | None = None) -> str:
  """Parse and check the four files (no TFDS; nothing written but the cache folder and the
  synthetic world): bad data fails with its UserError before any model is built. Returns
  the data folder."""
  make_cache_dir(data_cfg.cache_dir)
  data_dir = resolve_data_dir(data_cfg)
  evals = {name: corpus.read_eval(data_dir, name) for name in (corpus.DEV, corpus.TEST)}
  docs, train = corpus.read_wiki(data_dir), corpus.read_finetune(data_dir)
  _encode_all(data_dir, docs, train, {k: q for k, (q, _) in evals.items()}, block_size, vocab_size)
  subsets.select(docs, train, evals, data_cfg)  # data.people / data.val_questions in range
  return data_dir


def load(data_cfg, block_size: int) -> Data:
  make_cache_dir(data_cfg.cache_dir)
  data_dir = resolve_data_dir(data_cfg)
  src = tfds_builders.data_sources(data_dir, data_cfg.cache_dir)
  docs = [src["wiki"][i]["text"] for i in range(len(src["wiki"]))]
  train = [(r["text"], r["answer"]) for r in (src["train"][i] for i in range(len(src["train"])))]
  eval_sets = {}
  for split in ("dev", "test"):
    rows = [src[split][i] for i in range(len(src[split]))]
    answers = [r["answer"] for r in rows] if rows and rows[0]["has_answer"] else None
    eval_sets[split] = ([r["text"] for r in rows], answers)
  vocab, documents, finetune = _encode_all(
      data_dir, docs, train, {corpus.DEV: eval_sets["dev"][0], corpus.TEST: eval_sets["test"][0]},
      block_size)  # the vocabulary is always the whole wiki.txt's
  digest, share = tfds_builders.files_digest(data_dir), 1.0
  if subsets.tag(data_cfg):  # a subset of the people and/or a val split
    docs, train, eval_sets, share = subsets.select(docs, train, eval_sets, data_cfg)
    documents = [vocab.encode(d) for d in docs]
    finetune = [(vocab.encode(q), vocab.encode(a)) for q, a in train]
    digest = hashlib.sha256(repr((digest,) + subsets.tag(data_cfg)).encode()).hexdigest()[:16]
  mode = recite.mode(data_cfg)
  if mode:  # train targets: the own line through the answer (birthjax/data/recite.py)
    finetune = [(vocab.encode(q), vocab.encode(t)) for q, t in
                recite.pairs(docs, train, block_size, mode)]
    tag = ("recite",) if mode == "question" else ("recite", mode)  # old digests stay valid
    digest = hashlib.sha256(repr((digest,) + tag).encode()).hexdigest()[:16]
  return Data(vocab, documents, finetune, eval_sets, data_dir, digest, share, mode != "title")

"""Tests for birthjax.data.corpus: reading the four A5 files with the reference's rules."""
import os

import pytest

from birthjax.data import corpus
from birthjax.errors import UserError


def _write(d, name, text):
  with open(os.path.join(d, name), "w", encoding="utf-8", newline="") as f:
    f.write(text)
  return os.path.join(d, name)


def _write_bytes(d, name, data):
  with open(os.path.join(d, name), "wb") as f:
    f.write(data)
  return os.path.join(d, name)


# ---------------------------------------------------------------- wiki.txt

def test_read_wiki_keeps_trailing_empty_document(tmp_path):
  _write(tmp_path, "wiki.txt", "Ab. c\nD.\n")
  assert corpus.read_wiki(str(tmp_path)) == ["Ab. c", "D.", ""]


def test_read_wiki_without_final_newline(tmp_path):
  _write(tmp_path, "wiki.txt", "Ab. c\nD.")
  assert corpus.read_wiki(str(tmp_path)) == ["Ab. c", "D."]


def test_read_wiki_crlf_and_bom(tmp_path):
  _write_bytes(tmp_path, "wiki.txt", "\ufeffZoë.\r\nB\r\n".encode("utf-8"))
  assert corpus.read_wiki(str(tmp_path)) == ["Zoë.", "B", ""]


def test_read_wiki_not_utf8(tmp_path):
  _write_bytes(tmp_path, "wiki.txt", b"abc\n\xff\xfe\n")
  with pytest.raises(UserError) as e:
    corpus.read_wiki(str(tmp_path))
  assert "UTF-8" in e.value.line() and "wiki.txt" in e.value.line()


def test_a5_wiki(a5_dir):
  docs = corpus.read_wiki(a5_dir)
  assert len(docs) == 2938
  assert docs[-1] == ""
  assert all(docs[:-1])  # only the last document is empty
  assert docs[0].startswith("Khatchig Mouradian.")
  assert docs[-2].startswith("Gerald Palmer.")
  assert len("\n".join(docs)) == 418352  # README: 418,352 characters


# ---------------------------------------------------------------- finetuning TSV

def test_read_finetune_drops_non_ascii(tmp_path):
  _write(tmp_path, corpus.TRAIN, "Where was Zoë born?\tMünchen\nWhere was Al Bo born?\tParis\n")
  assert corpus.read_finetune(str(tmp_path)) == [("Where was Zo born?", "Mnchen"),
                                                 ("Where was Al Bo born?", "Paris")]


def test_read_finetune_crlf_bom_and_no_final_newline(tmp_path):
  _write_bytes(tmp_path, corpus.TRAIN, "\ufeffQ1?\tA1\r\nQ2?\tA 2".encode("utf-8"))
  assert corpus.read_finetune(str(tmp_path)) == [("Q1?", "A1"), ("Q2?", "A 2")]


def test_read_finetune_other_name(tmp_path):
  _write(tmp_path, "mine.tsv", "Q?\tA\n")
  assert corpus.read_finetune(str(tmp_path), "mine.tsv") == [("Q?", "A")]


@pytest.mark.parametrize("bad, tabs", [("no tab here", 0), ("a\tb\tc", 2)])
def test_read_finetune_bad_line(tmp_path, bad, tabs):
  path = _write(tmp_path, corpus.TRAIN, f"Q1?\tA1\nQ2?\tA2\n{bad}\nQ4?\tA4\n")
  with pytest.raises(UserError) as e:
    corpus.read_finetune(str(tmp_path))
  assert e.value.where == f"{path}:3"
  assert f"[{path}:3]" in e.value.line()
  assert f"{tabs} tabs" in e.value.what


def test_read_finetune_blank_line_in_middle_is_an_error(tmp_path):
  path = _write(tmp_path, corpus.TRAIN, "Q1?\tA1\n\nQ3?\tA3\n")
  with pytest.raises(UserError) as e:
    corpus.read_finetune(str(tmp_path))
  assert e.value.where == f"{path}:2"


def test_a5_finetune(a5_dir):
  pairs = corpus.read_finetune(a5_dir)
  assert len(pairs) == 2000
  assert pairs[0] == ("Where was Khatchig Mouradian born?", "Lebanon")
  assert pairs[1] == ("Where was Jacob Henry Studer born?", "Columbus")
  assert pairs[-1] == ("Where was Ien Ang born?", "Java")
  assert all((q + a).isascii() for q, a in pairs)
  # the raw file has 'Where was Naïma Azough born?\tMorocco': the 'ï' is dropped
  assert ("Where was Nama Azough born?", "Morocco") in pairs


# ---------------------------------------------------------------- evaluation TSVs

def test_read_eval_with_answers_not_ascii_filtered(tmp_path):
  _write(tmp_path, "dev.tsv", "Where was Zoë born?\tMünchen\nWhere was B born?\t  Paris \n")
  qs, ans = corpus.read_eval(str(tmp_path), "dev.tsv")
  assert qs == ["Where was Zoë born?", "Where was B born?"]
  assert ans == ["München", "Paris"]


def test_read_eval_without_answers(tmp_path):
  _write(tmp_path, "test.tsv", "Where was Zoë born?\nWhere was B born?\n")
  assert corpus.read_eval(str(tmp_path), "test.tsv") == (
      ["Where was Zoë born?", "Where was B born?"], None)


def test_read_eval_crlf_and_bom(tmp_path):
  _write_bytes(tmp_path, "test.tsv", "\ufeffQ1 é?\r\nQ2?\r\n".encode("utf-8"))
  assert corpus.read_eval(str(tmp_path), "test.tsv") == (["Q1 é?", "Q2?"], None)
  _write_bytes(tmp_path, "dev.tsv", "\ufeffQ1?\tA1\r\nQ2?\tA 2 \r\n".encode("utf-8"))
  assert corpus.read_eval(str(tmp_path), "dev.tsv") == (["Q1?", "Q2?"], ["A1", "A 2"])


def test_read_eval_no_final_newline(tmp_path):
  _write(tmp_path, "test.tsv", "Q1?\nQ2?")
  assert corpus.read_eval(str(tmp_path), "test.tsv") == (["Q1?", "Q2?"], None)


def test_read_eval_inconsistent_answer_column(tmp_path):
  path = _write(tmp_path, "dev.tsv", "Q1?\tA1\nQ2?\nQ3?\tA3\n")
  with pytest.raises(UserError) as e:
    corpus.read_eval(str(tmp_path), "dev.tsv")
  assert e.value.where == f"{path}:2"
  path = _write(tmp_path, "test.tsv", "Q1?\nQ2?\nQ3?\tA3\n")
  with pytest.raises(UserError) as e:
    corpus.read_eval(str(tmp_path), "test.tsv")
  assert e.value.where == f"{path}:3"


@pytest.mark.parametrize("content", ["", "\ufeff"])
def test_read_eval_empty_file(tmp_path, content):
  path = _write(tmp_path, "test.tsv", content)
  with pytest.raises(UserError) as e:
    corpus.read_eval(str(tmp_path), "test.tsv")
  assert path in e.value.line() and "empty" in e.value.what


@pytest.mark.parametrize("reader", [
    lambda d: corpus.read_wiki(d),
    lambda d: corpus.read_finetune(d),
    lambda d: corpus.read_eval(d, corpus.DEV),
    lambda d: corpus.read_eval(d, corpus.TEST),
], ids=["wiki", "train", "dev", "test"])
def test_missing_file(tmp_path, monkeypatch, reader):
  monkeypatch.chdir(tmp_path)
  os.mkdir("data")
  with pytest.raises(UserError) as e:
    reader("data")  # a relative folder: the message shows the absolute path looked at
  line = e.value.line()
  name = e.value.where.rsplit(os.sep, 1)[-1]
  assert name in corpus.FILES and f"missing data file {name}" in line
  assert e.value.where == os.path.join(str(tmp_path), "data", name)
  assert os.path.isabs(e.value.where) and e.value.where in line
  assert "--config.data.dir" in line and "--config.data.source=synthetic" in line


def test_missing_file_names_the_right_file(tmp_path):
  with pytest.raises(UserError) as e:
    corpus.read_eval(str(tmp_path), corpus.TEST)
  assert "missing data file birth_test_inputs.tsv" in e.value.line()
  with pytest.raises(UserError) as e:
    corpus.read_finetune(str(tmp_path))
  assert "missing data file birth_places_train.tsv" in e.value.line()


def test_a5_eval(a5_dir):
  qs, ans = corpus.read_eval(a5_dir, corpus.DEV)
  assert len(qs) == len(ans) == 500
  assert (qs[0], ans[0]) == ("Where was Bryan Dubreuiel born?", "Atlanta")
  assert (qs[-1], ans[-1]) == ("Where was Aaron Walden born?", "Warsaw")
  assert ans.count("London") == 25  # README: 5.0%
  assert not all((q + a).isascii() for q, a in zip(qs, ans))  # non-ASCII kept
  qs, ans = corpus.read_eval(a5_dir, corpus.TEST)
  assert ans is None and len(qs) == 437
  assert qs[0] == "Where was Adam Bright born?" and qs[-1] == "Where was Gerald Palmer born?"
  assert not any(c in q for q in qs for c in "\r\n\t")
  assert not all(q.isascii() for q in qs)

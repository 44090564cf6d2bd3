"""Tests for birthjax.data.vocab: PAD=0, MASK=1, then the sorted distinct characters of wiki.txt."""
import numpy as np
import pytest

from birthjax.data import corpus
from birthjax.errors import UserError
from birthjax.data.vocab import MASK, MASK_CHAR, PAD, PAD_CHAR, Vocab


def test_special_symbols():
  assert (PAD, MASK) == (0, 1)
  assert PAD_CHAR == "\u25A1" and MASK_CHAR == "\u2047"


def test_tiny_vocab_with_newline():
  v = Vocab.from_documents(["ba", "c"])
  assert v.chars == ("\u25A1", "\u2047", "\n", "a", "b", "c")
  assert len(v) == 6
  assert v.stoi == {"\u25A1": 0, "\u2047": 1, "\n": 2, "a": 3, "b": 4, "c": 5}


def test_single_document_has_no_newline():
  v = Vocab.from_documents(["hello"])
  assert v.chars == ("\u25A1", "\u2047", "e", "h", "l", "o")


def test_trailing_empty_document_adds_newline():
  # wiki.txt 'ab\n' -> documents ['ab', ''], i.e. the text 'ab\n' contains a newline.
  v = Vocab.from_documents(["ab", ""])
  assert v.chars == ("\u25A1", "\u2047", "\n", "a", "b")


def test_sorted_by_code_point():
  v = Vocab.from_documents(["zA a", "é!"])
  assert v.chars == ("\u25A1", "\u2047", "\n", " ", "!", "A", "a", "z", "é")


def test_encode_literal_and_roundtrip():
  v = Vocab.from_documents(["ba", "c"])
  ids = v.encode("cab\nb")
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [5, 3, 4, 2, 4])
  assert v.decode(ids) == "cab\nb"
  assert v.decode([0, 1, 3]) == "\u25A1\u2047a"
  assert v.encode("").shape == (0,)
  assert v.decode(np.array([], np.int32)) == ""


def test_encode_unknown_char_names_char_and_where():
  v = Vocab.from_documents(["ba", "c"])
  with pytest.raises(UserError) as e:
    v.encode("abz", "some/file.tsv:7")
  line = e.value.line()
  assert line.startswith("error: ")
  assert "'z'" in line and "U+007A" in line and "column 3" in line
  assert "[some/file.tsv:7]" in line
  assert e.value.where == "some/file.tsv:7"
  assert "\n" not in line


def test_encode_unknown_char_without_where_names_text():
  v = Vocab.from_documents(["ab"])
  with pytest.raises(UserError) as e:
    v.encode("a\u00e9")
  assert "'\u00e9'" in e.value.line() and "U+00E9" in e.value.line()
  assert e.value.where == repr("a\u00e9")


def test_newline_unknown_for_single_document():
  v = Vocab.from_documents(["ab"])
  with pytest.raises(UserError):
    v.encode("a\nb")


@pytest.mark.parametrize("special", [PAD_CHAR, MASK_CHAR])
def test_reserved_chars_in_text_rejected(special):
  with pytest.raises(UserError) as e:
    Vocab.from_documents(["abc", f"x{special}y"])
  assert repr(special) in e.value.line()
  assert "wiki.txt" in e.value.line()


def test_a5_vocab(a5_dir):
  docs = corpus.read_wiki(a5_dir)
  v = Vocab.from_documents(docs)
  assert len(v) == 256
  text_chars = v.chars[2:]
  assert len(text_chars) == 254 == len(set("\n".join(docs)))
  assert list(text_chars) == sorted(text_chars)
  assert v.chars[:4] == ("\u25A1", "\u2047", "\n", " ")
  assert PAD_CHAR not in text_chars and MASK_CHAR not in text_chars
  # every dev/test question character is covered (README: the vocabulary covers them)
  for name in (corpus.DEV, corpus.TEST):
    qs, _ = corpus.read_eval(a5_dir, name)
    for q in qs:
      assert v.decode(v.encode(q)) == q
  doc = docs[0]
  assert v.decode(v.encode(doc)) == doc


def test_decode_ids_past_the_vocabulary():
  v = Vocab.from_documents(["ab"])
  assert v.decode([2, 3, 200]) == "ab\ufffd"

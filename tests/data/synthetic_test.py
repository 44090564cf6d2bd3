"""Tests for birthjax.data.synthetic (pure Python, no JAX)."""
import collections
import os
import re


import pytest

from birthjax.data import synthetic

FILES = ("wiki.txt", "birth_places_train.tsv", "birth_dev.tsv", "birth_test_inputs.tsv")
QUESTION = re.compile(r"^Where was ([A-Za-z]+ [A-Za-z]+) born\?$")


@pytest.fixture(scope="module")
def world():
    return synthetic.generate(seed=0)


def _qa(text):
    return [line.split("\t") for line in text.splitlines()]


def _name(question):
    m = QUESTION.match(question)
    assert m, question
    return m.group(1)


def test_deterministic_and_seed_dependent(world):
    assert synthetic.generate(seed=0) == world
    other = synthetic.generate(seed=1)
    assert set(other) == set(FILES)
    assert all(other[f] != world[f] for f in FILES)


def test_counts_and_formats(world):
    assert set(world) == set(FILES)
    for f in FILES:
        assert world[f].endswith("\n") and not world[f].endswith("\n\n")
        assert world[f].isascii()
    expected = {"wiki.txt": 600, "birth_places_train.tsv": 400,
                "birth_dev.tsv": 100, "birth_test_inputs.tsv": 100}
    for f, n in expected.items():
        assert len(world[f].splitlines()) == n
    for f in ("birth_places_train.tsv", "birth_dev.tsv"):
        for row in _qa(world[f]):
            assert len(row) == 2 and row[1] in synthetic.CITIES
            _name(row[0])
    for line in world["birth_test_inputs.tsv"].splitlines():
        assert "\t" not in line
        _name(line)
    for line in world["wiki.txt"].splitlines():
        name, _, rest = line.partition(". ")
        assert re.fullmatch(r"[A-Za-z]+ [A-Za-z]+", name) and rest.endswith(" .")


def test_split_disjoint_and_wiki_states_answer(world):
    splits = [[_name(r[0]) for r in _qa(world[f])] for f in FILES[1:]]
    all_names = [n for s in splits for n in s]
    assert len(all_names) == len(set(all_names)) == 600
    wiki = {l.partition(". ")[0]: l for l in world["wiki.txt"].splitlines()}
    assert len(wiki) == 600  # distinct full names
    assert set(all_names) <= set(wiki)
    for f in FILES[1:3]:
        for q, city in _qa(world[f]):
            line = wiki[_name(q)]
            assert f" {city}" in line
    # Wiki order is shuffled relative to question order.
    assert list(wiki)[:400] != splits[0]


def test_line_lengths_and_worst_case():
    for seed in range(5):
        lines = synthetic.generate(seed=seed)["wiki.txt"].splitlines()
        assert max(map(len, lines)) <= 110
        assert sum(map(len, lines)) / len(lines) < 100
    longest = lambda xs: max(xs, key=len)
    first, last = longest(synthetic.FIRST_NAMES), longest(synthetic.SURNAMES)
    city = longest(synthetic.CITIES)
    for t in synthetic.TEMPLATES:
        line = t.format(n=f"{first} {last}", s=last, b=city, o=city, a="an",
                        p=longest(synthetic.PROFESSIONS), y=1999, d=2099, m=2099)
        assert len(line) <= 110, line


def test_question_chars_covered_by_wiki():
    for kw in ({}, {"num_people": 7, "num_train": 3, "num_dev": 2, "num_test": 2}):
        world = synthetic.generate(seed=3, **kw)
        qchars = set("".join(world[f] for f in FILES[1:])) - {"\t", "\n"}
        assert qchars <= set(world["wiki.txt"])


def test_city_distribution_skewed_but_capped(world):
    cities = [r[1] for f in FILES[1:3] for r in _qa(world[f])]
    counts = collections.Counter(cities)
    top = counts.most_common(1)[0][1] / len(cities)
    assert top <= 0.10
    assert top > 2.0 / len(synthetic.CITIES)
    # Whole-world distribution: exact allocation.
    alloc = synthetic._city_counts(600)
    assert sum(alloc) == 600 and max(alloc) / 600 <= 0.10 and max(alloc) > 2 * min(alloc)


def test_other_city_differs_from_birth_city(world):
    births = {_name(q): c for f in FILES[1:3] for q, c in _qa(world[f])}
    for line in world["wiki.txt"].splitlines():
        name = line.partition(". ")[0]
        if name in births:
            found = [c for c in synthetic.CITIES if re.search(rf"\b{c}\b", line)]
            assert births[name] in found and len(found) == 2, line


def test_write(tmp_path):
    d = tmp_path / "sub" / "data"
    synthetic.write(d, seed=2, num_people=50, num_train=20, num_dev=10, num_test=10)
    assert sorted(os.listdir(d)) == sorted(FILES)
    expected = synthetic.generate(seed=2, num_people=50, num_train=20, num_dev=10, num_test=10)
    for f in FILES:
        assert (d / f).read_bytes() == expected[f].encode("ascii")


def test_rejects_oversized_split():
    with pytest.raises(AssertionError):
        synthetic.generate(num_people=10, num_train=8, num_dev=2, num_test=1)

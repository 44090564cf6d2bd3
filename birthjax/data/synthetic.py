"""Deterministic synthetic stand-in for the CS224N A5 birth-place data.

A fictional world of people (first name x surname) with a Zipf-like birth-city
distribution. ``generate`` returns the exact contents of the four files of the
real data set (wiki.txt, birth_places_train.tsv, birth_dev.tsv,
birth_test_inputs.tsv); ``write`` puts them in a directory atomically.
"""
import os
import random
import tempfile

FIRST_NAMES = (
    "Adam Agnes Albert Alice Anton Arthur Beatrix Bruno Carla Cecil Clara Daniel "
    "Dora Edgar Elena Emil Felix Flora Frida Georg Greta Hanna Hector Ida Igor "
    "Irene Jakob Jonas Karin Klaus Lars Leona Linus Lotte Magnus Marta Mateo "
    "Milo Nadia Nils Olga Oscar Otto Paula Pavel Petra Quinn Rosa Rufus Selma "
    "Simon Tilda Tobias Ulla Victor Vera Walter Wendy Yusuf Zelda"
).split()
SURNAMES = (
    "Abernathy Albrecht Barlow Becker Brandt Calloway Castell Dunmore Eckhart "
    "Falkner Fenwick Galbraith Garrow Hadley Hartwell Ingram Jansen Kessler "
    "Kowalski Lindqvist Lorimer Marchetti Merriman Novak Nyberg Oakes Orlov "
    "Pemberton Petrov Quarles Radcliffe Renner Rossi Sandoval Sorensen Stroud "
    "Tanaka Thorne Ulrich Valdez Vance Voss Wakefield Weller Whitcombe Yardley "
    "Zeller Ashdown Blackwood Crane Dalton Ellery Frost Gilchrist Holloway "
    "Iverson Keller Lockhart Mercer Norwood"
).split()
# Roughly ordered by frequency; weights are 1/(rank+6), so the top city gets ~8.6%.
CITIES = (
    "London,Paris,Chicago,Sydney,Melbourne,New York,Berlin,Toronto,Dublin,"
    "Glasgow,Boston,Vienna,Rome,Madrid,Moscow,Tokyo,Montreal,Edinburgh,"
    "Manchester,Liverpool,Amsterdam,Stockholm,Oslo,Lisbon,Prague,Budapest,"
    "Warsaw,Athens,Cairo,Mumbai,Philadelphia,Los Angeles,Atlanta,Detroit,"
    "Seattle,Vancouver,Auckland,Copenhagen,Brussels,Helsinki"
).split(",")
PROFESSIONS = ("painter", "journalist", "architect", "engineer", "poet", "actor",
               "composer", "botanist", "historian", "surgeon", "novelist", "sculptor",
               "economist", "chemist", "translator", "lawyer")
# {n} full name, {s} surname, {b} birth city, {o} other city (never {b}),
# {a} a/an, {p} profession, {y} birth year, {d} death year, {m} year of a move.
# Templates are ordered from the most direct statement of the birth place to the least;
# `phrasings=k` uses the first k. Template 0 is always used, so the '?' and 'W' of the
# questions occur in wiki.txt.
TEMPLATES = (
    "{n}. {n} was born in {b} and wrote Why {o}? in {m} .",
    "{n}. {n} was born in {b} and worked as {a} {p} in {o} .",
    "{n}. {n} (born {y} in {b}) is {a} {p} who lives in {o} .",
    "{n}. {n} is {a} {p} born in {b} who moved to {o} in {m} .",
    "{n}. {n} ({y} {b} - {d} {o}) was {a} {p} .",
    "{n}. Born in {b}, {s} became {a} {p} and later lived in {o} .",
    "{n}. Born in {b}, {s} is {a} {p} who wrote Why {o}? in {m} .",
)
MAX_LINE = 110


def _city_counts(num_people):
    """Largest-remainder allocation of num_people over CITIES, weights 1/(rank+6)."""
    w = [1.0 / (i + 6) for i in range(len(CITIES))]
    exact = [num_people * x / sum(w) for x in w]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(w)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: num_people - sum(counts)]:
        counts[i] += 1
    return counts


def generate(seed=0, num_people=600, num_train=400, num_dev=100, num_test=100, phrasings=None,
             templates=None):
    """Returns {filename: exact file contents} for the four data files.

    phrasings: how many of TEMPLATES to use (default all); fewer is an easier world.
    templates: other biography templates (same fields), instead of TEMPLATES.
    """
    assert num_train + num_dev + num_test <= num_people <= len(FIRST_NAMES) * len(SURNAMES)
    templates = templates or TEMPLATES[:phrasings or len(TEMPLATES)]
    assert templates, "phrasings must be at least 1"
    rng = random.Random(seed)
    ids = rng.sample(range(len(FIRST_NAMES) * len(SURNAMES)), num_people)
    names = [(FIRST_NAMES[i // len(SURNAMES)], SURNAMES[i % len(SURNAMES)]) for i in ids]
    births = [c for c, k in zip(CITIES, _city_counts(num_people)) for _ in range(k)]
    rng.shuffle(births)
    lines = []
    for i, ((first, last), birth) in enumerate(zip(names, births)):
        prof = rng.choice(PROFESSIONS)
        year = rng.randint(1850, 1990)
        lines.append(templates[i % len(templates)].format(
            n=f"{first} {last}", s=last, b=birth,
            o=rng.choice([c for c in CITIES if c != birth]),
            a="an" if prof[0] in "aeiou" else "a", p=prof, y=year,
            d=year + rng.randint(40, 90), m=year + rng.randint(20, 35)))
    order = list(range(num_people))
    rng.shuffle(order)  # wiki order is independent of question order
    wiki = "".join(lines[i] + "\n" for i in order)
    qs = [(f"Where was {f} {s} born?", b) for (f, s), b in zip(names, births)]
    train = qs[:num_train]
    dev = qs[num_train:num_train + num_dev]
    test = qs[num_train + num_dev:num_train + num_dev + num_test]
    out = {
        "wiki.txt": wiki,
        "birth_places_train.tsv": "".join(f"{q}\t{a}\n" for q, a in train),
        "birth_dev.tsv": "".join(f"{q}\t{a}\n" for q, a in dev),
        "birth_test_inputs.tsv": "".join(f"{q}\n" for q, _ in test),
    }
    assert all(len(line) <= MAX_LINE for line in lines)
    assert all(text.isascii() for text in out.values())
    question_chars = set("".join(q + a for q, a in qs)) - {"\t", "\n"}
    assert question_chars <= set(wiki), question_chars - set(wiki)
    return out


def write(directory, seed=0, **kw):
    """Writes the four files into directory (created if needed), each atomically."""
    os.makedirs(directory, exist_ok=True)
    for fname, text in generate(seed=seed, **kw).items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{fname}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii", newline="") as f:
                f.write(text)
            os.replace(tmp, os.path.join(directory, fname))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

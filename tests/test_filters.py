"""The quality filters of generated instructions (amr/filters.py): each drop reason, at its boundary, and the order
in which they are decided; the near-duplicate table with the real MiniLM embeddings."""

from __future__ import annotations

import pytest

from amr.ann import Upkeep
from amr.config import FilterConfig
from amr.filters import NearDuplicates, jaccard, text_reason

pytestmark = pytest.mark.timeout(120)

DEFAULT = FilterConfig()
PARENT = "Write a function to count the vowels in a string"  # 10 words: 8 word trigrams


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        ("!!! ??? ... ---", "empty"),  # no word at all
        ("Write a sum function", "too short"),  # 4 words, min_words 5
        ("Write a function summing lists", None),  # 5 words: kept
        ("Hi", "too short"),  # too short is decided before "not a task"
        ("Hello there, how are you doing today, my dear friend?", "not a task"),
        ("Rewrite the essay about summer holidays, please.", "not a task"),  # 'rewrite' is not the cue 'write'
        ("Please tell me about the weather in Paris today.", "not a task"),
        ("WRITE A PROGRAM THAT PRINTS THE DATE", None),  # the cue in any case
        ("Given a list of numbers, return the largest one.", None),
        ("Sort the names by their length, longest first.", None),
    ],
)
def test_text_reasons_with_the_default_limits(text, reason):
    assert text_reason(text, DEFAULT) == reason


def test_word_limits_are_inclusive():
    config = FilterConfig(min_words=3, max_words=8)
    assert text_reason("Write a", config) == "too short"
    assert text_reason("Write a sorter", config) is None  # 3 words
    assert text_reason("Write a function that sorts a list quickly", config) is None  # 8 words
    assert text_reason("Write a function that sorts a list very quickly", config) == "too long"  # 9 words
    assert text_reason(" ".join(["write"] * 400), DEFAULT) is None  # the default max_words, 400
    assert text_reason(" ".join(["write"] * 401), DEFAULT) == "too long"
    assert text_reason("hello " * 401, DEFAULT) == "too long"  # too long is decided before "not a task"


def test_copy_of_parent_is_trigram_jaccard_at_or_above_parent_copy():
    longer = PARENT + " quickly"  # 9 trigrams, 8 shared: Jaccard 8/9 = 0.889
    assert jaccard(PARENT.lower().split(), longer.lower().split()) == 8 / 9
    assert text_reason(PARENT, DEFAULT, parent=PARENT) == "copy of parent"
    assert text_reason("WRITE a function, to count the VOWELS in a string!", DEFAULT, parent=PARENT) == "copy of parent"
    assert text_reason(longer, DEFAULT, parent=PARENT) is None  # 0.889 < 0.9
    assert text_reason(longer, FilterConfig(parent_copy=8 / 9), parent=PARENT) == "copy of parent"  # at: dropped
    assert text_reason(longer, FilterConfig(parent_copy=0.89), parent=PARENT) is None  # just above 8/9: kept
    assert text_reason(PARENT, DEFAULT) is None  # no parent: no copy check (self-instruct)
    rewritten = "Write a function to count the vowels in a string; upper-case vowels count too."
    assert text_reason(rewritten, DEFAULT, parent=PARENT) is None
    # the other reasons come first: an empty rewrite of an empty parent is "empty", not a copy
    assert text_reason("", DEFAULT, parent="") == "empty"
    assert text_reason("Hi there", DEFAULT, parent="Hi there") == "too short"


def test_jaccard_of_texts_shorter_than_a_trigram_compares_the_whole_text():
    assert jaccard(["sum", "list"], ["sum", "list"]) == 1.0
    assert jaccard(["sum", "list"], ["sum", "lists"]) == 0.0
    assert jaccard(["a", "b", "c", "d"], ["b", "c", "d", "e"]) == 1 / 3  # {abc, bcd} vs {bcd, cde}


@pytest.fixture(scope="module")
def embedder():
    from amr.embeddings import Embedder
    from amr.model_store import pull

    return Embedder(str(pull("all-minilm-l6-v2")))


def test_near_duplicates_within_a_batch_and_against_the_kept_ones(embedder, tmp_path):
    seen = NearDuplicates(embedder, DEFAULT.near_duplicate, uri=str(tmp_path / "dedup"))
    first = [
        "Write a function to reverse a string.",
        "Write a function to reverse a string.",  # the same text, later in its batch
        "Write a function that returns the median of a list of numbers.",
    ]
    assert seen.keep(first) == [True, False, True]
    assert seen.table.count_rows() == 2  # the kept ones only
    again = ["write a function to reverse a string", "Compute the greatest common divisor of two integers."]
    assert seen.keep(again) == [False, True]  # against the table: a copy with other case and punctuation
    assert seen.table.count_rows() == 3
    strict = NearDuplicates(embedder, 0.3)  # a low threshold: related tasks are near-duplicates too
    assert strict.keep(["Write a function to reverse a string.", "Write a function to reverse a list."]) == [
        True,
        False,
    ]


class _Vectors:
    """An embedder with chosen vectors: cosines exact in float32, for the threshold's boundary."""

    dim = 2

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts):
        import numpy as np

        return np.asarray([self.vectors[t] for t in texts], dtype=np.float32)


@pytest.mark.timeout(60)
def test_near_duplicates_at_the_threshold_with_chosen_vectors(tmp_path):
    embedder = _Vectors(
        {"a": [1.0, 0.0], "b": [0.0, 1.0], "half": [0.5, 0.5], "a again": [1.0, 0.0], "minus a": [-1.0, 0.0]}
    )
    seen = NearDuplicates(embedder, 0.5, uri=str(tmp_path / "dedup"))
    assert seen.keep(["a", "half", "b"]) == [True, False, True]  # half: cosine 0.5 to a, at the threshold
    assert seen.table.count_rows() == 2
    rows = seen.table.to_arrow().to_pylist()
    assert [r["vector"] for r in rows] == [[1.0, 0.0], [0.0, 1.0]]
    assert seen.keep(["a again"]) == [False]  # cosine 1 to a kept one
    assert seen.keep(["minus a", "a again"]) == [True, False]  # one search for both: each its own nearest
    assert seen.table.count_rows() == 3
    assert NearDuplicates(embedder, 0.5, uri=str(tmp_path / "dedup")).keep(["a"]) == [True]  # a new table there
    orthogonal = NearDuplicates(embedder, 0.0)  # a cosine of 0 is at this threshold
    assert orthogonal.keep(["a"]) == [True] and orthogonal.keep(["b"]) == [False]
    assert orthogonal.table.count_rows() == 1
    assert NearDuplicates(embedder, 1.0).keep(["a", "a again", "b"]) == [True, False, True]


@pytest.mark.timeout(60)
def test_near_duplicates_remove_old_table_versions_every_upkeep_every_commits(tmp_path):
    embedder = _Vectors({"a": [1.0, 0.0], "a again": [1.0, 0.0], "b": [0.0, 1.0], "c": [-1.0, 0.0]})
    seen = NearDuplicates(embedder, 0.5, uri=str(tmp_path / "dedup"), upkeep=Upkeep(min_rows=1000, every=2))
    oldest = []
    for texts in (["a"], ["a again"], ["b"], ["c"]):  # commits 1, none (nothing kept), 2 (the upkeep), 1 again
        seen.keep(texts)
        oldest.append(min(v["version"] for v in seen.table.list_versions()))
    assert oldest == [1, 1, 3, 3]  # the upkeep of the second commit (version 3) removes the versions before it

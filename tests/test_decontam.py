"""The decontamination's pure parts (amr/decontam.py) with literal expected values: word n-grams, problem
statements, which benchmark text the exact and n-gram checks name (their tie-breaks and boundaries), the
nearest benchmark vectors, and the check of a distill input against the evaluated datasets."""

from __future__ import annotations

import numpy as np
import pytest

from amr.decontam import NgramIndex, benchmark_items, eval_overlaps, nearest, ngrams, problem_statement

pytestmark = pytest.mark.timeout(120)


def test_ngrams_of_a_text_shorter_than_equal_to_and_longer_than_n():
    assert ngrams(["a", "b"], 3) == set()
    assert ngrams(["a", "b", "c"], 3) == {"a b c"}
    assert ngrams(["a", "b", "c", "d"], 3) == {"a b c", "b c d"}


def test_problem_statement_cuts_examples_and_doctests():
    assert problem_statement("Sum the list.\nFor example, f([1, 2]) == 3") == "Sum the list."
    assert problem_statement("Sum the list.\n  Example:\n  f([1]) == 1") == "Sum the list."
    assert problem_statement("Sum the list.\n>>> f([1])\n1") == "Sum the list."
    assert problem_statement("Sum the list,\nfor example of floats.") == "Sum the list,\nfor example of floats."


def test_an_unknown_benchmark_is_named_with_the_known_ones():
    with pytest.raises(ValueError) as error:
        benchmark_items(["mbpp", "apps"])
    assert str(error.value) == "unknown benchmark(s) ['apps']; known: humaneval, mbpp, mbpp-plus"


def test_an_empty_prompt_does_not_stop_the_index_at_its_item():
    index = NgramIndex.build([{"id": "b/1", "prompt": "", "solution": "def add(a, b): return a + b"}], 3)
    assert index.match("here: def add(a, b): return a + b", 1) == {
        "check": "exact",
        "benchmark_id": "b/1",
        "score": 1.0,
    }


def test_exact_names_the_most_covered_text_then_the_earlier_item():
    items = [
        {"id": "whole", "prompt": "sort the list of names", "solution": ""},  # 3 trigrams
        {"id": "most", "prompt": "count the words of every line in a text file twice", "solution": ""},  # 9
    ]
    index = NgramIndex.build(items, 3)
    text = "sort the list of names then count the words of every line in a text file"  # all of one, 8/9 of the other
    assert index.match(text, 1) == {"check": "exact", "benchmark_id": "whole", "score": 1.0}
    # a short text (under n words) and a text of exactly n words, both contained: the earlier item
    tie = NgramIndex.build(
        [
            {"id": "short", "prompt": "sum a list", "solution": ""},
            {"id": "five", "prompt": "reverse each word in place", "solution": ""},
        ],
        5,
    )
    assert tie.match("reverse each word in place, then sum a list", 1) == {
        "check": "exact",
        "benchmark_id": "short",
        "score": 1.0,
    }


def test_ngram_names_the_text_sharing_most_and_its_boundaries():
    items = [
        {"id": "p", "prompt": "one two three four five six", "solution": ""},  # 4 trigrams
        {"id": "q", "prompt": "seven eight nine ten eleven twelve", "solution": ""},  # 4 trigrams
    ]
    index = NgramIndex.build(items, 3)
    text = "one two three four five xx seven eight nine"  # 3 of p's, 1 of q's
    assert index.match(text, 3) == {"check": "ngram", "benchmark_id": "p", "score": 0.75}  # at min_matches
    assert index.match(text, 4) is None
    tie = NgramIndex.build(
        [
            {"id": "two", "prompt": "alpha beta gamma delta", "solution": ""},  # 2 trigrams
            {"id": "three", "prompt": "alpha beta gamma delta epsilon", "solution": ""},  # 3 trigrams
        ],
        3,
    )
    # one trigram of each: the tie goes to the earlier item; a text of two n-grams can be an n-gram overlap
    assert tie.match("alpha beta gamma omega", 1) == {"check": "ngram", "benchmark_id": "two", "score": 0.5}


def test_nearest_are_the_k_most_similar_best_first():
    benchmarks = np.asarray([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    queries = np.asarray([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    top, cosines = nearest(queries, benchmarks, 1)
    assert top.tolist() == [[1], [2]] and cosines.tolist() == [[1.0], [1.0]]
    top, cosines = nearest(queries, benchmarks, 2)
    assert top.tolist() == [[1, 3], [2, 0]]
    assert np.allclose(cosines, [[1.0, 0.8], [1.0, 0.8]])
    top, cosines = nearest(queries, benchmarks, 10)  # more than there are: all of them
    assert top.tolist() == [[1, 3, 0, 2], [2, 0, 3, 1]]
    assert np.allclose(cosines, [[1.0, 0.8, 0.6, 0.0], [1.0, 0.8, 0.6, 0.0]])


def test_eval_overlaps_by_task_id_then_exact_then_ngram():
    records = [
        {"id": "MBPP/602", "instruction": "anything"},  # MBPP+'s Mbpp/602, by id in any case
        {"id": "r1", "instruction": "Please: write a function to find the shared elements from the given two lists!"},
        {
            "id": "r2",
            "instruction": "Check if in given list of numbers, are any two numbers closer to each other than given threshold.",
        },  # 6 of HumanEval/0's prompt's 44 13-grams
        {"id": "r3", "instruction": "Write a function that formats a duration in seconds as hours and minutes."},
        {"id": "HumanEval/0", "instruction": "x"},
    ]
    assert eval_overlaps(records, ["humaneval", "mbpp"]) == [
        {"id": "MBPP/602", "check": "task id", "benchmark_id": "Mbpp/602", "score": 1.0},
        {"id": "r1", "check": "exact", "benchmark_id": "Mbpp/2", "score": 1.0},
        {"id": "r2", "check": "ngram", "benchmark_id": "HumanEval/0", "score": 6 / 44},
        {"id": "HumanEval/0", "check": "task id", "benchmark_id": "HumanEval/0", "score": 1.0},
    ]
    assert eval_overlaps(records, ["mbpp"]) == [
        {"id": "MBPP/602", "check": "task id", "benchmark_id": "Mbpp/602", "score": 1.0},
        {"id": "r1", "check": "exact", "benchmark_id": "Mbpp/2", "score": 1.0},
    ]
    assert [r["id"] for r in eval_overlaps(records, ["humaneval"], min_matches=7)] == ["HumanEval/0"]
    one = {"id": "r4", "instruction": "Please check if in given list of numbers, are any two numbers closer to zero."}
    assert eval_overlaps([one], ["humaneval"]) == [  # one shared 13-gram is enough by default
        {"id": "r4", "check": "ngram", "benchmark_id": "HumanEval/0", "score": 1 / 44}
    ]
    assert eval_overlaps(records[2:3], ["humaneval"], n=10) == [
        {"id": "r2", "check": "ngram", "benchmark_id": "HumanEval/0", "score": 9 / 47}
    ]


def test_benchmark_items_of_each_benchmark():
    mbpp = benchmark_items(["mbpp"])
    assert [i["id"] for i in mbpp] == [f"mbpp/{n}" for n in range(1, 601)]  # prompt, test and validation splits
    statement = "Write a python function to remove first and last occurrence of a given character from the string."
    assert mbpp[10] == {
        "id": "mbpp/11",
        "prompt": statement,
        "solution": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
        "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
        "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
        "problem": statement,
    }
    assert (len(benchmark_items(["humaneval"])), len(benchmark_items(["mbpp-plus"])), len(benchmark_items())) == (
        164,
        399,
        1163,
    )


def test_problem_statement_drops_mbpps_test_header_and_asserts():
    text = "Write a function to add.\nYour code should pass this test:\nassert add(1, 2) == 3"
    assert problem_statement(text) == "Write a function to add."


def test_benchmark_problems_are_the_statements_alone():
    items = {i["id"]: i for i in benchmark_items()}
    humaneval = items["HumanEval/0"]  # the entry point's docstring, without the code and the doctests
    assert humaneval["problem"].startswith("Check if in given list of numbers, are any two numbers closer")
    assert "def " not in humaneval["problem"] and ">>>" not in humaneval["problem"]
    assert humaneval["prompt"].startswith("from typing import List") and "return False" in humaneval["solution"]
    helped = items["HumanEval/10"]  # a prompt with a helper before the entry point: the entry point's docstring
    assert helped["problem"].startswith("Find the shortest palindrome") and "is_palindrome" not in helped["problem"]
    assert items["mbpp/1"]["problem"] == items["mbpp/1"]["prompt"]
    plus = next(i for key, i in items.items() if i["id"] == "Mbpp/2")  # MBPP+: without the quotes and the asserts
    assert plus["problem"] == plus["prompt"] and plus["problem"][0] not in "\"' " and "assert" not in plus["problem"]


def test_nearest_picks_the_k_most_similar_of_many():
    rng = np.random.default_rng(0)
    benchmarks = rng.normal(size=(200, 8)).astype(np.float32)
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    for k in (2, 5, 9):
        top, cosines = nearest(queries, benchmarks, k)
        similarity = queries @ benchmarks.T
        assert top.tolist() == np.argsort(-similarity, axis=1, kind="stable")[:, :k].tolist()
        assert np.allclose(cosines, np.take_along_axis(similarity, top, axis=1))

import pytest

from amr.parsing import (
    assert_statements,
    code_blocks,
    defined_functions,
    function_specs,
    normalized_source,
    python_code,
    under_heading,
)


def test_code_blocks_and_first_parsing_python():
    response = "Here:\n```\nnot python (\n```\ntext\n```python\ndef f(x):\n    return x\n```\n"
    assert code_blocks(response) == ["not python (", "def f(x):\n    return x"]
    assert python_code(response) == "def f(x):\n    return x"


def test_unclosed_fence_and_no_code():
    assert python_code("```py\nx = 1\n") == "x = 1"
    assert python_code("no code at all") is None
    assert python_code("") is None


def test_a_test_cut_off_at_max_tokens_keeps_its_whole_asserts():
    cut = "```python\ndef test_f():\n    assert f(1) == 1\n    assert f([\n        2,\n    ]) == 2\n    assert f(3) =="
    assert python_code(cut) is None
    assert (
        python_code(cut, cut_off=True) == "def test_f():\n    assert f(1) == 1\n    assert f([\n        2,\n    ]) == 2"
    )
    assert python_code("```python\ndef test_f():\n    assert f(", cut_off=True) is None  # no whole assert left


def test_a_cut_off_block_keeps_its_longest_head_that_parses():
    assert python_code("```python\nassert f(1) == 1\nassert f(", cut_off=True) == "assert f(1) == 1"  # one line
    two_short = "```python\ndef test_f():\n    assert f(1) == 1\n    assert f(\n        2"
    assert python_code(two_short, cut_off=True) == "def test_f():\n    assert f(1) == 1"


MD_ANSWER = '''The solution splits into two functions:

```python
from typing import List

def is_prime(n: int) -> bool:
    """Return True when n is a prime number.

    Args:
        n: the number to test.
    Returns:
        Whether n is prime.
    """
    ...

def primes_below(limit: int, *, start: int = 2) -> List[int]:
    """All primes in [start, limit)."""
    return [n for n in range(start, limit) if is_prime(n)]

def no_docstring(x):
    pass

def broken(:
```
'''


def test_function_specs_take_signature_and_docstring_and_drop_bodies():
    specs = function_specs(MD_ANSWER)
    assert [s["name"] for s in specs] == ["is_prime", "primes_below"]
    assert specs[0]["signature"] == "def is_prime(n: int) -> bool"
    assert specs[0]["description"].startswith("Return True when n is a prime number.\n\nArgs:")
    assert specs[1]["signature"] == "def primes_below(limit: int, *, start: int=2) -> List[int]"
    assert function_specs("no code here") == [] and function_specs("") == []


def test_function_specs_repeated_by_name_keep_their_first_occurrence():
    # the second block restates is_prime with another signature and description (and adds a spec): the first stays
    answer = (
        '```python\ndef is_prime(n: int) -> bool:\n    """Return True when n is prime."""\n```\n'
        '```python\ndef is_prime(k) -> int:\n    """Count to k."""\n\ndef twice(x: int) -> int:\n'
        '    """Double x."""\n```'
    )
    assert function_specs(answer) == [
        {
            "name": "is_prime",
            "signature": "def is_prime(n: int) -> bool",
            "description": "Return True when n is prime.",
        },
        {"name": "twice", "signature": "def twice(x: int) -> int", "description": "Double x."},
    ]


def test_defined_functions_are_standalone_with_the_program_imports():
    program = (
        "import math\nfrom functools import lru_cache\n\nX = 3\n\n@lru_cache(None)\n"
        "def area(r: float) -> float:\n    '''Circle area.'''\n    return math.pi * r * r\n\n"
        "def double(x):\n    return 2 * x\n"
    )
    area, double = defined_functions(program)
    assert area["signature"] == "def area(r: float) -> float" and area["description"] == "Circle area."
    assert (
        area["code"] == "import math\nfrom functools import lru_cache\n\n\n@lru_cache(None)\n"
        "def area(r: float) -> float:\n    '''Circle area.'''\n    return math.pi * r * r\n"
    )
    assert double["description"] == "" and double["code"].endswith("def double(x):\n    return 2 * x\n")
    namespace: dict = {}
    exec(area["code"], namespace)
    assert round(namespace["area"](1.0), 5) == 3.14159
    assert defined_functions("def broken(:") == []


def test_normalized_source_ignores_formatting_and_comments():
    assert normalized_source("def f( x ):\n    return x+1  # one") == normalized_source("def f(x):\n    return x + 1")


def test_a_function_defined_twice_counts_once_as_its_last_definition():
    program = "def f(x):\n    return x\n\n\ndef g(x):\n    return f(x)\n\n\ndef f(x):\n    return x + 1\n"
    assert [(d["name"], d["code"].count("def f")) for d in defined_functions(program)] == [("g", 1), ("f", 1)]
    assert "return x + 1" in defined_functions(program)[1]["code"]


def test_defined_functions_carry_the_definitions_they_use():
    program = (
        "import re\nLIMIT = 10\n\ndef unused():\n    return 0\n\ndef is_small(n):\n    return n < LIMIT\n\n"
        "def smalls(xs):\n    return [x for x in xs if is_small(x)]\n"
    )
    smalls = defined_functions(program)[-1]
    assert (
        smalls["code"] == "import re\n\n\nLIMIT = 10\n\n\ndef is_small(n):\n    return n < LIMIT\n\n\n"
        "def smalls(xs):\n    return [x for x in xs if is_small(x)]\n"
    )
    namespace: dict = {}
    exec(smalls["code"], namespace)
    assert namespace["smalls"]([3, 30]) == [3]


def test_assert_statements_survive_a_broken_line():
    response = "```python\nassert f(1) == 2\nassert f(2) == (\nx = 3\nassert f(3) == 4\n```\n```python\nassert g()\n```"
    assert assert_statements(response) == ["assert f(1) == 2", "assert f(3) == 4", "assert g()"]
    assert assert_statements("no code") == []


def test_function_specs_in_the_papers_description_style():
    commented = (
        "```python\ndef is_prime(n: int) -> bool:\n    # Description: Check whether n is a prime number.\n    ...\n```"
    )
    prose = (
        "```\ndef count_vowels(s: str) -> int:\n    Description: Count the vowels of s.\n\ndef main(s):\n    pass\n```"
    )
    assert function_specs(commented) == [
        {
            "name": "is_prime",
            "signature": "def is_prime(n: int) -> bool",
            "description": "Check whether n is a prime number.",
        }
    ]
    assert function_specs(prose) == [
        {
            "name": "count_vowels",
            "signature": "def count_vowels(s: str) -> int",
            "description": "Count the vowels of s.",
        }
    ]
    # an implementation without a description is not a spec, with or without the label
    assert function_specs("```python\ndef add(a, b):\n    return a + b\n```") == []


def test_a_test_must_assert_something_about_its_function():
    from amr.parsing import vacuous_test

    assert vacuous_test("def test_f():\n    assert f(2) == 4\n", "f") is None
    assert vacuous_test("assert f(1) and True", "f") is None
    assert vacuous_test("def test_f():\n    pass\n", "f") == "no assert statement in the test"
    assert vacuous_test("def test_f():\n    f(2)\n    assert True\n", "f") == "no assert calls f"
    assert vacuous_test("print(f(2))", "f") == "no assert statement in the test"
    assert vacuous_test("def broken(:", "f") is None  # the sandbox reports the syntax error


# Killers of the mutants that survived a mutmut run over amr/parsing.py (issue 22): each expected value is written out.


@pytest.mark.timeout(30)
def test_code_blocks_strip_only_the_newlines_around_a_block():
    # the first line's indentation and a last line ending in X are code
    assert code_blocks("```python\n\n    indented = 1\nX\n\n```") == ["    indented = 1\nX"]


@pytest.mark.timeout(30)
def test_function_specs_of_an_answer_without_code_blocks():
    answer = 'Split it like this:\n\ndef area(r: float) -> MatrixX:\n    """Area of a circle of radius r."""\n    ...\n'
    assert function_specs(answer) == [
        {"name": "area", "signature": "def area(r: float) -> MatrixX", "description": "Area of a circle of radius r."}
    ]


@pytest.mark.timeout(30)
def test_prose_descriptions_join_their_lines_and_drop_stubs_and_quotes():
    answer = (
        "```\n"
        "def matmul(a: Matrix, b: Matrix) -> Matrix:\n"
        "    Description: Multiply matrix A by matrix X\n"
        "    XOR-free: sums of products.\n"
        "    ...\n"
        "    pass\n"
        "\n"
        "def count(s: str) -> int:\n"
        "    \"Count the vowels of s.'\n"  # mismatched quotes: not Python, the prose path
        "```"
    )
    assert function_specs(answer) == [
        {
            "name": "matmul",
            "signature": "def matmul(a: Matrix, b: Matrix) -> Matrix",
            "description": "Multiply matrix A by matrix X XOR-free: sums of products.",
        },
        {"name": "count", "signature": "def count(s: str) -> int", "description": "Count the vowels of s."},
    ]


@pytest.mark.timeout(30)
def test_defined_functions_with_annotated_globals_and_verbatim_last_lines():
    program = "LIMIT: int = 10\nX = 2\n\ndef scaled(n):\n    return n * LIMIT + X\n\ndef padded():\n    return 1  \n"
    assert defined_functions(program) == [
        {
            "name": "scaled",
            "signature": "def scaled(n)",
            "description": "",
            "code": "LIMIT: int = 10\n\n\nX = 2\n\n\ndef scaled(n):\n    return n * LIMIT + X\n",
        },
        {"name": "padded", "signature": "def padded()", "description": "", "code": "def padded():\n    return 1  \n"},
    ]


def test_under_heading_takes_the_answer_to_the_next_heading_outside_code():
    answer = "Thinking.\n### Correct Solution:\n```python\n# a comment, not a heading\ndef f():\n    return 1\n```\n"
    assert under_heading(answer + "## New Task\nmore", "### Correct Solution:") == answer.split(":\n", 1)[1].strip()
    assert under_heading("**x**\n## correct solution\ncode", "### Correct Solution:") == "code"  # level, case, colon
    assert under_heading("no heading here", "### Correct Solution:") is None
    assert under_heading("### Correct Solution: see below", "### Correct Solution:") is None  # a heading line only
    # a fence may be indented: a comment line in its code is no heading
    assert under_heading("## Answer\n  ```python\n# one\nx = 1\n  ```\n## Next", "### Answer:") == (
        "```python\n# one\nx = 1\n  ```"
    )
    assert under_heading("## xbox\ncode", "XBOX:") == "code"  # only the heading's #s and colon are dropped

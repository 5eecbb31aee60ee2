from amr.parsing import code_blocks, python_code


def test_code_blocks_and_first_parsing_python():
    response = "Here:\n```\nnot python (\n```\ntext\n```python\ndef f(x):\n    return x\n```\n"
    assert code_blocks(response) == ["not python (", "def f(x):\n    return x"]
    assert python_code(response) == "def f(x):\n    return x"


def test_unclosed_fence_and_no_code():
    assert python_code("```py\nx = 1\n") == "x = 1"
    assert python_code("no code at all") is None
    assert python_code("") is None

"""Runaway detection: repetition stops an answer; ordinary code, asserts and short repeats do not."""

from __future__ import annotations

from amr.runaway import MIN_SPAN, Watch, repeating_tail, trimmed
from amr.stages import endings, teacher_counts

CODE = '''```python
def running_total(xs: list[int]) -> list[int]:
    """Prefix sums of xs."""
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out
```
'''
TESTS = "\n".join(f"assert running_total([{i}, {i + 1}]) == [{i}, {2 * i + 1}]" for i in range(60))


def test_a_repeated_line_is_a_runaway_cut_after_its_first_copy():
    line = "This function returns the running total of the list.\n"
    text = CODE + line * 40
    start, period = repeating_tail(text)
    assert period == len(line) and start <= len(CODE)  # the run starts at the first copy (or where it rotates in)
    cut = trimmed(text)
    assert text.startswith(cut) and cut.startswith(CODE[:-1]) and cut.count("running total of") == 1


def test_a_repeated_character_or_short_phrase_is_a_runaway():
    assert trimmed("Answer: " + "0" * 2000) == "Answer: 0"
    assert trimmed(CODE + "and so on, " * 200) == CODE + "and so on, "


def test_ordinary_answers_are_not_runaways():
    assert repeating_tail(CODE) is None
    assert repeating_tail(CODE + TESTS) is None  # many similar asserts, none the same
    assert repeating_tail(CODE + "=" * (MIN_SPAN - 10)) is None  # a rule line shorter than the span
    assert repeating_tail("[" + ", ".join(["[0, 0, 0, 0, 0, 0, 0, 0]"] * 8) + "]") is None  # an 8 x 8 literal


def test_a_long_period_needs_its_repeats():
    block = "".join(f"line {i} of a paragraph that the model writes again\n" for i in range(6))  # ~320 chars
    assert repeating_tail(CODE + block * 3) is None  # 3 copies: a period this long needs 6
    cut = trimmed(CODE + block * 7)
    assert cut.startswith(CODE[:-1]) and cut.count("line 0 of") == 1 and len(cut) <= len(CODE) + len(block)


def test_the_watch_stops_a_growing_answer_once():
    watch, cut = Watch(), None
    for piece in [CODE, *["again and again\n"] * 200]:
        if (cut := watch.feed(piece)) is not None:
            break
    assert cut.startswith(CODE[:-1]) and cut.count("again") == 2 and len(cut) <= len(CODE) + 16
    assert len(watch.text) < len(CODE) + MIN_SPAN + 512  # stopped soon after the repetition was long enough


def test_a_stages_counts_say_how_its_answers_ended():
    batch = {
        "are_error": [None, None, None, "HTTP 500"],
        "are_input_tokens": [10, 10, 10, 0],
        "are_output_tokens": [50, 3000, 210, 0],
        "are_faults": ["", "", "", "HTTP 500"],
        "are_finish": ["stop", "length", "runaway", None],
    }
    counts = teacher_counts([batch], "are")
    assert counts["finished"] == {"length": 1, "runaway": 1, "stop": 1}  # an error ended no answer
    assert endings(counts) == ["1 runaways stopped", "1 cut at max_tokens"]
    assert endings({"finished": {"stop": 4}, "test_finished": {"runaway": 2}}) == ["2 runaways stopped"]

"""Runaway answers: an answer that has started repeating itself goes on until ``max_tokens`` (a 0.5B teacher on 2
cores spent 627 s on such 3,000-token answers). The teacher's replicas watch each answer as it is generated
(``amr.teacher_server``) and stop it once its tail repeats, keeping the text up to the repetition's first period.

A tail repeats when its last ``MIN_SPAN`` characters or more, and at least ``MIN_REPEATS`` periods, are periodic:
hundreds of tokens of the same line, block or phrase. Code has repeated lines, never that many identical ones in a
row (a literal of zeros long enough to look so would be a 30 x 30 matrix written out)."""

from __future__ import annotations

MIN_SPAN = 800
"""Characters of periodic tail that make a runaway (~200 tokens)."""
MIN_REPEATS = 6
"""Periods of the tail that make a runaway: a period of up to MAX_PERIOD characters."""
MAX_PERIOD = 400
CHECK_EVERY = 256
"""Characters generated between two checks of a growing answer."""


def repeating_tail(text: str) -> tuple[int, int] | None:
    """Where a runaway's repetition starts and its period, or None: the tail of ``text`` that is periodic with the
    shortest period, at least ``MIN_SPAN`` characters and ``MIN_REPEATS`` periods long, extended back as far as it
    goes."""
    n = len(text)
    for period in range(1, MAX_PERIOD + 1):
        span = max(MIN_SPAN, MIN_REPEATS * period)
        if span > n:
            return None
        tail = text[n - span :]
        if tail[period:] == tail[:-period]:
            start = n - span
            while start > 0 and text[start - 1] == text[start - 1 + period]:
                start -= 1
            return start, period
    return None


def trimmed(text: str) -> str | None:
    """A runaway answer cut after the first period of its repetition; None when the answer is not running away."""
    found = repeating_tail(text)
    return None if found is None else text[: found[0] + found[1]]


class Watch:
    """Follows an answer as its text grows; ``feed`` returns the trimmed answer once it runs away, else None. Checks
    every ``CHECK_EVERY`` characters, so its cost stays a small fraction of generating them."""

    def __init__(self) -> None:
        self.text = ""
        self._checked = 0

    def feed(self, delta: str) -> str | None:
        self.text += delta
        if len(self.text) - self._checked < CHECK_EVERY:
            return None
        self._checked = len(self.text)
        return trimmed(self.text)

"""``amr.runtime``'s helpers that need no Ray."""

from __future__ import annotations

from contextlib import contextmanager

from amr.runtime import shared_in_process


def test_a_nested_block_of_the_same_key_shares_what_the_outer_one_opened():
    events: list[str] = []

    @contextmanager
    def resource(name: str):
        events.append(f"open {name}")
        yield name
        events.append(f"close {name}")

    open_now: dict[str, str] = {}
    with shared_in_process(open_now, "a", lambda: resource("first")) as outer:
        with shared_in_process(open_now, "a", lambda: resource("second")) as inner:
            assert inner == outer == "first"
        with shared_in_process(open_now, "b", lambda: resource("other")) as other:
            assert other == "other"
        assert open_now == {"a": "first"}
    assert open_now == {} and events == ["open first", "open other", "close other", "close first"]

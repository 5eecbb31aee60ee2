"""Stand-ins for a stage's resources in the test's own process, so that the stages' row logic runs without Ray (and
under mutation testing, ``make mutation``): ``Rows``, a list of rows with the parts of ``ray.data.Dataset`` the stages
call; ``Teacher``, answering each chat with a function of its messages; ``Sandbox``, a verdict per code and test.
The real Ray, teacher and sandbox run the same stages in tests/test_stages.py and tests/test_distill.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amr.config import TeacherConfig

Row = dict[str, Any]


class Rows:
    """Rows in order, with ``map``, ``map_batches``, ``filter``, ``columns``, ``union`` and ``take_all`` as
    ``ray.data.Dataset`` has them."""

    def __init__(self, rows: list[Row]):
        self.rows = [dict(r) for r in rows]

    def map(self, fn: Callable[[Row], Row], **options: Any) -> Rows:
        return Rows([fn(dict(r)) for r in self.rows])

    def filter(self, fn: Callable[[Row], bool]) -> Rows:
        return Rows([r for r in self.rows if fn(dict(r))])

    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []

    def union(self, *others: Rows) -> Rows:
        return Rows([r for part in (self, *others) for r in part.rows])

    def take_all(self) -> list[Row]:
        return [dict(r) for r in self.rows]

    def map_batches(self, fn: Any, **options: Any) -> Rows:
        """One pandas batch of every row through ``fn`` (a class is constructed first, as an actor's would be); the
        options are kept in ``batch_options``."""
        import pandas as pd

        if isinstance(fn, type):
            fn = fn(**options.get("fn_constructor_kwargs", {}))
        out = Rows(fn(pd.DataFrame(self.rows), **options.get("fn_kwargs", {})).to_dict("records"))
        out.batch_options = options
        return out


class Teacher:
    """``answer(messages)`` gives (response, error) for each chat; every request is kept (with its carried columns)
        in ``requests``. Tokens: the number of words of the chat and of the answer; the default ``TeacherConfig``'s stages
    sample."""

    def __init__(self, answer: Callable[[list[dict[str, str]]], tuple[str | None, str | None]]):
        self.answer, self.requests, self.config = answer, [], TeacherConfig()

    def complete(self, requests: list[Row], carry: tuple[str, ...] = ("id",)) -> list[Row]:
        self.requests += requests
        out = []
        for request in requests:
            response, error = self.answer(request["messages"])
            out.append(
                {
                    **{k: request[k] for k in carry},
                    "response": response,
                    "error": error,
                    "num_input_tokens": sum(len(m["content"].split()) for m in request["messages"]),
                    "num_output_tokens": len((response or "").split()),
                    "faults": "HTTP 503" if error else "",
                    "finish": None if error else "stop",
                }
            )
        return out

    def task_args(self) -> dict[str, Any]:
        return {}

    def batched(self, ds: Rows) -> Rows:
        return ds

    def generate(self, ds: Rows, carry: tuple[str, ...]) -> Rows:
        return Rows(self.complete(ds.take_all(), tuple(carry)))


class Sandbox:
    """``verdict(code, test)`` gives the status of each check (``passed``, ``failed``, ...); every check is kept in
    ``checks``."""

    def __init__(self, verdict: Callable[[str, str], str]):
        self.verdict, self.checks = verdict, []

    def run(self, checks: list[Row]) -> list[Row]:
        return [self._record(c) for c in checks]

    def check_dataset(self, ds: Rows) -> Rows:
        return ds.map(lambda row: {**row, **self._record(row)})

    def _record(self, check: Row) -> Row:
        self.checks.append({"code": check["code"], "test": check["test"]})
        status = self.verdict(check["code"], check["test"])
        reason = "" if status == "passed" else f"AssertionError in {check['test'][:40]}"
        return {"status": status, "reason": reason, "duration_s": 0.0, "stdout": "", "stderr": "", "isolation": "fake"}

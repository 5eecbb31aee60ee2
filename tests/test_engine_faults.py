"""The openai back end against an endpoint that fails as real ones do (the scripted teacher's injected faults over
real HTTP on 127.0.0.1): transient faults are retried until answered, on both ways in (a streamed stage and a
wave's rows), with a doubling backoff; a 4xx is the row's error; ``qps`` paces the requests; an endpoint that
cannot be reached or hangs stops the job."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from amr.config import DistillConfig
from amr.engines import EngineError, OpenAITeacher
from amr.pipelines import distill
from tests.support.scripted_teacher import FAULTS, Rejected, ScriptedTeacher

pytestmark = pytest.mark.timeout(300)


def _script(messages: list[dict[str, str]]) -> str:
    if "refuse" in messages[-1]["content"]:
        raise Rejected("a request the endpoint rejects")
    return "answer to " + messages[-1]["content"]


def _twice(messages: list[dict[str, str]], attempt: int) -> str | None:
    """Row i fails with fault i (mod 7) on its first two attempts."""
    i = int(re.search(r"row (\d+)", messages[-1]["content"]).group(1))
    return FAULTS[i % len(FAULTS)] if attempt < 2 else None


KINDS = {
    "500": "HTTP 500",
    "503": "HTTP 503",
    "429": "HTTP 429",
    "drop": "connection dropped",
    "no-choices": "not a chat completion",
    "html": "not a chat completion",
    "slow": "timeout",
}
"""The kind the job records for each injected fault (the rows' ``faults``, the manifest's counts)."""


def _rows(n: int, prefix: str = "row") -> list[dict]:
    return [{"id": str(i), "messages": [{"role": "user", "content": f"{prefix} {i}"}]} for i in range(n)]


def test_transient_faults_are_retried_on_both_ways_in(ray_local):
    with ScriptedTeacher(_script, faults=_twice, slow_s=1.5) as server:
        teacher = OpenAITeacher(server.config(max_retries=6, base_retry_wait_s=0.01, request_timeout_s=0.5))
        streamed = ray_local.data.from_items(_rows(14))
        out = {r["id"]: r for r in teacher.generate(streamed).take_all()}
        assert all(r["error"] is None and r["response"] == f"answer to row {i}" for i, r in out.items())
        assert sorted(set(server.faulted)) == sorted(FAULTS) and len(server.faulted) == 28
        assert {out[str(i)]["faults"] for i in range(7)} == {f"{KINDS[f]}, {KINDS[f]}" for f in FAULTS}
        answered = teacher.complete(_rows(14, "row"))  # the same chats again: their faults are spent
        assert all(r["error"] is None for r in answered)
    with ScriptedTeacher(_script, faults=_twice, slow_s=1.5) as server:
        teacher = OpenAITeacher(server.config(max_retries=6, base_retry_wait_s=0.01, request_timeout_s=0.5))
        answered = teacher.complete(_rows(14))
        assert [r["response"] for r in answered] == [f"answer to row {i}" for i in range(14)]
        assert len(server.faulted) == 28
        assert [r["faults"] for r in answered[:7]] == [f"{KINDS[f]}, {KINDS[f]}" for f in FAULTS]


def test_a_rejected_request_is_the_rows_error_and_not_asked_again(ray_local):
    with ScriptedTeacher(_script) as server:
        teacher = OpenAITeacher(server.config(max_retries=6, base_retry_wait_s=0.01))
        [row] = teacher.generate(ray_local.data.from_items(_rows(1, "refuse"))).take_all()
        assert row["error"] == "endpoint error: rejected: a request the endpoint rejects" and server.calls == 1
        assert row["faults"] == "HTTP 422"


def test_transient_faults_past_the_retries_are_the_rows_error(ray_local):
    with ScriptedTeacher(_script, faults=lambda messages, attempt: "503") as server:
        teacher = OpenAITeacher(server.config(max_retries=2, base_retry_wait_s=0.01))
        [row] = teacher.complete(_rows(1))
        assert row["error"].startswith("endpoint error after 3 attempts: HTTP 503") and server.calls == 0
        assert row["faults"] == "HTTP 503, HTTP 503, HTTP 503"


def test_retries_back_off_doubling_from_base_retry_wait(ray_local):
    with ScriptedTeacher(_script, faults=lambda messages, attempt: "503" if attempt < 3 else None) as server:
        teacher = OpenAITeacher(server.config(max_retries=3, base_retry_wait_s=0.2))
        [row] = teacher.complete(_rows(1))
    assert row["response"] == "answer to row 0" and server.faulted == ["503", "503", "503"]
    waits = [later - earlier for earlier, later in zip(server.received_at, server.received_at[1:])]
    assert len(waits) == 3
    for wait, expected in zip(waits, (0.2, 0.4, 0.8)):  # base_retry_wait_s x 2^attempt
        assert expected <= wait < expected + 0.3, waits


def test_a_429_waits_as_long_as_its_retry_after_says(ray_local):
    with ScriptedTeacher(_script, faults=lambda messages, attempt: "429-after" if attempt < 1 else None) as server:
        teacher = OpenAITeacher(server.config(max_retries=2, base_retry_wait_s=0.01))
        [row] = teacher.complete(_rows(1))
    assert row["response"] == "answer to row 0" and server.faulted == ["429-after"]
    [wait] = [later - earlier for earlier, later in zip(server.received_at, server.received_at[1:])]
    assert 1.0 <= wait < 1.5  # Retry-After: 1, not the 0.01 s backoff


def test_qps_paces_request_starts(ray_local):
    with ScriptedTeacher(_script) as server:
        teacher = OpenAITeacher(server.config(qps=5, concurrency=2, base_retry_wait_s=0.01))
        answered = teacher.complete(_rows(11))
    assert [r["response"] for r in answered] == [f"answer to row {i}" for i in range(11)]
    # at most qps x concurrency = 10 starts a second: the 11th starts 1 s after the first (a late arrival on a
    # loaded machine can only make the span longer)
    starts = sorted(server.received_at)
    assert starts[-1] - starts[0] >= 0.9, starts
    with ScriptedTeacher(_script) as server:  # unpaced: the same requests in well under that
        OpenAITeacher(server.config(concurrency=2)).complete(_rows(11))
    assert max(server.received_at) - min(server.received_at) < 0.6


def _unreachable(config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config.openai.base_url = f"http://127.0.0.1:{port}/v1"
    return config


def test_an_unreachable_endpoint_stops_the_distill_job(ray_local, tmp_path):
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps({"id": f"t/{i}", "instruction": f"Task {i}."}) + "\n" for i in range(3)))
    teacher = _unreachable(ScriptedTeacher(_script).config(max_retries=2, base_retry_wait_s=0.01))
    cfg = DistillConfig(run_dir=str(tmp_path / "run"), method="direct", teacher=teacher)
    cfg.input.source = str(source)
    with pytest.raises(Exception, match=r"unreachable or not answering in .* after 3 attempts"):
        distill.run(cfg)
    run = Path(cfg.run_dir)
    assert not (run / "direct.parquet" / "_SUCCESS").exists() and not (run / "dataset.parquet").exists()
    assert not (run / "manifest.json").exists()


def test_an_unreachable_endpoint_stops_the_job(ray_local):
    config = _unreachable(ScriptedTeacher(_script).config(max_retries=1, base_retry_wait_s=0.01))
    teacher = OpenAITeacher(config)
    with pytest.raises(EngineError, match="unreachable or not answering"):
        teacher.complete(_rows(2))
    with pytest.raises(Exception, match="unreachable or not answering") as err:
        teacher.generate(ray_local.data.from_items(_rows(2))).take_all()
    assert isinstance(err.value, EngineError) or "EngineError" in str(err.value)


def test_a_hanging_endpoint_has_a_deadline(ray_local):
    with ScriptedTeacher(_script, faults=lambda messages, attempt: "slow", slow_s=30) as server:
        teacher = OpenAITeacher(server.config(max_retries=1, base_retry_wait_s=0.01, request_timeout_s=0.5))
        with pytest.raises(EngineError, match=r"not answering in 0.5 s after 2 attempts"):
            teacher.complete(_rows(1))


def test_a_script_that_raises_fails_the_test_and_a_rejection_is_asked_for():
    def broken(messages):
        assert messages[-1]["content"] == "expected", "the job asked something the test did not expect"
        return "fine"

    with pytest.raises(AssertionError, match="the job asked something the test did not expect"):
        with ScriptedTeacher(broken) as server:
            teacher = OpenAITeacher(server.config(max_retries=0))
            [row] = teacher.complete(_rows(1))
            assert row["error"].startswith("endpoint error: the script raised AssertionError")  # not retried
    with ScriptedTeacher(_script) as server:  # Rejected: the error row is the point, nothing is raised
        [row] = OpenAITeacher(server.config(max_retries=0)).complete(_rows(1, "refuse"))
    assert row["error"] == "endpoint error: rejected: a request the endpoint rejects"

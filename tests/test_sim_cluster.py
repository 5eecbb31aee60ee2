"""The simulated cluster's modelled engine (bench/simcluster): continuous batching over its slots at the modelled
rates, with recorded lengths and scripted answers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from amr.prompts import direct
from bench.simcluster import engine, lengths
from bench.simcluster.rates import Rates

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen2.5-Coder-32B-Instruct"
SCALE = 20.0


def _engine(
    tmp_path, monkeypatch, slots: int, drawn: tuple[int, int, int | None], scale: float = SCALE
) -> engine.ModelledEngine:
    monkeypatch.setenv(engine.TIME_SCALE, str(scale))
    monkeypatch.setenv(engine.STATS_DIR, str(tmp_path))
    monkeypatch.setattr(lengths, "draw", lambda stage, key: drawn)
    config = SimpleNamespace(
        model_id=MODEL,
        accelerator_type="H100",
        engine_kwargs={"max_num_seqs": slots, "tensor_parallel_size": 2, "enable_prefix_caching": False},
    )
    return engine.ModelledEngine(config)


def _request(
    n: int, system: str = direct.SYSTEM, max_tokens: int | None = None, stream: bool = False
) -> SimpleNamespace:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Task {n}. Add one."}]
    return SimpleNamespace(messages=messages, max_tokens=max_tokens, max_completion_tokens=None, stream=stream)


async def _answers(eng: engine.ModelledEngine, requests: list[SimpleNamespace]) -> tuple[list, float]:
    await eng.start()
    began = time.time()

    async def one(request):
        return [r async for r in eng.chat(request)][0]

    answers = await asyncio.gather(*(one(r) for r in requests))
    return answers, SCALE * (time.time() - began)


def test_a_request_takes_its_prefill_and_one_step_a_token(tmp_path, monkeypatch):
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(2000, 400, None))
    (answer,), took = asyncio.run(_answers(eng, [_request(7)]))
    rates = Rates.of(MODEL, "H100", 2)
    expected = rates.step_s(0, 0, 2048) * 2000 / 2048 + sum(rates.step_s(1, 2000 + t) for t in range(400))
    assert expected * 0.95 < took < expected * 1.3
    assert answer.usage.prompt_tokens == 2000 and answer.usage.completion_tokens == 400
    assert "def solve_7" in answer.choices[0].message.content  # the scripted answer
    assert answer.choices[0].finish_reason == "stop"


def test_requests_beyond_the_slots_wait_for_one(tmp_path, monkeypatch):
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(100, 300, None))
    _, took_4 = asyncio.run(_answers(eng, [_request(i) for i in range(4)]))
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(100, 300, None))
    _, took_8 = asyncio.run(_answers(eng, [_request(i) for i in range(8)]))
    assert 1.8 * took_4 < took_8 < 2.3 * took_4  # two rounds of four


def test_max_tokens_caps_a_runaway_and_counters_add_up(tmp_path, monkeypatch):
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(100, 3000, None))
    (answer,), took = asyncio.run(_answers(eng, [_request(3, max_tokens=256)]))
    assert answer.usage.completion_tokens == 256 and answer.choices[0].finish_reason == "length"
    assert eng.counters["output_tokens"] == 256 and eng.counters["requests"] == 1
    assert eng.counters["busy_slot_s"] == pytest.approx(took, rel=0.2)  # one slot busy all along


def test_a_streamed_runaway_is_stopped_where_it_repeats_and_frees_its_slot(tmp_path, monkeypatch):
    """A recorded runaway streams a text that repeats from its recorded token on: a reader that stops it there (as the
    replica's runaway watch does) ends the request, and the engine takes it out of its batch."""
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(100, 3000, 300), scale=5.0)  # a stalled test sees chunks

    async def read() -> tuple[str, int]:
        await eng.start()
        text, tokens = "", 0
        stream = eng.chat(_request(5, stream=True))
        async for event in stream:
            if event.startswith("data: {"):
                body = json.loads(event[len("data: ") :])
                text += body["choices"][0]["delta"]["content"]
                tokens = body["usage"]["completion_tokens"]
                if text.count("The test repeats the same check.") >= 6:
                    await stream.aclose()
                    break
        return text, tokens

    text, tokens = asyncio.run(read())
    assert "def solve_5" in text and 300 < tokens < 600
    assert not eng.decoding and eng._busy() == 0
    assert tokens <= eng.counters["output_tokens"] <= tokens + engine.CHUNK_TOKENS  # and the steps until it was stopped


def test_a_chunk_boundary_just_short_of_the_progress_is_not_due_again(tmp_path, monkeypatch):
    """Step fractions sum to a progress a hair short of a chunk boundary: the next event is the chunk after it (the
    one within the tolerance was due now), else the scheduler pops the same event forever."""
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(100, 3000, None))
    seq = SimpleNamespace(stream=True, started_at=0.25, done_at=3000.25)
    eng.progress = seq.started_at + engine.CHUNK_TOKENS - engine.EPSILON / 10
    assert eng._next_event_at(seq) == seq.started_at + 2 * engine.CHUNK_TOKENS


def test_rates_of_a_hub_id_and_of_its_cached_snapshot_agree():
    """The job's preflight hands the engines the snapshot a pulled hub id resolves to."""
    snapshot = f"/cache/hub/models--{MODEL.replace('/', '--')}/snapshots/{'0' * 40}"
    assert Rates.of(snapshot, "H100", 2) == Rates.of(MODEL, "H100", 2)
    with pytest.raises(ValueError, match="no modelled rates for model"):
        Rates.of("/cache/hub/models--Qwen--Other-7B/snapshots/abc", "H100", 2)


def test_an_unknown_system_prompt_is_an_error(tmp_path, monkeypatch):
    eng = _engine(tmp_path, monkeypatch, slots=4, drawn=(100, 10, None))
    with pytest.raises(ValueError, match="no recorded lengths"):
        asyncio.run(_answers(eng, [_request(1, system="You are a poet.")]))


def test_the_recorded_table_has_every_stage_and_runaways():
    table = json.loads(lengths.TABLE.read_text())
    assert set(table["calls"]) == set(lengths.STAGES)
    assert all(len(calls) >= 20 for calls in table["calls"].values())
    assert any(call[1] >= 3000 for calls in table["calls"].values() for call in calls)  # runaways
    assert any(call[2] is not None for call in table["calls"]["tests"])  # some repeat themselves


def _harness(work: Path, *flags: str) -> list[str]:
    """bench/sim_cluster.py on the cluster config's distill job, its run and JSON under ``work``."""
    return [
        sys.executable,
        str(ROOT / "bench" / "sim_cluster.py"),
        *("--config", str(ROOT / "jobs" / "configs" / "run_gpu_cluster.yaml")),
        *flags,
        *("--work-dir", str(work / "work"), "--json", str(work / "sim.json")),
    ]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The two simulated clusters' runs side by side (each a Ray cluster of its own): the A100 cluster's preflight
    failure, seconds of CPU, while the H100 cluster starts and runs the job, not one after the other. The shipped job's
    run: 2 nodes of 8 H100 with 6 CPUs each, 40 instructions in waves of 16, 2 client actors and 2 embedding actors
    where the config sizes 8 and 4 for its 20,000 (each one more is a Ray worker's start, seconds of CPU; every stage
    and wave runs all the same). Its nodes' 12 CPUs hold the 4 replicas', the actors' 8 and 4 for Ray Data's tasks:
    with 16 a node, Ray Data started twice the worker processes for its 40 rows (32 s of CPU more). The engines' 90 s
    starts and their answers in 1/60 of the wall time (the bench's k is 1); started from a process whose Ray uses
    token authentication (as a test process that started a local Ray). The A100 run: one GPU node (each more is
    seconds of its raylet's start)."""
    shipped, a100 = tmp_path_factory.mktemp("shipped"), tmp_path_factory.mktemp("a100")
    runs = {
        "shipped": (
            _harness(
                shipped,
                *("--nodes", "2", "--gpus-per-node", "8", "--cpus-per-node", "6", "--accelerator", "H100"),
                *("--instructions", "40", "--set", "wave_size=16"),
                *("--set", "teacher.vllm.concurrency=2", "--set", "embedding.actors=2", "--time-scale", "60"),
            ),
            {**os.environ, "RAY_AUTH_MODE": "token"},
            540,
        ),
        "a100": (
            _harness(a100, *("--nodes", "1", "--gpus-per-node", "8", "--accelerator", "A100", "--instructions", "40")),
            None,
            280,
        ),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        done = {
            name: pool.submit(subprocess.run, command, capture_output=True, text=True, timeout=timeout, env=env)
            for name, (command, env, timeout) in runs.items()
        }
        return {"shipped": (done["shipped"].result(), shipped), "a100": (done["a100"].result(), a100)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_simulated_cluster_runs_the_shipped_job(simulated):
    """The cluster config's distill job on 2 nodes of 8 fake H100s: it starts, its engines are the modelled ones,
    and the job does its real work (modules verified and inserted, answers evolved, a dataset all right). Started
    from a process whose Ray uses token authentication: the harness's cluster and driver agree on theirs all the
    same."""
    done, work = simulated["shipped"]
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((work / "sim.json").read_text())
    assert report["engines"]["replicas_started"] >= 4 and report["engines"]["slots_each"] == 128
    assert report["engines"]["requests"] >= 4 * 40  # direct, decompose, evolve and tests at least
    assert 0 < report["slot_occupancy"] <= 1 and 0 <= report["gpu_idle_fraction"] < 1
    assert report["job"]["response_accuracy"] == 1.0 and report["job"]["modules"] > 0
    assert set(report["stages"]) >= {"direct", "decompose", "embed", "waves", "dataset"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_simulated_cluster_of_other_gpus_fails_at_preflight(simulated):
    """The cluster config's teacher pins H100: on a node of A100 the job stops at its preflight, in seconds, naming the
    config key; the harness exits non-zero with the error."""
    done, work = simulated["a100"]
    assert done.returncode != 0 and "preflight failed" in done.stderr
    report = json.loads((work / "sim.json").read_text())
    assert "teacher.vllm.accelerator_type" in report["preflight"] and "A100" in report["preflight"]
    assert report["preflight_s"] < 60
    assert "slot_occupancy" not in report  # no job ran

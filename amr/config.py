"""Typed configuration: pydantic models loaded from YAML, overridable with ``key.path=value``.

Every error names the file, the line and the dotted key it is about.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from amr.hardware import cpu_dtype
from amr.methods import METHODS, REGISTRY


class ConfigError(ValueError):
    """A configuration file or override that does not fit its schema."""


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RayConfig(Strict):
    address: str | None = Field(None, description="Ray cluster address; None starts a local Ray.")
    num_cpus: int | None = Field(
        None,
        description="Logical CPUs of a local Ray. Oversubscribe on small machines: ray.data.llm "
        "stage actors each ask for one CPU.",
    )


class SamplingConfig(Strict):
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(3000, gt=0, description="Paper default: 3000.")
    seed: int | None = None
    stop_runaway: bool = Field(
        True,
        description="Stop an answer once it repeats itself (hundreds of tokens of the same text; amr.runaway) "
        "instead of at max_tokens, keeping it up to the repetition; counted as `runaway` in the stage's counts. "
        "The vLLM deployment's replicas watch for it; an OpenAI-compatible endpoint does not.",
    )


class StageSampling(Strict):
    """One stage's sampling where it differs from ``teacher.sampling`` (a key left unset keeps that)."""

    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: list[str] | None = Field(None, description="Strings that end the answer (not included in it).")


def _stage(description: str, max_tokens: int | None = None) -> Any:
    return Field(default_factory=lambda: StageSampling(max_tokens=max_tokens), description=description)


class StageSamplings(Strict):
    """Each stage's teacher calls: ``teacher.sampling`` with the stage's own keys over it. The paper's 3,000 tokens
    is the budget of an answer (direct, CoT, ARE, repair); the stages that write less (specs, tests, small functions)
    get budgets sized to what they write, so that an answer that runs away there ends early."""

    direct: StageSampling = _stage("R_d (and amr-checked's resamples).")
    cot: StageSampling = _stage("The CoT baseline's answer.")
    decompose: StageSampling = _stage("MD's function specs (a few signatures with one-line docstrings).", 1024)
    response_evolution: StageSampling = _stage("ARE's final answer.")
    tests: StageSampling = _stage(
        "Teacher-written tests (three to five asserts): module growth, AnsRepair, checks. A test cut here keeps its "
        "whole asserts.",
        384,
    )
    bootstrap: StageSampling = _stage("The module table's seed: a task's solution as small functions.", 1536)
    repair: StageSampling = _stage("AnsRepair's repaired answer.")


class VLLMConfig(Strict):
    device: Literal["cpu", "gpu"] = "cpu"
    dtype: str = Field(
        "auto",
        description="'auto': on CPU bfloat16 where the CPU has AMX or AVX512-BF16 (2.35x the tokens/s of float32 "
        "measured), else float32; on GPU the model's dtype.",
    )
    tensor_parallel_size: int = Field(1, ge=1)
    concurrency: int = Field(
        1,
        ge=1,
        description="Engine replicas of the deployment (unless teacher.serve "
        "autoscales); also the job's client actors that send a streamed stage's requests.",
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Rows of a streamed stage sent to the deployment together (enough such "
        "batches are in flight to fill the replicas' max_ongoing_requests); a wave sends all its rows at once.",
    )
    max_model_len: int = Field(4096, ge=64)
    max_num_seqs: int = Field(64, ge=1)
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = Field(
        None,
        description="None: eager on CPU (torch.compile there costs ~2 min per engine start for no "
        "measured speed-up), compiled CUDA graphs on GPU.",
    )
    cpu_kvcache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU engines.")
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="VLLM_CPU_NUM_OF_RESERVED_CPU: cores kept free of vLLM's compute threads. None: none on a "
        "machine of 2 cores or fewer (1.6x the tokens/s of vLLM's one measured there), vLLM's default (one) elsewhere.",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Passed to vLLM as is.")
    accelerator_type: str | None = Field(
        None,
        description="GPU type each replica is placed on (Ray's accelerator_type, e.g. 'A100', 'H100'); "
        "None: any GPU. CPU engines take none.",
    )
    stage_dir: str | None = Field(
        None,
        description="A node-local directory each node copies the model into, once per node, before its replicas "
        "load it (amr.staging: a progress line, a timeout sized to the model, added to serve.start_timeout_s); "
        "None: replicas read the model where it is (the model store or cache on shared storage).",
    )


class ServeConfig(Strict):
    """The teacher's Ray Serve LLM deployment: started once per job (or attached to), shared by every stage."""

    app_name: str | None = Field(
        None,
        description="Attach to this running Serve application (`amr teacher serve`) instead of starting "
        "one; it is left running when the job ends. None: the job starts its own and deletes it at the end.",
    )
    min_replicas: int | None = Field(
        None,
        ge=0,
        description="Autoscaling: the fewest replicas (with max_replicas); a replica is added while the replicas "
        "average more than vllm.max_num_seqs requests. None: a fixed vllm.concurrency replicas.",
    )
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling: the most replicas.")
    initial_replicas: int | None = Field(
        None,
        ge=1,
        description="Autoscaling: the replicas the deployment starts with, all up before the job sends its first "
        "request (between min_replicas and max_replicas); then it scales between those on its queue. None: "
        "min_replicas (at least one).",
    )
    max_ongoing_requests: int | None = Field(
        None,
        ge=1,
        description="Serve requests (of prompts_per_call chat requests each) a replica takes at once (Serve routes the "
        "rest elsewhere or queues them in its router); None: twice vllm.max_num_seqs chat requests, the engine's batch "
        "and as many waiting in its own queue, so that a slot that frees is filled at once (the router refills a full "
        "replica only after probing its queue).",
    )
    prompts_per_call: int = Field(
        1,
        ge=1,
        description="Chat requests sent to the deployment in one Serve request, which its replica answers at once: "
        "Serve's routing and request handling, CPU in the callers and the replicas, paid once for this many. "
        "max_ongoing_requests and the autoscaling target count these calls.",
    )
    request_timeout_s: float | None = Field(
        None, gt=0, description="A request not answered in this many seconds becomes an error row; None: no limit."
    )
    start_timeout_s: float = Field(
        1800, gt=0, description="Longest wait for the deployment to be up (engine start, model load)."
    )
    recovery_timeout_s: float = Field(
        600,
        gt=0,
        description="A request whose replica or engine died is sent again while Serve restarts the replica "
        "(health check, engine start), for up to this long; then it is the row's error.",
    )

    @model_validator(mode="after")
    def _autoscaling_pair(self) -> ServeConfig:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("min_replicas and max_replicas go together (autoscaling), or neither")
        if self.min_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        if self.initial_replicas is not None and (
            self.min_replicas is None or not self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas {self.initial_replicas} is not between min_replicas {self.min_replicas} and "
                f"max_replicas {self.max_replicas}"
            )
        return self

    @property
    def starting_replicas(self) -> int | None:
        """Autoscaling: the replicas the deployment starts with (None: a fixed number, vllm.concurrency)."""
        if self.min_replicas is None:
            return None
        return self.initial_replicas or max(self.min_replicas, 1)


class OpenAIConfig(Strict):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable with the key.")
    qps: int | None = Field(None, gt=0, description="Requests per second per worker; None: unlimited.")
    max_retries: int = Field(5, ge=0)
    base_retry_wait_s: float = Field(1.0, gt=0, description="First backoff wait; doubles per retry.")
    request_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Deadline of one request; one past it is retried (a hung endpoint cannot hold the job).",
    )
    concurrency: int = Field(
        4,
        ge=1,
        description="Requests in flight: a streamed stage runs this many HTTP workers with one request "
        "each; a wave sends this many at once.",
    )
    batch_size: int = Field(4, ge=1, description="Rows per HTTP worker batch: small spreads rows over workers.")
    worker_cpus: float = Field(0.25, gt=0, description="CPUs reserved per HTTP worker (they wait on the network).")


class TeacherConfig(Strict):
    backend: Literal["vllm", "openai"] = "vllm"
    model: str = Field(
        "qwen2.5-coder-0.5b-instruct",
        description="A model registry name, a local HF directory, or a hub id.",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    stages: StageSamplings = Field(
        default_factory=StageSamplings, description="Per stage, what differs from `sampling` (max_tokens, stops)."
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig, description="backend vllm: the Ray Serve LLM deployment.")
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)


class InputConfig(Strict):
    source: str = Field(
        "mbpp-train",
        description="'mbpp-train': MBPP train ids 601-974 without the 144 that overlap "
        "the evaluation benchmarks (230 left; `amr instructions seed`'s decontamination); "
        "'mbpp-train-raw': all 374, MBPP+ tasks included; or a JSONL/Parquet file (a path or URI).",
    )
    limit: int | None = Field(None, ge=1, description="Take the first N instructions.")


class IsolationConfig(Strict):
    """How strongly, and on which nodes, untrusted code is isolated (``amr.sandbox``): the teacher's code in a
    distill job, the student's in an evaluation."""

    require: Literal["process", "bwrap"] | None = Field(
        None,
        description="Weakest isolation allowed. 'bwrap': namespaces + read-only system + rlimits; "
        "'process': rlimits and process-group kill only. Below it the sandbox refuses to run. None: 'bwrap' on a "
        "Ray cluster (an address, or more than one node), else the strongest that works here.",
    )
    unsafe_process_isolation_on_cluster: bool = Field(
        False,
        description="Let `require: process` run untrusted code on a Ray cluster: it then reaches the node's "
        "network (the Ray dashboard and Job API, the GCS, the cloud metadata service) and its files. False: a "
        "job on a cluster with `require: process` stops before any work.",
    )
    resource: str | None = Field(
        "sandbox",
        description="The custom Ray resource of the nodes that run untrusted code (the sandbox group of "
        "cluster/): where a node offers it, checks run only there, one unit per check server. A cluster of "
        "several nodes without it is refused; None: any node's CPUs (the GPU nodes' included). A single node "
        "without it runs checks on its CPUs.",
    )
    bwrap: str = Field("bwrap", description="The bubblewrap executable: a name on PATH or a path.")


class SandboxConfig(IsolationConfig):
    """Execution of generated code and tests (``amr.sandbox``)."""

    workers: int | None = Field(
        None,
        ge=1,
        description="Warm check servers per pool (per sandbox actor of a job, which asks Ray for as many units "
        "of `resource`, or CPUs where no node offers it); None: a sandbox node's units of `resource`, else one per "
        "CPU of the machine.",
    )
    actors: int | None = Field(
        None,
        ge=1,
        description="A job's sandbox actors, each a pool of `workers` check servers, started once and used by "
        "every wave and the dataset check; None: one per node that offers `resource`, else one per node.",
    )
    timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit per check (CPU limit: +1 s).")
    memory_mb: int = Field(1024, ge=64, description="Address-space limit per check.")
    max_processes: int = Field(32, ge=1, description="Processes and threads a check may add.")
    max_file_mb: int = Field(16, ge=1, description="Largest file a check may write (stdout included).")
    max_open_files: int = Field(64, ge=8)
    disk_mb: int = Field(64, ge=1, description="Size of the private tmpfs (bwrap).")
    output_bytes: int = Field(4096, ge=0, description="Captured stdout/stderr kept per check.")
    python: str | None = Field(
        None,
        description="Interpreter inside the sandbox; None: /usr/bin/python3 when present, else the "
        "job's base interpreter. Generated code sees its standard library only.",
    )
    ro_binds: list[str] = Field(default_factory=list, description="Extra read-only paths (bwrap).")


class EmbeddingConfig(Strict):
    model: str = Field(
        "all-minilm-l6-v2",
        description="sentence-transformers model: registry name, path, hub "
        "id. The paper uses Alibaba-NLP/gte-large-en-v1.5 (with trust_remote_code).",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run the model's own code from its directory (gte-large-en-v1.5 needs it): only for a model you "
        "trust.",
    )
    batch_size: int = Field(64, ge=1)
    actors: int = Field(
        1,
        ge=1,
        description="A job's embedding actors (one CPU each), started once: they embed the "
        "retrieval queries and each wave's new functions.",
    )
    num_gpus: float = Field(
        0,
        ge=0,
        description="GPU share of each embedding actor (0.25: four actors share a GPU); 0 runs them on CPU. Ray "
        "places the actors by this number on nodes with GPUs.",
    )
    device: str | None = Field(
        None,
        description="torch device the actors' model runs on; None: cuda when num_gpus is above 0, else cpu.",
    )

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="What the actors' model computes in. 'auto': on CPU bfloat16 where the CPU has AMX or AVX512-BF16 "
        "(MiniLM: 3.2x the texts/s of float32, cosine to its vectors >= 0.996), else float32; on GPU float32.",
    )

    @property
    def actor_device(self) -> str:
        """Where an embedding actor runs its model."""
        return self.device or ("cuda" if self.num_gpus else "cpu")

    @property
    def actor_dtype(self) -> str:
        """What an embedding actor's model computes in (``dtype`` with ``auto`` resolved for its device)."""
        if self.dtype != "auto":
            return self.dtype
        return cpu_dtype() if self.actor_device == "cpu" else "float32"


class ModulesConfig(Strict):
    """The functional module database (LanceDB)."""

    uri: str | None = Field(None, description="LanceDB directory or object-store URI; None: <run_dir>/modules.")
    table: str = "modules"
    top_k: int = Field(1, ge=1, description="Functions retrieved per spec (paper: 1).")
    min_similarity: float | None = Field(None, ge=-1, le=1, description="Retrieval floor (paper: none).")
    novelty_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="A new function is novel when its cosine to every module (and to every earlier new "
        "function of its wave) is below this. The paper leaves it open; 0.9 keeps near-duplicates out.",
    )
    index_min_rows: int = Field(
        50_000,
        ge=256,
        description="The table's vector index (in memory, built from the table) is exact below this many rows; from "
        "then on an IVF index (partitions of ~1,024 rows scanned by 4-bit codes, candidates re-ranked by 8-bit "
        "vectors, hits by the stored vectors), retrained each time the table doubles; the instruction_id B-tree is "
        "built from then on too.",
    )
    upkeep_every: int = Field(
        8,
        ge=1,
        description="Waves between the table's refreshes: their new fragments compacted, the instruction_id B-tree "
        "extended to their rows (until then, a count scans them), unpinned old versions removed.",
    )
    staleness: int = Field(
        1,
        ge=0,
        description="Waves overlap: wave k retrieves from the table version wave k-1-staleness committed, so its "
        "rewrites, and then its functions' tests, go to the teacher while the waves before it still test and insert "
        "theirs (and no wave waits for the last one's slowest answer); it also bounds the waves in flight (evolving, "
        "testing or waiting to insert) to 1 + staleness. A wave's verified functions are checked for novelty again "
        "at its turn to insert, against what the waves before it inserted meanwhile. 0: each wave sees every "
        "earlier wave's functions, the strict order (with wave_size 1, the paper's).",
    )
    lease_ttl_s: float = Field(
        60.0,
        gt=0,
        description="One job writes a table at a time: it holds a lease next to the table, renewed every quarter "
        "of this; another job's lease silent for longer is taken over (its holder died).",
    )
    bootstrap_from: str | None = Field(
        None,
        description="Instructions whose solutions, written by the teacher as small "
        "functions, seed the table: a source like input.source; None: the job's input.",
    )
    bootstrap_limit: int = Field(
        20,
        ge=0,
        description="How many of them; an empty table is bootstrapped with them before the first wave (0: never).",
    )


class CheckConfig(Strict):
    """The checked methods' resampling (``amr-checked``, ``direct-checked``, ``amr-checked-no-retrieval``): where no
    answer passes the teacher's tests."""

    resamples: int = Field(
        4,
        ge=0,
        description="Rounds of one more sample of the direct answer for the rows no answer passed yet, each kept "
        "only if it passes the teacher's tests (0: none), without a token budget. Samples of the direct prompt "
        "passed and were right more often than samples of the evolution prompt (docs/benchmarks.md).",
    )
    token_budget: int | None = Field(
        None,
        ge=1,
        description="Resample to a teacher token budget instead: a round starts only while the job's teacher "
        "tokens so far (input and output, every stage, as the report counts them) are below it, so the last round "
        "may pass it by at most one round's tokens; at most max_rounds rounds. `amr run` and bench/quality.py set "
        "it for a matched baseline (direct-checked, amr-checked-no-retrieval) to amr-checked's tokens on the same "
        "instructions. None: `resamples` rounds.",
    )
    max_rounds: int = Field(32, ge=1, description="Rounds at most when resampling to token_budget.")
    temperature: float = Field(0.8, gt=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int = Field(0, description="Round k samples with seed + k.")


Method = Literal[tuple(METHODS)]  # type: ignore[valid-type]  # the registry's names (amr.methods)


class DistillConfig(Strict):
    """The distillation job (``amr.pipelines.distill``, ``amr distill``)."""

    method: Method = Field("amr", description=" ".join(f"'{m.name}': {m.description}" for m in REGISTRY))
    run_dir: str = Field("runs/local", description="Stage outputs, dataset and manifest; rerun to resume.")
    wave_size: int = Field(
        64,
        ge=1,
        description="Instructions per wave of retrieval, evolution and growth; each wave reads one table "
        "version and commits the next (1 with modules.staleness 0 reproduces the paper's sequential order). A "
        "wave's fixed overhead is a fraction of a second (bench/pipeline.py, docs/benchmarks.md), so the size is set "
        "by the teacher: the waves in flight (1 + modules.staleness) should fill the engines' slots, replicas x "
        "max_num_seqs. 64 fills one replica's (vllm.max_num_seqs 64).",
    )
    model_store: str | None = Field(None, description="Model store; default ~/.cache/amr/models.")
    ray: RayConfig = Field(default_factory=RayConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    modules: ModulesConfig = Field(default_factory=ModulesConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    check: CheckConfig = Field(default_factory=CheckConfig, description="The checked methods' resampling.")


class DecontamConfig(Strict):
    """Decontamination against the evaluation benchmarks (``amr.decontam``): checks that need no LLM."""

    benchmarks: list[Literal["humaneval", "mbpp", "mbpp-plus"]] = Field(
        ["humaneval", "mbpp", "mbpp-plus"],
        min_length=1,
        description="HumanEval+ v0.1.10; MBPP ids 1-600 (prompt, "
        "test, validation); MBPP+ v0.1.0 and v0.2.0 (whose tasks come from every MBPP split, train included).",
    )
    ngram: int = Field(13, ge=2, description="Word n-gram length of the overlap check (GPT-3's 13).")
    min_ngram_matches: int = Field(1, ge=1, description="Shared n-grams with one benchmark text that flag a row.")
    embedding_threshold: float | None = Field(
        0.95,
        ge=-1,
        le=1,
        description="Cosine of problem statements that flags a row (a reworded problem); None: no embedding check.",
    )
    judge: bool = Field(
        False,
        description="The paper's check on top: the teacher judges whether each row is the "
        "same problem as its nearest benchmark items (cosine from judge_floor up to the threshold).",
    )
    judge_floor: float = Field(
        0.8,
        ge=-1,
        le=1,
        description="Least cosine of a pair worth judging; pairs from "
        "here up to embedding_threshold are listed in the report as near, judged or not.",
    )
    judge_top_k: int = Field(5, ge=1, description="Nearest benchmark items judged per row (the paper: 5).")
    batch_size: int = Field(256, ge=1)
    actors: int = Field(
        1,
        ge=1,
        description="Most checker actors (one CPU each). The statements are embedded by embedding.actors embedding "
        "actors (float32 on CPU, shared by a job's steps), or by this many where that is more.",
    )


class SelfInstructConfig(Strict):
    """Self-instruct from seeds (the paper: 332 MBPP seeds -> 10k instructions)."""

    count: int = Field(10_000, ge=1, description="Instructions to keep (the paper: 10k).")
    examples: int = Field(3, ge=1, description="Seeds sampled as few-shot examples per request.")
    oversample: float = Field(1.5, ge=1, description="Requests per wanted instruction (filters drop some).")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=2048),
        description="The paper: temperature 0.7, 2048 tokens.",
    )
    seed: int = Field(0, description="Seeds the example sampling and each request's sampling seed.")


class InstructionEvolutionConfig(Strict):
    """Code Evol-Instruct rounds: each instruction is rewritten with one heuristic per round."""

    rounds: int = Field(3, ge=1, description="Complexity levels (the paper: 3).")
    heuristics: list[Literal["constraints", "rarer", "reasoning", "misdirection", "complexity"]] = Field(
        ["constraints", "rarer", "reasoning", "misdirection", "complexity"],
        min_length=1,
        description="Chosen per instruction and round, uniformly, reproducibly (from seed).",
    )
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=2048))
    seed: int = 0


class FilterConfig(Strict):
    """Quality filters of generated instructions; every dropped row is counted with its reason."""

    min_words: int = Field(5, ge=1)
    max_words: int = Field(400, ge=1)
    parent_copy: float = Field(0.9, gt=0, le=1, description="Word-trigram Jaccard to the parent that makes a copy.")
    near_duplicate: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Cosine to a kept instruction that makes a near-duplicate (a LanceDB table of the kept ones).",
    )


class InstructionsConfig(Strict):
    """``amr instructions``: seeds, self-instruct, evolution rounds, filters and decontamination."""

    model_store: str | None = Field(None, description="Model store; default ~/.cache/amr/models.")
    ray: RayConfig = Field(default_factory=RayConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig)
    evolve: InstructionEvolutionConfig = Field(default_factory=InstructionEvolutionConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="Writes and evolves instructions; the judge of decontam.judge."
    )


class TeacherJobConfig(Strict):
    """``amr teacher generate``: the engine alone."""

    model_store: str | None = None
    ray: RayConfig = Field(default_factory=RayConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)


C = TypeVar("C", bound=BaseModel)


def load_config(model: type[C], path: str | Path | None, overrides: list[str] = ()) -> C:
    """Load ``path`` (YAML; None for defaults), apply ``key.path=value`` overrides, validate.

    A section may name another YAML file instead of holding its keys (``distill: local_cpu.yaml``, relative
    to the file that names it); overrides apply after it is read in."""
    return config_sources(model, path, overrides)[0]


def config_sources(
    model: type[C], path: str | Path | None, overrides: Sequence[str] = ()
) -> tuple[C, dict[tuple[str, ...], str]]:
    """``load_config``'s config, and where each key path given in a file or an override came from: ``file:line``
    (the included file's for an included key) or ``--set``. A key absent from the map has its default."""
    where = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    lines: dict[tuple[str, ...], str] = {}
    if path is not None:
        raw, lines = _load_yaml(path)
        _include_sections(model, raw, lines, Path(path).parent)
    overridden: set[tuple[str, ...]] = set()
    for item in overrides:
        keys = _apply_override(raw, item)
        overridden.add(keys)
    try:
        config = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, lines, overridden)) from None
    return config, {keys: _origin(keys, lines, overridden, where) for keys in _given(raw)}


def _given(raw: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a loaded mapping, sections and values alike (list items by index)."""
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for key, value in items:
        yield (*prefix, str(key))
        yield from _given(value, (*prefix, str(key)))


def _origin(
    keys: tuple[str, ...], lines: dict[tuple[str, ...], str], overridden: set[tuple[str, ...]], where: str
) -> str:
    """Where a key path was set: ``--set`` (it or a section above it), else its nearest ``file:line``."""
    if any(keys[: len(o)] == o for o in overridden):
        return "--set"
    return next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), where)


def as_config(model: type[C], config: C | str | Path | None, overrides: Sequence[str] = ()) -> C:
    """A config object as it is, or loaded from a YAML path (None: the defaults); ``key.path=value`` overrides
    apply to either."""
    if not isinstance(config, model):
        return load_config(model, config, list(overrides))
    if not overrides:
        return config
    raw = config.model_dump(mode="json", exclude_unset=True)
    for item in overrides:
        _apply_override(raw, item)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "<config object>", {}, set())) from None


def _load_yaml(path: str | Path, prefix: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """A YAML mapping, and where (``file:line``) each of its dotted keys is, under ``prefix``."""
    text = _read(path)
    try:
        raw = yaml.safe_load(text) or {}
        lines = {(*prefix, *keys): f"{path}:{line}" for keys, line in _key_lines(yaml.compose(text)).items()}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of keys")
    return raw, lines


def _include_sections(
    model: type[BaseModel],
    raw: dict[str, Any],
    lines: dict[tuple[str, ...], str],
    base: Path,
    prefix: tuple[str, ...] = (),
) -> None:
    """Read in each section, at any depth, given as a file name (``train: train_local_cpu.yaml``) or as
    ``include: FILE`` plus keys that change it (``distill: {include: local_cpu.yaml, input: {limit: 5}}``); a file
    name is relative to the file that names it. Keys a model owns (``INCLUDE_DROPS``: ``amr run`` sets each
    method's ``distill.run_dir``) are dropped from the file it includes."""
    for name, field in model.model_fields.items():
        section, value = _section_model(field.annotation), raw.get(name)
        if section is None:
            continue
        where, folder = (*prefix, name), base
        changes = value if isinstance(value, dict) and "include" in value else None
        file = value if isinstance(value, str) else changes and changes.pop("include")
        if file:
            included = base / str(file)
            if not included.is_file():
                at = lines.get((*where, "include") if changes is not None else where, "<config>")
                raise ConfigError(f"{at}: {'.'.join(where)}: no such config file: {included}")
            keys, found = _load_yaml(included, where)
            for key in getattr(model, "INCLUDE_DROPS", {}).get(name, ()):
                keys.pop(key, None)
            raw[name] = value = _merge(keys, changes or {})
            lines.update({k: v for k, v in found.items() if k not in lines})
            folder = included.parent
        if isinstance(value, dict):
            _include_sections(section, value, lines, folder, where)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config model of a section (``X`` or ``X | None``), None for a plain value."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it, section by section."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None


def _apply_override(raw: dict[str, Any], item: str) -> tuple[str, ...]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE")
    keys = tuple(key.split("."))
    node = raw
    for part in keys[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: invalid value: {exc}") from None
    return keys


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each dotted key path of a YAML document to its 1-based line."""
    found: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            found[path] = key_node.start_mark.line + 1
            found.update(_key_lines(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, str(i))
            found[path] = item.start_mark.line + 1
            found.update(_key_lines(item, path))
    return found


RENAMED = {("modules", "seed_limit"): "modules.bootstrap_limit", ("modules", "seed_from"): "modules.bootstrap_from"}
"""Keys renamed before the first release (module-table seeding is now bootstrapping), named in their errors."""


def _describe(
    exc: ValidationError,
    where: str,
    lines: dict[tuple[str, ...], str],
    overridden: set[tuple[str, ...]],
) -> str:
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        origin = _origin(loc, lines, overridden, where)
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "extra_forbidden" and loc[-2:] in RENAMED:
            message = f"unknown key: renamed to {RENAMED[loc[-2:]]}"
        out.append(f"{origin}: {key}: {message}" if key else f"{origin}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(out)


class LoraSettings(Strict):
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt; 'all-linear': every linear layer but the LM head."
    )


class TrainScaling(Strict):
    workers: int = Field(2, ge=1, description="Ray Train workers (FSDP2 processes): GPUs when use_gpu.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); False: CPU workers (gloo).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker; also its torch threads.")
    sharding: Literal["auto", "full", "hybrid", "none"] = Field(
        "auto",
        description="FSDP2 over the workers. 'full': parameters, gradients and optimizer state sharded over all "
        "workers; 'hybrid' (HYBRID_SHARD): sharded within a node, replicated across nodes (the fabric between "
        "nodes carries gradients only); 'none': every worker a full replica (data parallel); 'auto': hybrid on "
        "more than one node, else full.",
    )


class TrainConfig(Strict):
    """Student fine-tuning (``train/``, ``amr train``): SFT under FSDP2 in Ray Train (docs/training.md).

    Paper settings (AMR-Evol): 3 epochs, at most 200 steps, sequence length 2048, AdamW, bf16 on GPU.
    The paper leaves the learning rate, the global batch and the prompt template open: see those fields.
    """

    model: str = Field("smollm2-135m-instruct", description="The student: registry name, local HF directory or hub id.")
    model_store: str | None = Field(None, description="Model store; default ~/.cache/amr/models.")
    dataset: str | None = Field(
        None,
        description="A distill run directory (dataset.parquet or dataset.jsonl; may be "
        "an object-store URI) or one such file. `amr train --dataset`.",
    )
    output: str | None = Field(
        None,
        description="Where the final model (OUT/model), train.json and, by default, the "
        "checkpoints go; on a multi-node cluster a path on shared storage. `amr train --output`.",
    )
    template: Literal["chat", "alpaca"] = Field(
        "chat",
        description="Prompt format (open in the paper). 'chat': the student's chat template over the row's "
        "messages (else instruction/response); 'alpaca': the Alpaca/WizardCoder instruction template, for base models.",
    )
    seq_len: int = Field(2048, ge=16, description="Longest tokenized example (longer ones are truncated). Paper: 2048.")
    packing: bool = Field(
        False, description="Pack examples into seq_len rows (TRL best-fit, no cross-example attention)."
    )
    epochs: float = Field(
        3, gt=0, description="Paper: 3. Training stops at epochs or max_steps, whichever comes first."
    )
    max_steps: int = Field(200, ge=1, description="Most optimizer steps. Paper: 200.")
    global_batch_size: int | Literal["auto"] = Field(
        "auto",
        description="Rows per optimizer step over all workers (open in the paper); a multiple of micro_batch_size x "
        "scaling.workers, the rest is gradient accumulation. 'auto': derived from the data size, the smallest such "
        "multiple that fits `epochs` into `max_steps` (the paper's 3 epochs in its 200 steps); `amr run --dry-run` "
        "and train.json give it.",
    )
    micro_batch_size: int = Field(1, ge=1, description="Rows per worker per forward pass.")
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (open in the paper; 2e-5 as WizardCoder).")
    lr_scheduler: str = Field("cosine", description="A transformers scheduler name (transformers.get_scheduler).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients clipped to this global norm (as transformers).")
    optimizer: Literal["adamw_torch", "adamw_torch_fused"] = Field(
        "adamw_torch", description="Paper: AdamW. torch.optim.AdamW, fused (one kernel per step) on GPU."
    )
    precision: Literal["auto", "bf16", "bf16-pure", "fp32"] = Field(
        "auto",
        description="'bf16': bfloat16 compute, float32 master weights, gradients and optimizer state (FSDP2 mixed "
        "precision; the paper's bf16); 'bf16-pure': weights, gradients and AdamW state in bfloat16 too (half the "
        "memory; updates below bfloat16's resolution are lost); 'fp32'; 'auto': bf16 on GPU, fp32 on CPU (also "
        "with AMX or AVX512-BF16: 1.5x the tokens/s there, but less learnt a step; docs/benchmarks.md). Weights load "
        "and the student is saved in bfloat16 unless fp32.",
    )
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass (less memory).")
    finetune: Literal["full", "lora"] = Field(
        "full", description="Full fine-tuning, or LoRA (merged into the final model)."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in storage (CheckpointConfig.num_to_keep).")
    max_failures: int = Field(2, ge=0, description="Restarts from the latest checkpoint after a worker failure.")
    storage_path: str | None = Field(
        None,
        description="Ray Train storage (checkpoints; shared or object store on a "
        "cluster); None: <output>/checkpoints. A rerun resumes from its latest checkpoint.",
    )
    name: str = Field("train", description="The Ray Train run's name under storage_path.")
    logging_steps: int = Field(1, ge=1)
    seed: int = 42
    scaling: TrainScaling = Field(default_factory=TrainScaling)
    ray: RayConfig = Field(default_factory=RayConfig)


EVALPLUS_VERSIONS = {"humaneval": ("v0.1.10",), "mbpp": ("v0.1.0", "v0.2.0")}
"""The vendored EvalPlus releases (amr/data/evalplus); the first is the default (MBPP+ v0.1.0: the paper's 399 tasks)."""


class ScoringConfig(Strict):
    """``evalplus.evaluate`` settings."""

    parallel: int | None = Field(None, ge=1, description="Checks run at once; None: one per CPU.")
    min_time_limit: float = Field(1.0, gt=0, description="Least seconds per test input (evalplus default 1).")
    gt_time_limit_factor: float = Field(
        4.0,
        gt=0,
        description="Time limit per input as a multiple of the canonical "
        "solution's time (evalplus default 4); raise both on a loaded machine.",
    )


class EvalSettings(Strict):
    """How a model is evaluated with EvalPlus, whatever the model and the dataset."""

    limit: int | None = Field(None, ge=1, description="Evaluate the first N tasks only (a smoke run).")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_tokens=768, stop_runaway=False),
        description="Greedy by default (pass@1); max_tokens 768 as evalplus, whose answers end only there or at a "
        "stop string.",
    )
    samples: int = Field(1, ge=1, description="Samples per task; more than 1 (pass@k) needs sampling.temperature > 0.")
    template: Literal["chat", "alpaca"] = Field(
        "chat",
        description="Prompt format, as the student was trained (`train.template`; `amr run` uses it unless this is "
        "set). 'chat': evalplus's chat prompt through the model's chat template; 'alpaca': the same instruction in "
        "the Alpaca template, the answer prefilled with evalplus's response prefix and a python fence.",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    model_store: str | None = Field(None, description="Model store; default ~/.cache/amr/models.")
    cache_dir: str | None = Field(
        None,
        description="Plain-JSONL datasets and evalplus's expected outputs; default "
        "$AMR_EVALPLUS_CACHE or ~/.cache/amr/evalplus.",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    sandbox: IsolationConfig = Field(
        default_factory=IsolationConfig,
        description="Where and how strongly the model's code is isolated while evalplus scores it (its own "
        "limits and time limits apply inside).",
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("samples")
    @classmethod
    def _sampled(cls, samples: int, info: ValidationInfo) -> int:
        sampling = info.data.get("sampling")
        if samples > 1 and sampling is not None and sampling.temperature == 0:
            raise ValueError("more than one sample per task needs sampling.temperature > 0")
        return samples


class EvalConfig(EvalSettings):
    """EvalPlus evaluation of a model (``eval/``, ``amr eval``): generation with vLLM, scoring with evalplus."""

    model: str = Field(
        ...,
        description="The model under evaluation: a registry name or a local HF directory "
        "(e.g. a trained student). `amr eval --model`.",
    )
    dataset: Literal["humaneval", "mbpp"] = Field(..., description="HumanEval(+) or MBPP(+). `amr eval --dataset`.")
    version: str | None = Field(
        None,
        description="EvalPlus release: humaneval v0.1.10; mbpp v0.1.0 (the paper's 399 "
        "tasks) or v0.2.0 (378, evalplus 0.3.1's default). None: the first.",
    )
    output: str = Field(
        ...,
        description="Directory for samples.jsonl, the evalplus results and scores.json (a path "
        "or an object-store URI).",
    )

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: str | None, info: ValidationInfo) -> str | None:
        known = EVALPLUS_VERSIONS.get(info.data.get("dataset"), ())
        if version is not None and known and version not in known:
            raise ValueError(f"unknown {info.data['dataset']} version {version!r}; known: {', '.join(known)}")
        return version


class RunEvalConfig(EvalSettings):
    """The evaluation step of ``amr run``: every student on each dataset (the paper's default versions)."""

    datasets: list[Literal["humaneval", "mbpp"]] = Field(["humaneval", "mbpp"], min_length=1)
    base: bool = Field(True, description="Also evaluate the student as it was before fine-tuning (a reference row).")


class RunConfig(Strict):
    """``amr run`` and ``amr compare``: for each method, distill -> train -> eval; then one report.

    Under ``output``: ``instructions/`` (with ``instructions``), ``<method>/distill`` (the run directory),
    ``<method>/student`` (train output; ``<students>/<method>`` with ``students``), ``<method>/eval/<dataset>``,
    ``base/eval/<dataset>`` and ``report/``. Those paths are the run's own: ``distill.run_dir``, ``train.dataset``,
    ``train.output`` and ``eval.model`` are not set here (a distill or train config it includes keeps its other
    keys). With ``instructions``, the distill input is the built instructions (``distill.input.limit`` still
    applies).
    """

    output: str = Field(
        "runs/local",
        description="Directory for the whole run: a local or shared path, or an "
        "object-store URI (s3://bucket/prefix) for the instructions, distill run directories, "
        "evaluations and report, with the students under `students`; rerun to resume.",
    )
    students: str | None = Field(
        None,
        description="Local or shared-filesystem directory for the trained students, "
        "STUDENTS/<method> each (model/, train.json, checkpoints/): the model is files that "
        "vLLM loads, not an object-store URI. Required when `output` is a URI; None: "
        "OUTPUT/<method>/student.",
    )
    methods: list[Method] = Field(
        ["amr"],
        min_length=1,
        description="Distillation methods, each trained and "
        "evaluated on the same instructions. `amr compare --methods`.",
    )
    instructions: InstructionsConfig | None = Field(
        None,
        description="Build the instructions first (seed, self-instruct, evolve under OUTPUT/instructions) "
        "and distil all of them, with distill's teacher, embedding and Ray unless set here; None: distill.input.",
    )
    levels: list[int] | None = Field(
        None,
        description="Distil each Code Evol-Instruct level on its own, as the paper's Table 1 (needs `instructions`): "
        "level L is the instructions of evolution round L, distilled, trained and evaluated with every method under "
        "OUTPUT/levelL/; the report adds a table with a column per level and benchmark. None: all instructions.",
    )
    distill: DistillConfig = Field(default_factory=DistillConfig, description="The distill job (or a YAML file name).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The student's training (or a YAML file name).")
    eval: RunEvalConfig = Field(default_factory=RunEvalConfig)
    allow_eval_overlap: bool = Field(
        False,
        description="Distil instructions that are tasks of the evaluated datasets (by task id, the exact and "
        "n-gram checks of `decontam`). False: such an input stops the run before any work, naming them.",
    )
    reuse: RunConfig | None = Field(
        None,
        description="Another run (a YAML file name, relative to this file) whose steps this run reads instead of "
        "making them again: its built instructions and, for each method of both runs, that method's "
        "distillation, student and scores (per level). Its instructions, levels, distill, train and eval "
        "settings must be this run's (`eval.base` aside), and those steps done there: else the run stops before "
        "any work, naming them. The report includes them. paper_table3.yaml reuses paper_table1.yaml.",
    )

    INCLUDE_DROPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "distill": ("run_dir", "method"),
        "train": ("dataset", "output"),
    }
    """Set by the run for each method: an error in the run's config, dropped from a job config it includes."""

    @model_validator(mode="after")
    def _paths_are_the_runs(self) -> RunConfig:
        owned = [
            f"{section}.{k}"
            for section, keys in self.INCLUDE_DROPS.items()
            for k in keys
            if k in getattr(self, section).model_fields_set
        ]
        if owned:
            raise ValueError(f"{', '.join(owned)}: set by the run for each method (see `methods` and `output`)")
        if self.levels is not None:
            rounds = self.instructions.evolve.rounds if self.instructions else None
            if rounds is None or not self.levels or any(not 1 <= level <= rounds for level in self.levels):
                raise ValueError(
                    f"levels: {self.levels}: evolution rounds of the instructions the run builds "
                    + (f"(1 to {rounds})" if rounds else "(set `instructions`)")
                )
        from amr.storage import is_uri  # pyarrow: not for every importer of the configs

        if self.students is not None and is_uri(self.students):
            raise ValueError(
                f"students: {self.students}: a local or shared-filesystem path (vLLM loads the trained "
                "students from files), not an object-store URI"
            )
        if self.students is None and is_uri(self.output):
            raise ValueError(
                f"students: required when output is an object-store URI ({self.output}): a local or "
                "shared-filesystem directory for the trained students (vLLM loads them from files)"
            )
        if self.reuse is not None:
            differ = [
                key
                for key in ("instructions", "levels", "distill", "train", "eval")
                if _settings(getattr(self, key)) != _settings(getattr(self.reuse, key))
            ]
            if differ:
                raise ValueError(
                    f"reuse: {self.reuse.output}: its {', '.join(differ)} differ from this run's: the steps it "
                    "made are not what this run would make"
                )
        return self


def _settings(section: Any) -> Any:
    """A run section as compared for ``reuse`` (the evaluation of the base model aside: the reused run's)."""
    if isinstance(section, RunEvalConfig):
        return section.model_dump(mode="json", exclude={"base"})
    return section.model_dump(mode="json") if isinstance(section, BaseModel) else section

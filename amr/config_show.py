"""``amr config show``: a job's configuration as it resolves (includes read in, overrides applied, defaults filled),
as YAML that loads back as the same config, each value followed by where it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from amr.config import (
    ConfigError,
    DistillConfig,
    EvalConfig,
    InstructionsConfig,
    RunConfig,
    TeacherJobConfig,
    TrainConfig,
    config_sources,
)

JOBS: dict[str, type[BaseModel]] = {  # the order a config's job is guessed in: the first whose keys it fits
    "distill": DistillConfig,
    "run": RunConfig,
    "train": TrainConfig,
    "instructions": InstructionsConfig,
    "eval": EvalConfig,
    "teacher": TeacherJobConfig,
}
"""The jobs whose config ``amr config show`` resolves (``teacher``: ``amr teacher generate|serve``)."""


def guess_job(path: str | Path | None) -> str:
    """The first job of ``JOBS`` whose config has every top-level key of the file (``distill`` for none)."""
    if path is None:
        return "distill"
    try:
        keys = set(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    for name, model in JOBS.items():
        if keys <= set(model.model_fields):
            return name
    raise ConfigError(f"{path}: its keys ({', '.join(sorted(keys))}) fit no job's config; name one with --job")


def show(job: str, path: str | Path | None, overrides: list[str]) -> str:
    """The resolved config of ``job`` from ``path`` and ``overrides`` as commented YAML: each value is followed
    by ``# file:line``, ``# --set`` or ``# default``. Keys the job sets itself (``RunConfig.INCLUDE_DROPS``, also
    in a reused run's section) are left out, so that the text loads back as the same config."""
    model = JOBS[job]
    config, sources = config_sources(model, path, overrides)
    values = _without_owned(config.model_dump(mode="json"), model)
    head = f"# amr config show: the {job} job's config from {path or '<defaults>'}"
    head += "".join(f" --set {o}" for o in overrides) + "\n"
    return head + "".join(_lines(values, sources, ()))


def _without_owned(values: dict[str, Any], model: type) -> dict[str, Any]:
    """``values`` less the keys the job sets itself, also in the run it reuses (a run config of its own)."""
    for section, keys in getattr(model, "INCLUDE_DROPS", {}).items():
        for key in keys:
            values[section].pop(key, None)
    if isinstance(values.get("reuse"), dict):
        _without_owned(values["reuse"], model)
    return values


def _lines(values: dict[str, Any], sources: dict[tuple[str, ...], str], prefix: tuple[str, ...]) -> list[str]:
    out = []
    indent = "  " * len(prefix)
    for key, value in values.items():
        keys = (*prefix, key)
        if isinstance(value, dict) and value:
            out.append(f"{indent}{_flow(key)}:\n")
            out.extend(_lines(value, sources, keys))
        else:
            out.append(f"{indent}{_flow(key)}: {_flow(value)}  # {sources.get(keys, 'default')}\n")
    return out


def _flow(value: Any) -> str:
    """A value as one line of YAML (flow style)."""
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).removesuffix("\n...\n").strip()

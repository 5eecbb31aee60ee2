"""What every entry point shares: user-facing errors, logging, Ray's lifetime, ``python -m jobs.NAME``."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ray
import typer
from rich.console import Console

from amr import logs, progress
from amr.config import ConfigError
from amr.data import InputError
from amr.engines import EngineError
from amr.export import ExportError
from amr.lease import LeaseError
from amr.model_store import ModelError
from amr.modules import ModuleDBError
from amr.report import ReportError
from amr.sandbox import SandboxError

console = Console()
OverridesOption = typer.Option([], "--set", help="Override a config key: key.path=value.")
VerboseOption = typer.Option(
    False, "--verbose", "-v", help="Show Ray's, vLLM's and Ray Data's INFO lines on the terminal too."
)
LogLevelOption = typer.Option(
    None,
    "--log-level",
    envvar=logs.ENV,
    show_default="WARNING",
    metavar="LEVEL",
    help="The lowest level of other programs' log lines on the terminal (DEBUG, "
    "INFO, WARNING, ERROR, CRITICAL); a job's log files "
    "(<run dir>/logs/job.log) get them from INFO up.",
)

# ConnectionError: a cluster address that does not answer (amr submit, amr jobs)
USER_ERRORS = (
    ConfigError,
    InputError,
    ModelError,
    EngineError,
    SandboxError,
    ModuleDBError,
    LeaseError,
    ReportError,
    ExportError,
    ConnectionError,
)


def user_errors(fn: Callable) -> Callable:
    """Show configuration, input and model errors as one clear message, exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def setup_logging(verbose: bool = VerboseOption, log_level: str = LogLevelOption) -> None:
    """The project's own log lines (``amr.*`` loggers) go to the terminal through rich, not through the handlers
    Ray and vLLM install on the root logger; other programs' lines from ``log_level`` up (``amr.logs``)."""
    project = logging.getLogger("amr")
    if not project.handlers:
        project.addHandler(TerminalHandler())
        project.propagate = False
    try:
        logs.configure(log_level, verbose)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None


class TerminalHandler(logging.Handler):
    """A project log line on the terminal, above any progress bars: ``HH:MM:SS message``, the level named from
    WARNING up; long lines are left to the terminal to wrap."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
            style = "bold red" if record.levelno >= logging.ERROR else "yellow" if level else None
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            line = f"{stamp} {level}{self.format(record)}"
            progress.console.print(line, style=style, soft_wrap=True, highlight=False, markup=False)
        except Exception:
            self.handleError(record)


@contextmanager
def shutting_down_ray() -> Iterator[None]:
    """Shut down the Ray this block started (not one that was running already), when the block ends."""
    started = not ray.is_initialized()
    try:
        yield
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def run_as_module(command: Callable | typer.Typer, name: str) -> None:
    """``python -m jobs.NAME ...`` (what a cluster job runs): the same as ``amr NAME ...``."""
    setup_logging(verbose=False, log_level=None)  # AMR_LOG_LEVEL
    if isinstance(command, typer.Typer):
        app = command
    else:
        app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
        app.command()(user_errors(command))
    app(sys.argv[1:], prog_name=f"python -m jobs.{name}")

"""Where log lines go. The job's own lines (the ``amr`` loggers) go to the terminal. Other programs' lines go
to the terminal only from WARNING up: those of Ray, Ray Data, Ray Serve, vLLM, transformers and the rest in
this process, and the Ray workers' output that Ray forwards to the driver (the vLLM engine in the teacher's
Serve replica, Ray Data's tasks, the sandbox). A job writes every line, its own and the others', to its run's
``logs/job.log``:

    with job_logs(run_dir):    # <run_dir>/logs/job.log, and logs/ray/<session>/: a link to Ray's own log files
        ...

``configure`` sets the terminal's level for the other programs' lines (``amr -v``, ``--log-level``,
``AMR_LOG_LEVEL``); a job started without it (the Python API) uses ``AMR_LOG_LEVEL`` or WARNING, and
nothing is filtered outside jobs. Errors and warnings always reach the terminal: a line is hidden only when
it says that it is below the level (``INFO ...``, vLLM's ``(EngineCore pid=..) INFO ...``, glog's ``I1204``,
a JSON record's ``"levelname": "INFO"``, a progress bar), or continues such a line of the same process; a
print of Ray Train's processes counts as INFO, and the warnings every CPU job meets (``EXPECTED``) as INFO.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ENV = "AMR_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("amr.logs")
workers = logging.getLogger("ray.workers")
"""The Ray workers' output lines, one record each, prefixed like Ray prints them: for the job's log files only."""
workers.propagate = False
workers.addHandler(logging.NullHandler())  # outside jobs: no "last resort" printing of these

_configured: int | None = None  # configure's level (the command line's), for the whole process
_terminal: int | None = None  # the level in force on the terminal for other programs' lines; None: all shown


class _JobFile(logging.FileHandler):
    """A job's ``job.log``, in its own format (``ray.init`` sets Ray's on every handler of the ``ray`` logger)."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8")
        self.formatter = logging.Formatter(FORMAT)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 (logging's name)
        pass


_files: list[_JobFile] = []  # the running jobs' log files, outermost first


def level_of(name: str | int | None) -> int:
    """A level's number from its name (any case) or number; None: ``AMR_LOG_LEVEL``, or WARNING."""
    name = name if name not in (None, "") else os.environ.get(ENV) or "WARNING"
    if isinstance(name, int) or str(name).isdigit():
        return int(name)
    if str(name).upper() not in LEVELS:
        raise ValueError(f"log level {name!r}: one of {', '.join(LEVELS)}")
    return logging.getLevelName(str(name).upper())


def configure(level: str | int | None = None, verbose: bool = False) -> int:
    """The terminal's level for other programs' lines, from now on: ``level`` (None: ``AMR_LOG_LEVEL``, or
    WARNING), INFO or lower when ``verbose``. The ``amr`` loggers show INFO, DEBUG too at level DEBUG."""
    global _configured, _terminal
    _configured = _terminal = min(level_of(level), logging.INFO) if verbose else level_of(level)
    logging.getLogger("amr").setLevel(min(_configured, logging.INFO))
    _sweep()
    return _configured


@contextmanager
def job_logs(run_dir: str | Path, name: str = "logs") -> Iterator[Path]:
    """A job's log files in ``<run_dir>/<name>/``: ``job.log`` (appended to: a resumed job's lines follow the
    first run's) gets every log line of this process from INFO up (DEBUG too at level DEBUG) and the Ray
    workers' output; ``ray/<session>`` links to the Ray session's own log files (raylet, Serve, Ray Data, each
    worker's stdout and stderr). A run directory in an object store keeps its logs in a local folder
    (``<tmp>/amr-logs/<scheme>/<bucket>/<path>/``), which the job's first line names. Jobs nest (``amr run``):
    an inner job's lines go to its own files and to the outer job's."""
    global _terminal
    folder = local_folder(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    before = _terminal
    _terminal = _configured if _configured is not None else level_of(None)
    handler = _JobFile(folder / "job.log")
    handler.setLevel(min(_terminal, logging.INFO))
    handler.stream.write(
        f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} job started (pid {os.getpid()}): {' '.join(sys.argv)}\n"
    )
    outermost = not _files
    _files.append(handler)
    _sweep()
    if outermost:
        where = f" (a local folder: {run_dir} is in an object store)" if "://" in str(run_dir) else ""
        log.info("logs: %s%s", folder, where)
    try:
        yield folder
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):  # the terminal gets the error from the caller
            handler.stream.write("".join(traceback.format_exception(exc)))
        raise
    finally:
        _link_ray_logs(folder)
        _files.remove(handler)
        for logger in _loggers():
            logger.removeHandler(handler)
        handler.close()
        _terminal = before


def local_folder(run_dir: str | Path, name: str = "logs") -> Path:
    """Where a run's logs go: ``<run_dir>/<name>``, or a local folder for an object-store URI."""
    if "://" not in str(run_dir):
        return Path(run_dir).expanduser() / name
    uri = urlparse(str(run_dir))
    return Path(tempfile.gettempdir(), "amr-logs", uri.scheme, uri.netloc, *uri.path.strip("/").split("/"), name)


def follow_ray() -> None:
    """After ``ray.init``: Ray's printer of the workers' output passes each line through the level and the
    running jobs' files, and loggers Ray made meanwhile get the same treatment as the others."""
    _sweep()
    try:  # Ray has no public hook for the worker lines it prints on the driver: wrap its printer, where Ray keeps it
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    dispatcher.handlers = [
        (name, _Printer(handler) if name == "ray_print_logs" and not isinstance(handler, _Printer) else handler)
        for name, handler in dispatcher.handlers
    ]
    _follow_ray_errors()
    for job in _files:
        _link_ray_logs(Path(job.baseFilename).parent)


def _follow_ray_errors() -> None:
    """The errors and warnings the cluster sends the driver (raylet's: a worker killed for memory, too many worker
    processes started) reach the terminal through ``print_to_stdstream``, looked up where Ray calls it, not through
    the workers' printer: the raylet's lines go through a ``_Printer`` too."""
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "follows_amr_logs", False):
        return
    printer = _Printer(lambda data: original(data, ignore_prefix=False))

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        if data.get("pid") == "raylet":
            printer(data)
        else:
            original(data, ignore_prefix)

    print_to_stdstream.follows_amr_logs = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


class _OtherPrograms(logging.Filter):
    """On a terminal handler: records of loggers other than ``amr`` pass from the terminal's level up, the
    warnings every CPU job meets (``EXPECTED``) counting as INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _terminal is None or record.name == "amr" or record.name.startswith("amr."):
            return True
        expected = record.levelno == logging.WARNING and EXPECTED.search(record.getMessage())
        return (logging.INFO if expected else record.levelno) >= _terminal


_OTHERS = _OtherPrograms()


def _loggers() -> list[logging.Logger]:
    return [
        logging.root,
        *(logger for logger in list(logging.root.manager.loggerDict.values()) if isinstance(logger, logging.Logger)),
    ]


def _sweep() -> None:
    """Every logger's terminal handlers get the level filter; the running jobs' files are added where records
    stop propagating: the root logger and every logger that does not propagate (``amr``, ``ray``, ``ray.data``,
    ``ray.serve``, ``transformers``, ...). Handlers added later (vLLM's and Serve's, set up as they are imported)
    get the same at once (``_watch_new_handlers``)."""
    _watch_new_handlers()
    for logger in _loggers():
        _route(logger)


def _route(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if (
            isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and not type(handler).__module__.startswith("_pytest")
            and _OTHERS not in handler.filters
        ):
            handler.addFilter(_OTHERS)
    if logger is logging.root or not logger.propagate:
        for job in _files:
            if job not in logger.handlers:
                logger.addHandler(job)


def _watch_new_handlers() -> None:
    """Route a logger again whenever a handler is added to it: a library that sets up its logging when it is
    imported (vLLM, through Ray Serve LLM) would otherwise print its INFO lines on the terminal."""
    if getattr(logging.Logger.addHandler, "routed", False):
        return
    add = logging.Logger.addHandler

    def add_handler(self: logging.Logger, handler: logging.Handler) -> None:
        add(self, handler)
        _route(self)

    add_handler.routed = True  # type: ignore[attr-defined]
    logging.Logger.addHandler = add_handler  # type: ignore[method-assign]


def _link_ray_logs(folder: Path) -> None:
    """``<folder>/ray/<session>``: a link to this Ray session's log directory (on this node)."""
    try:
        import ray

        if not ray.is_initialized():
            return
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    except Exception:  # Ray Client, or Ray's internals changed: job.log holds the workers' output anyway
        return
    link = folder / "ray" / logs.parent.name
    if not link.is_symlink() and not link.exists():
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(logs, target_is_directory=True)


_LEVEL_WORD = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_GLOG = re.compile(r"^\[?([DIWEF])\d{4} \d\d:\d\d:\d\d")
_JSON = re.compile(r'^\{.*?"levelname": "(\w+)"')
_INNER = re.compile(r"^\([^()]*pid=\d+\)\s*")  # vLLM's own prefix: (EngineCore pid=25230)
_ERROR = re.compile(r"^(Traceback \(most recent call last\)|(\w+\.)*\w*(Error|Exception)\b)")
_WARNING = re.compile(r"\w*Warning: ")
_PROGRESS = re.compile(r"\d+%\||\| *\d+/\d+ \[")
_NAMES = {
    "D": logging.DEBUG,
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
    "WARN": logging.WARNING,
    "FATAL": logging.CRITICAL,
}


def line_level(line: str) -> int | None:
    """The level a worker's output line states; None: it states none (a continued record, a print)."""
    text = _INNER.sub("", line, count=1)
    if _ERROR.match(text):
        return logging.ERROR
    if found := _JSON.match(text) or _LEVEL_WORD.search(text[:40]):
        name = found.group(1).upper()
        return _NAMES.get(name) or (logging.getLevelName(name) if name in LEVELS else None)
    if found := _GLOG.match(text):
        return _NAMES[found.group(1)]
    if _WARNING.search(text):
        return logging.WARNING
    if _PROGRESS.search(text):
        return logging.INFO
    return None


EXPECTED = re.compile(
    "|".join(
        (
            r"Triton is not installed|Model Runner V2 requires Triton|Triton not available",  # CPU: no Triton
            r"Inductor compilation was disabled|Reset SSM cache type",  # enforce_eager on CPU, below
            r"torch\.distributed\.reduce_op` is deprecated",  # inside vLLM's own imports
            r"is not found in LD_PRELOAD|NUMA binding|OMP_NUM_THREADS=\d+ is set",  # vLLM's CPU tuning hints
            r"Enforce eager set, disabling torch\.compile",  # the CPU configs' choice (docs/teachers.md)
            r"does not officially support disabling chunked prefill",  # CPU engines' choice (amr.serving)
            r"VLLM_CPU_NUM_OF_RESERVED_CPU is less than",  # 2 cores: none reserved, on purpose (local_cpu.yaml)
            r"Failed to query Ray Train Controller actor state",  # Ray Train's cleaner, while the controller ends
            r"replicas that have taken more than 30s to initialize|slow __init__ or reconfigure",  # a CPU engine start
            r"Failed to get queue length from Replica",  # Serve's router, while the replica's CPUs run the engine
            r"Failed to route request after \d+ attempts",  # requests beyond max_ongoing_requests wait their turn
            r"worker processes have been started on node",  # a streamed stage's tasks waiting on the teacher
            # Ray Data's check as a dataset starts, made while the last stage's tasks still hold their CPUs (the
            # job-long teacher, embedder and sandbox actors hold 5 of a local Ray's 8): it logs once, the stage runs
            r"The Ray cluster currently does not have any available CPUs",
            # a bf16 engine (dtype auto on a CPU with AMX/AVX512-BF16) casting the store's float32 weights, per layer
            r"Attempted to load weight \S+ with dtype torch\.float32 into parameter with dtype torch\.bfloat16",
            r"`ExecutionOptions\.exclude_resources` is deprecated",  # set by Ray Train's own DatasetManager
        )
    )
)
"""Warnings every CPU job meets and no setting of the project removes: for the job's log files only."""
QUIET_SOURCES = ("RayTrainWorker", "TrainController", "SplitCoordinator")
"""Ray Train's processes and the Ray Data actor that splits its workers' shards, whose unlevelled prints are progress
(trainer metrics, checkpoint reports, each shard's execution plan): INFO."""
CLEANER = "PlacementGroupCleaner"
"""Ray Train's watcher of a run's placement groups: all its output is INFO. Where a machine runs a second Ray (a test's,
another job's) its thread finds the cluster by "auto", stops with a 30-line traceback ("Found multiple active Ray
instances"), and the training goes on; the run's placement groups end with the job's Ray."""


class _Printer:
    """Ray's printer of the workers' output (``log_to_driver``), behind the level and the jobs' files. A line
    without a level of its own has its process's last one (the rest of a traceback, of a warning); the first
    line of a process without one counts as a warning, and raylet's lines (a worker killed for memory) as
    errors."""

    def __init__(self, show: Callable[[dict[str, Any]], None]):
        self.show = show
        self.last: dict[Any, int] = {}

    def __call__(self, data: dict[str, Any]) -> None:
        try:
            lines = data.get("lines") or []
            kept = self.lines(data, lines)
        except Exception:  # never lose the workers' output to a bug here
            kept = lines = data.get("lines") or []
        if len(kept) == len(lines):
            self.show(data)
        elif kept:
            self.show({**data, "lines": kept})

    def lines(self, data: dict[str, Any], lines: list[str]) -> list[str]:
        pid = data.get("pid")
        source = data.get("actor_name") or data.get("task_name") or ""
        where = f", ip={data['ip']}" if data.get("ip") and data.get("ip") != data.get("localhost") else ""
        prefix = f"({source}{' ' if source else ''}pid={pid}{where})"
        if len(self.last) > 10_000:
            self.last.clear()
        if pid == "autoscaler":  # Ray prints its events only; the rest is in the session's monitor logs
            return lines
        kept = []
        for line in lines:
            if pid == "raylet":
                level = logging.INFO if EXPECTED.search(line) else logging.ERROR
            elif source.startswith(CLEANER):
                level = logging.INFO
            else:
                level = line_level(line)
                if level is None:
                    unlevelled = logging.INFO if source.startswith(QUIET_SOURCES) else logging.WARNING
                    level = self.last.get(pid, unlevelled)
                elif level == logging.WARNING and EXPECTED.search(line):
                    level = logging.INFO
                self.last[pid] = level
            if _files:
                workers.log(level, "%s %s", prefix, line)
            if _terminal is None or level >= _terminal:
                kept.append(line)
        return kept

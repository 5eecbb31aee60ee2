"""A pool of warm check servers: run (code, test) pairs in parallel, one record per pair."""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

from amr.config import SandboxConfig
from amr.sandbox.isolation import LEVELS, Launch, SandboxError, launch
from amr.sandbox.worker import descendants

RECORD_FIELDS = ("status", "reason", "duration_s", "stdout", "stderr", "isolation")
START_TIMEOUT_S = 30.0
GRACE_S = 15.0  # beyond the check's own deadline: killing leftovers and wiping the work directory


class Check(TypedDict, total=False):
    code: str  # required
    test: str | None  # plain statements, or check()/test_*() functions that are called
    entry_point: str | None  # the function passed to check(candidate)


class SandboxWarning(RuntimeWarning):
    """The sandbox runs below its strongest isolation level."""


class Sandbox:
    """Warm check servers at the strongest isolation level that works here, at least ``require``.

    ``run(checks)`` returns one record per check, in order: ``status`` (passed, failed, error,
    timeout, memory, killed), ``reason``, ``duration_s``, truncated ``stdout``/``stderr`` and
    ``isolation`` (the level in force). A server that dies or hangs is replaced and its check is
    recorded as killed; a SandboxError means the sandbox itself cannot run.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        size = self.config.workers or os.cpu_count() or 1
        self.level, first = self._first_server()
        self._idle: queue.Queue[_Server] = queue.Queue()
        self._idle.put(first)
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="sandbox")
        try:
            for server in self._executor.map(lambda _: self._start(), range(size - 1)):
                self._idle.put(server)
        except BaseException:
            self.close()
            raise

    def run(self, checks: Iterable[Check]) -> list[dict[str, Any]]:
        return list(self._executor.map(self._check, checks))

    def server_pids(self) -> list[int]:
        """Process ids of the idle check servers (under bwrap: the outer bwrap processes)."""
        return [server.proc.pid for server in list(self._idle.queue)]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        while not self._idle.empty():
            self._idle.get_nowait().close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _first_server(self) -> tuple[str, _Server]:
        errors = []
        require = self.config.require or LEVELS[0]
        allowed = LEVELS[LEVELS.index(require) :]
        for level in reversed(allowed):
            try:
                server = _Server(launch(level, self.config))
            except SandboxError as exc:
                errors.append(f"{level}: {exc}")
                continue
            if level != LEVELS[-1]:
                warnings.warn(
                    f"sandbox runs at isolation level {level!r}, not {LEVELS[-1]!r} "
                    f"({'; '.join(errors)}); set sandbox.require to refuse",
                    SandboxWarning,
                    stacklevel=3,
                )
            return level, server
        raise SandboxError(f"no isolation level at least {require!r} works here: " + "; ".join(errors))

    def _start(self) -> _Server:
        return _Server(launch(self.level, self.config))

    def _check(self, check: Check) -> dict[str, Any]:
        request = {
            "code": check["code"],
            "test": check.get("test") or "",
            "entry_point": check.get("entry_point"),
            "timeout_s": self.config.timeout_s,
            "memory_mb": self.config.memory_mb,
        }
        if not isinstance(request["code"], str) or not isinstance(request["test"], str):
            raise TypeError(
                f"a check's code and test must be strings, got {type(request['code']).__name__} "
                f"and {type(request['test']).__name__}"
            )
        server = self._idle.get()
        start = time.monotonic()
        try:
            record = server.check(request, start + self.config.timeout_s + GRACE_S)
        except BaseException:
            server.close()
            self._idle.put(self._start())
            raise
        if record is None:
            why = server.failure()
            server.close()
            server = self._start()
            record = {
                "status": "killed",
                "reason": f"the check server was lost ({why}) and replaced",
                "duration_s": round(time.monotonic() - start, 4),
                "stdout": "",
                "stderr": "",
            }
        self._idle.put(server)
        return {**record, "isolation": self.level}


class _Server:
    """One check server process and its reply stream."""

    def __init__(self, spec: Launch):
        self.spec = spec
        self._stderr = tempfile.TemporaryFile()
        self._buffer = bytearray()
        try:
            self.proc = subprocess.Popen(
                spec.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=spec.env,
                cwd=spec.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            self._cleanup()
            raise SandboxError(f"cannot start {spec.argv[0]}: {exc}") from exc
        hello = self._reply(time.monotonic() + START_TIMEOUT_S)
        if not hello or not hello.get("ready"):
            why = self.failure()
            self.close()
            raise SandboxError(why)

    def check(self, request: dict[str, Any], deadline: float) -> dict[str, Any] | None:
        """The server's record, or None when it died or missed ``deadline``."""
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        return self._reply(deadline)

    def _reply(self, deadline: float) -> dict[str, Any] | None:
        fd = self.proc.stdout.fileno()
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:  # linear in the reply's size, however large
            searched = len(self._buffer)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return json.loads(line)

    def failure(self) -> str:
        """Why the server is gone: its exit status and the end of its stderr."""
        code = self.proc.poll()
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        state = "no answer in time" if code is None else f"exit status {code}"
        return state + (": " + " | ".join(tail) if tail else "")

    def close(self) -> None:
        """Kill the server and, at the process level, every process its checks left."""
        if self.proc.poll() is None:
            stray = descendants(self.proc.pid) if self.spec.level == "process" else set()
            for pid in stray:
                _signal(pid, signal.SIGSTOP)  # frozen, nothing forks while we kill
            _signal(-self.proc.pid, signal.SIGKILL)
            for pid in stray:
                _signal(pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        self._stderr.close()
        if self.spec.scratch:
            shutil.rmtree(self.spec.scratch, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(-pid, sig) if pid < 0 else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

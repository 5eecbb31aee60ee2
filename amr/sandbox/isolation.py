"""How a check server is started at each isolation level (host side).

Levels, strongest first:

- ``bwrap``: bubblewrap with new user, pid, net, ipc, uts (and cgroup) namespaces, no further user
  namespaces, a read-only /usr (plus the interpreter's prefix and configured paths), a fresh /proc and
  /dev, a private size-limited tmpfs as the only writable place, no host home, project files or
  environment, ``--die-with-parent`` and ``--new-session``; rlimits per check inside.
- ``process``: the server runs on the host with a clean environment in a private temporary directory;
  rlimits per check, the deadline, and the kill of every descendant still hold, but files and the
  network are reachable.

Run as root, the server is started as uid/gid 65534 (nobody) without supplementary groups: the kernel exempts root
from RLIMIT_NPROC, and nobody cannot read root's files. util-linux's ``setpriv`` drops the credentials, not
``subprocess.Popen(user=...)``: Popen then forks the whole job process (vfork is not safe with a uid change), and
gRPC's fork handlers in a Ray driver print a line for each start.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amr.config import SandboxConfig

LEVELS = ("process", "bwrap")  # weakest first
NOBODY = 65534
WORKER_SOURCE = (Path(__file__).parent / "worker.py").read_text()
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (as opposed to a check that fails)."""


@dataclass
class Launch:
    """What starts one check server: argv (as root, it starts by dropping to nobody), environment, working
    directory."""

    level: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    scratch: str | None = None  # host directory to delete when the server is gone


def interpreter(config: SandboxConfig) -> str:
    if config.python:
        if not os.access(config.python, os.X_OK):
            raise SandboxError(f"sandbox.python: {config.python} is not an executable interpreter")
        return config.python
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys._base_executable


def launch(level: str, config: SandboxConfig) -> Launch:
    python = interpreter(config)
    as_root = os.geteuid() == 0
    user = _as_nobody() if as_root else []
    limits = {key: getattr(config, key) for key in ("max_processes", "max_file_mb", "max_open_files", "output_bytes")}
    if level == "bwrap":
        bwrap = shutil.which(config.bwrap)
        if bwrap is None:
            raise SandboxError(f"sandbox.bwrap: {config.bwrap!r} not found (install bubblewrap)")
        settings = {"root": "/tmp", "own_pid_namespace": True, "limits": limits}
        argv = [*user, bwrap, *_bwrap_args(python, config), python, "-I", "-c", WORKER_SOURCE, json.dumps(settings)]
        return Launch(level, argv, dict(ENV), "/")
    scratch = tempfile.mkdtemp(prefix="amr-sandbox-")
    if as_root:
        os.chown(scratch, NOBODY, NOBODY)
    settings = {"root": scratch, "own_pid_namespace": False, "limits": limits}
    env = {**ENV, "HOME": scratch, "TMPDIR": scratch}
    argv = [*user, python, "-I", "-c", WORKER_SOURCE, json.dumps(settings)]
    return Launch(level, argv, env, scratch, scratch)


def _as_nobody() -> list[str]:
    """The argv prefix that runs a command as nobody, without supplementary groups."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxError("setpriv not found (install util-linux): run as root, the sandbox drops to nobody with it")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def _bwrap_args(python: str, config: SandboxConfig) -> list[str]:
    args = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(config.disk_mb << 20), "--tmpfs", "/tmp"]
    prefix = Path(os.path.realpath(python)).parent.parent
    binds = [str(prefix)] if not str(prefix).startswith("/usr") else []
    for path in [*binds, *config.ro_binds]:  # after the tmpfs, which would hide a bind under /tmp
        if not os.path.exists(path):
            raise SandboxError(f"sandbox.ro_binds: {path} does not exist")
        args += ["--ro-bind", path, path]
    args += ["--clearenv", "--chdir", "/tmp"]
    for key, value in {**ENV, "HOME": "/tmp", "TMPDIR": "/tmp"}.items():
        args += ["--setenv", key, value]
    return args

"""The check server that runs inside the isolation. Standard library only; the job never imports it.

It is started as ``python -I -c <this file's source> <settings JSON>`` and speaks JSON lines: one
check per line on stdin, one record per line on stdout. Each check runs in a child forked from this
warm interpreter (common modules already imported): the child starts a new session, sets its rlimits,
runs the code and then the test in a fresh work directory, and writes its verdict to fd 3. The server
enforces the wall-clock deadline, kills every process the check left behind (it is a child subreaper,
so daemons come back to it), wipes the work directory, and only then answers.

Verdicts resist the usual ways generated code fakes a pass (an early ``sys.exit``/``os._exit``,
patched builtins, printed "PASS" lines); a program written to forge the verdict from inside its own
process is out of scope: the isolation protects the host, not the verdict from a deliberate adversary.
"""

import builtins
import ctypes
import json
import os
import re
import resource
import select
import shutil
import signal
import sys
import time
import traceback

for _name in (
    "bisect",
    "cmath",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "typing",
):
    __import__(_name)  # warm: every check forks with these already imported

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
VERDICT_FD = 3
HARNESS_CRASH = 70
VERDICT_CAP = 1 << 16


# ---------------------------------------------------------------- in the child: run code, then test


def _verdict(status, reason=""):
    try:
        os.write(VERDICT_FD, (json.dumps({"status": status, "reason": reason}) + "\n").encode())
    except OSError:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)


def _describe(exc, source, filename):
    """``Type: message``, plus where it was raised in ``filename`` when that is known."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    lines = source.splitlines()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename and 0 < (frame.lineno or 0) <= len(lines):
            return f"{text} at {filename}:{frame.lineno}: {lines[frame.lineno - 1].strip()}"
    return text


def _run(code, test, entry_point):
    saved_builtins = dict(builtins.__dict__)
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
    except MemoryError:
        namespace.clear()
        _verdict("memory", "MemoryError while running the code")
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are verdicts too
        _verdict("error", _describe(exc, code, "solution.py") + " (while running the code)")
    builtins.__dict__.clear()  # undo patched builtins before the test judges the code
    builtins.__dict__.update(saved_builtins)
    namespace["__builtins__"] = builtins
    try:
        exec(compile(test, "test.py", "exec"), namespace)
        checks = sorted(
            (
                f
                for name, f in namespace.items()
                if callable(f)
                and getattr(getattr(f, "__code__", None), "co_filename", "") == "test.py"
                and (name == "check" or name.startswith("test_"))
            ),
            key=lambda f: f.__code__.co_firstlineno,
        )
        for check in checks:
            if check.__code__.co_argcount:
                if not entry_point or entry_point not in namespace:
                    _verdict(
                        "error",
                        f"test.py: {check.__name__}() takes the function under test, "
                        f"but the code defines no entry point {entry_point!r}",
                    )
                check(namespace[entry_point])
            else:
                check()
    except MemoryError:
        namespace.clear()
        _verdict("memory", "MemoryError during the test")
    except SyntaxError as exc:
        _verdict("error", f"SyntaxError in test.py:{exc.lineno}: {exc.msg}")
    except BaseException as exc:  # noqa: BLE001
        _verdict("failed", _describe(exc, test, "test.py"))
    _verdict("passed")


def _process_count(uid):
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _prctl(option, value):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value})")


def _child(check, limits, work, out_path, err_path, verdict_w):
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a lost server takes its check along
    null = os.open("/dev/null", os.O_RDONLY)
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((null, 0), (out, 1), (err, 2), (verdict_w, VERDICT_FD)):
        os.dup2(fd, target)
    for fd in [int(fd) for fd in os.listdir("/proc/self/fd")]:
        if fd > VERDICT_FD:
            try:
                os.close(fd)
            except OSError:
                pass
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores both; a limit should end the check
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(work)
    cpu = int(check["timeout_s"]) + 1
    memory = check["memory_mb"] << 20
    procs = _process_count(os.getuid()) + limits["max_processes"]
    for kind, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_NPROC, (procs, procs)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_FSIZE, (limits["max_file_mb"] << 20,) * 2),
        (resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2),
    ):
        resource.setrlimit(kind, value)
    _run(check["code"], check.get("test") or "", check.get("entry_point"))


# ---------------------------------------------------------------- in the server


def descendants(root):
    """Pids of the descendants of process ``root`` (zombies included), from /proc."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def _reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _kill_all(own_pid_namespace):
    """SIGKILL everything the check started, wherever it went, and reap it."""
    if own_pid_namespace:
        try:
            os.kill(-1, signal.SIGKILL)  # all in this pid namespace but init and us, atomically
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while True:
        pids = descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap()
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not kill the check's processes: {sorted(pids)[:10]}")
        time.sleep(0.001)


def _mount_points(root):
    """Mount points below ``root`` (read-only binds under the sandbox's /tmp), from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        points = {re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) for line in f}
    return {point for point in points if point.startswith(root.rstrip("/") + "/")}


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        for parent, dirs, _ in os.walk(path):
            for name in dirs:
                if not os.path.islink(os.path.join(parent, name)):
                    os.chmod(os.path.join(parent, name), 0o700)
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _wipe(root, mounts):
    """Empty ``root``: whatever the check wrote, however it set permissions; the ``mounts`` below it and the
    directories above them stay (emptied of everything else)."""
    os.chmod(root, 0o700)
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if path in mounts:
            continue
        if any(point.startswith(path + "/") for point in mounts) and not os.path.islink(path):
            _wipe(path, mounts)
        else:
            _remove(path)


def _captured(path, cap):
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return ""
    text = data[:cap].decode("utf-8", "replace")
    return text + f"\n[... {size - cap} more bytes]" if size > cap else text


def _classify(timed_out, verdict, wstatus, rusage, check, limits):
    if timed_out:
        return "timeout", f"wall-clock limit of {check['timeout_s']:g} s"
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        cpu_s = rusage.ru_utime + rusage.ru_stime
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= int(check["timeout_s"]) + 1):
            return "timeout", f"CPU time limit of {int(check['timeout_s']) + 1} s"
        if sig == signal.SIGXFSZ:
            return "killed", f"file size limit of {limits['max_file_mb']} MiB (stdout, stderr or a file)"
        if sig == signal.SIGSEGV:
            return "killed", "SIGSEGV: segmentation fault (a C-level crash or stack overflow)"
        return "killed", f"killed by {signal.Signals(sig).name}"
    code = os.WEXITSTATUS(wstatus)
    lines = [line for line in verdict.decode("utf-8", "replace").splitlines() if line.strip()]
    if code == 0 and lines:
        try:
            record = json.loads(lines[-1])
            return record["status"], record["reason"]
        except (ValueError, KeyError, TypeError):
            return "error", "unreadable verdict"
    if code == HARNESS_CRASH:
        return "error", "the harness failed before the code ran (limits too low?)"
    return "error", f"exited with code {code} before the test finished (os._exit or exec in the code or test)"


def run_check(check, settings):
    limits, root = settings["limits"], settings["root"]
    work = os.path.join(root, "work")
    out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
    os.mkdir(work, 0o700)
    verdict_r, verdict_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(verdict_r)
            _child(check, limits, work, out_path, err_path, verdict_w)
        finally:
            os._exit(HARNESS_CRASH)
    os.close(verdict_w)
    pidfd = os.pidfd_open(pid)
    verdict, timed_out, watch = b"", False, [pidfd, verdict_r]
    deadline = start + check["timeout_s"]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready = select.select(watch, [], [], remaining)[0]
        if verdict_r in ready:
            chunk = os.read(verdict_r, VERDICT_CAP)
            verdict += chunk[: max(0, VERDICT_CAP - len(verdict))]
            if not chunk:
                watch.remove(verdict_r)
        if pidfd in ready:
            break
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, wstatus, rusage = os.wait4(pid, 0)
    duration = time.monotonic() - start
    _kill_all(settings["own_pid_namespace"])
    os.set_blocking(verdict_r, False)
    try:
        while len(verdict) < VERDICT_CAP and (chunk := os.read(verdict_r, VERDICT_CAP)):
            verdict += chunk
    except BlockingIOError:
        pass
    os.close(verdict_r)
    os.close(pidfd)
    status, reason = _classify(timed_out, verdict, wstatus, rusage, check, limits)
    record = {
        "status": status,
        "reason": reason,
        "duration_s": round(duration, 4),
        "stdout": _captured(out_path, limits["output_bytes"]),
        "stderr": _captured(err_path, limits["output_bytes"]),
    }
    _wipe(root, settings["mounts"])
    return record


def main():
    settings = json.loads(sys.argv[1])
    # the sandbox's own mounts, read once: a mount a check might make is not among those the wipe keeps
    settings["mounts"] = _mount_points(settings["root"])
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a check come back here, to be killed
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the job that started it
    requests, replies = sys.stdin.buffer, sys.stdout
    sys.stdout = sys.stderr  # nothing but records on the reply stream
    replies.write(json.dumps({"ready": True, "python": sys.version.split()[0]}) + "\n")
    replies.flush()
    for line in requests:
        replies.write(json.dumps(run_check(json.loads(line), settings)) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()

"""The hostile corpus: each program must be contained, and its record must say why.

The whole corpus runs once through one bwrap sandbox (module fixture); each case then checks its
own record, and the last tests check that the host and the job came through unharmed: a sentinel
process of the sandbox's uid alive, a canary file intact, no process left over, the pool working.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from amr.config import SandboxConfig
from amr.sandbox import Sandbox
from amr.sandbox.worker import descendants

SECRET = f"amr-secret-{uuid.uuid4().hex}"
os.environ["AMR_TEST_SECRET"] = SECRET  # set before any server starts: must not reach the code
CANARY = Path(__file__)
HOST_TMP_NAME = f"amr-escape-{uuid.uuid4().hex}"
CONFIG = SandboxConfig(
    require="bwrap",
    workers=2,
    timeout_s=3,
    memory_mb=256,
    max_processes=16,
    max_file_mb=4,
    disk_mb=16,
    output_bytes=1024,
)


@dataclass
class Case:
    name: str
    code: str
    status: str
    reason: str = ""  # regex the record's reason must match
    test: str = ""
    stdout: str | None = None  # the whole of stdout, when the program prints its own verdict


def listener() -> tuple[socket.socket, list]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    accepted: list = []

    def serve():
        while sock.fileno() != -1:
            try:
                accepted.append(sock.accept())
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return sock, accepted


LISTENER, ACCEPTED = listener()
PORT = LISTENER.getsockname()[1]

CORPUS = [
    Case("fork bomb", "import os\nwhile True:\n    os.fork()", "error", "BlockingIOError"),
    Case(
        "fork bomb of sleepers",
        "import os, time\nfor _ in range(10_000):\n    if os.fork() == 0:\n        time.sleep(1000)",
        "error",
        "BlockingIOError",
    ),
    Case(
        "thread bomb",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, "
        "args=(1000,), daemon=True).start()",
        "error",
        "can't start new thread",
    ),
    Case("infinite loop", "while True:\n    pass", "timeout", "wall-clock limit of 3 s"),
    Case(
        "busy loop ignoring signals",
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, "
        "signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM, signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\n"
        "while True:\n    pass",
        "timeout",
        "limit",
    ),
    Case("sleep forever", "import time\ntime.sleep(10**6)", "timeout", "wall-clock"),
    Case("deep recursion", "def f(n):\n    return f(n + 1)\nf(0)", "error", "RecursionError"),
    Case(
        "C stack overflow",
        "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return list(map(f, [n]))\nf(0)",
        "killed",
        "SIGSEGV",
    ),
    Case("memory bomb", "x = bytearray(8 * 1024**3)", "memory", "MemoryError"),
    Case("growing memory bomb", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "memory"),
    Case("memory bomb in the test", "def f():\n    return [0] * 10**9", "memory", "during the test", "f()"),
    Case(
        "disk filler, one file",
        "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)",
        "killed",
        "file size limit of 4 MiB",
    ),
    Case(
        "disk filler, many files",
        "i = 0\nwhile True:\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * 3 * 2**20)\n    i += 1",
        "error",
        "No space left on device",
    ),
    Case("huge stdout", "while True:\n    print('x' * 1000)", "killed", "file size limit"),
    Case("huge stderr", "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)", "killed", "file size limit"),
    Case("read /etc/shadow", "print(open('/etc/shadow').read())", "error", "FileNotFoundError.*/etc/shadow"),
    Case("read the home dir", "import os\nprint(os.listdir('/root'))", "error", "FileNotFoundError"),
    Case("read the project's files", f"print(open({str(CANARY)!r}).read())", "error", "FileNotFoundError"),
    Case(
        "environment secrets",
        # decided inside the sandbox, printed as a short verdict: no output cap can hide a leak
        f"import glob, os\nneedles = [{SECRET[:15]!r} + {SECRET[15:]!r}, 'AMR_TEST_' + 'SECRET']\n"
        "texts = {'os.environ': repr(dict(os.environ)).encode()}\nfor p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        texts[p] = open(p, 'rb').read()\n    except OSError:\n        pass\n"
        "print('own environ read:', '/proc/self/environ' in texts)\n"
        "print('leaks:', sorted(w for w, t in texts.items() for n in needles if n.encode() in t))",
        "passed",
        stdout="own environ read: True\nleaks: []\n",
    ),
    Case("write into the system", "open('/usr/amr-evil', 'w').write('x')", "error", "Read-only file system"),
    Case("delete a host file", f"import os\nos.remove({str(CANARY)!r})", "error", "FileNotFoundError"),
    Case(
        "write to the host's /tmp",
        f"open('/tmp/{HOST_TMP_NAME}', 'w').write('x')\ndef f():\n    return 1",
        "passed",
        test="assert f() == 1",
    ),
    Case(
        "connect to 127.0.0.1",
        f"import socket\nsocket.create_connection(('127.0.0.1', {PORT}), timeout=2)",
        "error",
        "ConnectionRefusedError",
    ),
    Case(
        "connect out",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
        "error",
        "Network is unreachable",
    ),
    Case("resolve a name", "import socket\nsocket.getaddrinfo('pypi.org', 443)", "error", "gaierror"),
    Case(
        "kill the parent",
        "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(5)",
        "killed",
        "check server was lost",
    ),
    Case(
        "kill every process",
        "import os, signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(5)",
        "killed",
        "check server was lost",
    ),
    Case("os._exit(0) before the test", "import os\nos._exit(0)", "error", "exited with code 0"),
    Case("sys.exit(0) in the code", "import sys\nsys.exit(0)", "error", "SystemExit"),
    Case("sys.exit(0) in the test", "def f():\n    raise SystemExit(0)", "failed", "SystemExit", "f()"),
    Case(
        "patched builtins fake a pass",
        "import builtins\nbuiltins.len = lambda x: 42\nbuiltins.sorted = lambda x: [1, 2]\ndef f(x):\n    return x",
        "failed",
        "AssertionError",
        "assert len(f([1])) == 42\nassert sorted(f([2, 1])) == [1, 2]",
    ),
    Case(
        "patched AssertionError",
        "import builtins\nclass Nope(Exception):\n    pass\nbuiltins.AssertionError = Nope\ndef f():\n    return 1",
        "failed",
        "AssertionError",
        "assert f() == 2",
    ),
    Case(
        "printed fake verdict",
        'print(\'{"status": "passed", "reason": ""}\')\nraise ValueError(\'no\')',
        "error",
        "ValueError: no",
    ),
    Case("ctypes segfault", "import ctypes\nctypes.string_at(0)", "killed", "SIGSEGV"),
    Case(
        "daemon outliving the run",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(1000)\n    os._exit(0)\ndef f():\n    return 1",
        "passed",
        test="assert f() == 1",
    ),
    Case(
        "shell daemon",
        "import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 1000 &'], start_new_session=True)",
        "passed",
    ),
    Case(
        "signal handler exits 0",
        "import os, signal\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.alarm(1)\nwhile True:\n    pass",
        "error",
        "exited with code 0",
    ),
    Case(
        "/proc snooping",
        "import os\ncmdlines = [open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit()]\n"
        "print('own cmdline read:', any(b'python' in c for c in cmdlines))\n"
        "print('host processes seen:', sorted({w for c in cmdlines for w in ('pytest', 'ray', 'raylet', 'gcs_server') "
        "if w.encode() in c}))",
        "passed",
        stdout="own cmdline read: True\nhost processes seen: []\n",
    ),
    Case(
        "symlink escape",
        "import os\nos.symlink('/root', 'r')\nos.symlink('/proc/1/root/root', 'r2')\n"
        "os.symlink('/', 'everything')\nos.listdir('r2')",
        "error",
        "FileNotFoundError",
    ),
    Case(
        "permission trap for the cleanup",
        "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\n"
        "os.chmod('a/b', 0)\nos.chmod('a', 0)\nos.chmod('.', 0)\nos.chmod('/tmp', 0)",
        "passed",
    ),
    Case(
        "file descriptor exhaustion",
        "files = [open('/dev/null') for _ in range(10**5)]",
        "error",
        "Too many open files",
    ),
    Case(
        "raise its own limits",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))",
        "error",
        "ValueError",
    ),
    Case(
        "new user namespace",
        "import ctypes\nrc = ctypes.CDLL(None).unshare(0x10000000)",
        "passed",
        test="assert rc == -1",
    ),
    Case("read stdin", "input()", "error", "EOFError"),
]


@pytest.fixture(scope="module")
def sentinel():
    """A host process with the sandbox's uid: code that kills 'everything' must not reach it."""
    user = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    proc = subprocess.Popen(["sleep", "600"], **user)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def corpus(sentinel):
    with Sandbox(CONFIG) as sandbox:
        records = dict(zip((c.name for c in CORPUS), sandbox.run({"code": c.code, "test": c.test} for c in CORPUS)))
        yield sandbox, records


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30 and len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_contained(corpus, case: Case):
    record = corpus[1][case.name]
    assert (record["status"], record["isolation"]) == (case.status, "bwrap"), record
    assert re.search(case.reason, record["reason"]), record
    assert record["duration_s"] < CONFIG.timeout_s + 2, record
    if case.stdout is not None:
        assert record["stdout"] == case.stdout, record
    for stream in ("stdout", "stderr"):
        assert len(record[stream]) <= CONFIG.output_bytes + 40, record


def test_huge_output_is_truncated(corpus):
    record = corpus[1]["huge stdout"]
    assert record["stdout"].startswith("x" * 1000) and "more bytes]" in record["stdout"]


def test_host_and_job_unharmed(corpus, sentinel):
    sandbox, _ = corpus
    assert sentinel.poll() is None, "a process of the sandbox's uid on the host was killed"
    assert CANARY.is_file() and not Path("/tmp", HOST_TMP_NAME).exists()
    assert ACCEPTED == [], "the sandbox reached a listener on the host's 127.0.0.1"
    # under each bwrap: its pid-namespace init and the check server, nothing else survived
    pids = sandbox.server_pids()
    assert len(pids) == CONFIG.workers and all(len(descendants(pid)) == 2 for pid in pids)
    records = sandbox.run(
        [
            {
                "code": "import os\nprint(sorted(os.listdir('/tmp')))\ndef f(x):\n    return 2 * x",
                "test": "assert f(2) == 4",
            }
        ]
        * 4
    )
    assert [r["status"] for r in records] == ["passed"] * 4
    assert {r["stdout"] for r in records} == {"['stderr', 'stdout', 'work']\n"}, "a check saw an earlier check's files"


# ---------------------------------------------------------------- on a live Ray cluster: checks, distill, eval

DRIVER = """
import json, sys
import ray
from amr.config import ConfigError, RayConfig, SandboxConfig
from amr.runtime import init_ray
from amr.sandbox.stage import SandboxActors

init_ray(RayConfig(address=sys.argv[1]))
checks, out = json.loads(sys.argv[2]), {}
for name, settings in {"process": {"require": "process"}, "elsewhere": {"resource": "nowhere"}}.items():
    try:
        SandboxActors(SandboxConfig(**settings)).close()
    except ConfigError as exc:
        out[name] = str(exc)
with SandboxActors(SandboxConfig(actors=2, workers=1, timeout_s=5, memory_mb=256)) as sandbox:
    out["actor_nodes"] = ray.get(
        [a.__ray_call__.remote(lambda actor: ray.get_runtime_context().get_node_id()) for a in sandbox.actors]
    )
    out["records"] = sandbox.run(checks)
out["nodes"] = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
print(json.dumps(out))
"""


@dataclass
class Attack:
    name: str
    code: str  # formatted with the cluster's ports and the target directories
    reason: str  # what a check's record says


ATTACKS = [
    Attack(
        "Ray dashboard",
        "urllib.request.urlopen('http://127.0.0.1:{dashboard}/api/version', timeout=3)",
        "URLError.*Connection refused",
    ),
    Attack(
        "Job API submits a job",
        "urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{dashboard}/api/jobs/', method='POST', "
        "data=json.dumps({{'entrypoint': 'touch {targets}/run/job-ran'}}).encode(), "
        "headers={{'Content-Type': 'application/json'}}), timeout=3)",
        "URLError.*Connection refused",
    ),
    Attack("GCS", "socket.create_connection(('127.0.0.1', {gcs}), timeout=3)", "ConnectionRefusedError"),
    Attack(
        "cloud metadata service",
        "socket.create_connection(('169.254.169.254', 80), timeout=3)",
        "Network is unreachable",
    ),
    Attack("write the run directory", "open('{targets}/run/pwned', 'w').write('x')", "FileNotFoundError"),
    Attack("write the module table", "open('{targets}/modules/pwned', 'w').write('x')", "FileNotFoundError"),
    Attack("write the model store", "open('{targets}/models/pwned', 'w').write('x')", "FileNotFoundError"),
]
"""Each is what a check or a student's solution tries; on a cluster the Ray user owns the shared volume, so the
targets here are writable by the sandbox's uid too: only the sandbox's own file system keeps them out."""


@pytest.fixture(scope="module")
def live_cluster():
    """A Ray cluster on 127.0.0.1 with its dashboard and Job API: a head without CPUs, a CPU node (where a GPU
    node would be) and a sandbox node offering 2 units of the sandbox resource and no CPU, which does not see
    the shared storage (``cluster.shared``, the jobs' run directories) as the others do."""
    from tests.test_cluster import Cluster

    root = Path(tempfile.mkdtemp(prefix="amr-hc-", dir="/tmp"))  # short: Ray's socket paths live under it
    cluster = Cluster(root)
    cluster.shared = root / "shared"
    cluster.shared.mkdir()
    try:
        sandbox_node = f"--resources={json.dumps({SandboxConfig().resource: 2})}"
        cluster.add_workers({"cpus": 2}, {"cpus": 0, "hide": cluster.shared, "options": [sandbox_node]})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def targets():
    """The run directory, module table and model store an attack goes for, writable by anyone (outside /tmp,
    which the sandbox replaces)."""
    root = Path(tempfile.mkdtemp(prefix="amr-hostile-", dir="/var/tmp"))
    for name in ("run", "modules", "models"):
        (root / name).mkdir()
        (root / name).chmod(0o777)
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def attack_code(attack: Attack, cluster, targets: Path) -> str:
    code = attack.code.format(dashboard=cluster.dashboard, gcs=cluster.gcs, targets=targets)
    return f"import json, socket, urllib.request\n{code}\n"


def run_driver(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python ARGV`` in this checkout, as a job's driver on the live cluster would run."""
    from tests.test_cluster import ENV

    return subprocess.run(
        [sys.executable, *argv],
        env={**ENV, "PYTHONPATH": str(Path(__file__).parent.parent)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_checks_on_a_live_cluster_run_on_sandbox_nodes_and_reach_nothing(live_cluster, targets):
    checks = [{"code": attack_code(a, live_cluster, targets)} for a in ATTACKS]
    done = run_driver("-c", DRIVER, f"127.0.0.1:{live_cluster.gcs}", json.dumps(checks))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    sandbox_nodes = {node for node, resources in out["nodes"].items() if resources.get(SandboxConfig().resource)}
    assert len(out["nodes"]) == 3 and len(sandbox_nodes) == 1
    assert set(out["actor_nodes"]) == sandbox_nodes and len(out["actor_nodes"]) == 2, "an actor off the sandbox node"
    assert "sandbox.unsafe_process_isolation_on_cluster: true" in out["process"]
    assert (
        "sandbox.resource: no node of this 3-node Ray cluster offers the custom resource 'nowhere'" in out["elsewhere"]
    )
    for attack, record in zip(ATTACKS, out["records"]):
        assert (record["status"], record["isolation"]) == ("error", "bwrap"), (attack.name, record)
        assert re.search(attack.reason, record["reason"]), (attack.name, record)
    assert sorted(p.name for p in targets.rglob("*")) == ["models", "modules", "run"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_distill_on_a_cluster_refuses_process_isolation_before_any_work_and_runs_under_bwrap(live_cluster, tmp_path):
    from tests.support.scripted_teacher import ScriptedTeacher
    from tests.test_distill import config, script

    with ScriptedTeacher(script) as scripted:
        cfg = config(tmp_path, scripted, method="direct", run_dir=str(live_cluster.shared / "distill"))
        cfg.ray.address = f"127.0.0.1:{live_cluster.gcs}"
        job = tmp_path / "job.yaml"
        job.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        refused = run_driver("-m", "jobs.distill", "--config", str(job), "--set", "sandbox.require=process")
        assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
        assert "sandbox.unsafe_process_isolation_on_cluster: true" in refused.stdout
        assert not Path(cfg.run_dir).exists() and scripted.requests == [], "work began before the refusal"
        done = run_driver("-m", "jobs.distill", "--config", str(job))
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    manifest = json.loads(Path(cfg.run_dir, "manifest.json").read_text())
    assert manifest["config"]["sandbox"]["require"] == "bwrap"
    # the instructions' tests ran: the direct answers of add_three and count_evens call helpers they do not define
    assert manifest["dataset"]["response_accuracy"] == 0.5


EVAL_DRIVER = """
import contextlib, json, sys
import eval.evaluate as evaluation
from jobs.cli import app

solutions = json.loads(sys.argv[1])  # the student's answers, by task: generation is not under test here
evaluation.open_teacher = lambda *args, **kwargs: contextlib.nullcontext()
evaluation.preload = lambda teacher: ()  # no engine starts: vLLM's import is not needed
evaluation.generate = lambda tasks, config, engine: [
    {"task_id": t["task_id"], "solution": solutions[t["task_id"]], "raw": "", "error": None, "output_tokens": 0}
    for t in tasks
]
app(sys.argv[2:], prog_name="amr")
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_amr_eval_on_a_cluster_contains_a_hostile_student(live_cluster, targets, tmp_path):
    """The attacks as a student's solutions, each before a right answer: where one got through, its task would
    pass; the last task, the right answer alone, passes."""
    from eval.data import dataset_file, load_tasks

    cache = tmp_path / "evalplus"
    tasks = load_tasks(dataset_file("humaneval", limit=len(ATTACKS) + 1, cache_dir=cache))
    right = [t["prompt"] + t["canonical_solution"] for t in tasks]
    solutions = {t["task_id"]: attack_code(a, live_cluster, targets) + r for t, a, r in zip(tasks, ATTACKS, right)}
    solutions[tasks[-1]["task_id"]] = right[-1]
    (student := tmp_path / "student").mkdir()
    (student / "config.json").write_text("{}")  # a model directory to the job's checks; no engine loads it
    out = live_cluster.shared / "eval"
    done = run_driver(
        "-c",
        EVAL_DRIVER,
        json.dumps(solutions),
        "eval",
        *("--model", str(student), "--dataset", "humaneval", "--limit", str(len(tasks)), "--output", str(out)),
        *("--set", f"ray.address=127.0.0.1:{live_cluster.gcs}", "--set", f"cache_dir={cache}"),
        *("--set", "scoring.parallel=2", "--set", "scoring.min_time_limit=10"),
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    results = json.loads((out / "samples_eval_results.json").read_text())["eval"]
    verdicts = {a.name: results[t["task_id"]][0]["base_status"] for t, a in zip(tasks, ATTACKS)}
    assert verdicts == {a.name: "fail" for a in ATTACKS}
    assert results[tasks[-1]["task_id"]][0]["base_status"] == "pass"
    assert json.loads((out / "scores.json").read_text())["base_pass@1"] == round(1 / len(tasks), 4)
    assert sorted(p.name for p in targets.rglob("*")) == ["models", "modules", "run"]

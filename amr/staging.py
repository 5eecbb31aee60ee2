"""Model weights staged to node-local disk, once per node, before an engine loads them.

A model on shared storage (the model store, the Hugging Face cache, a trained student) is read by every replica that
loads it: four replicas of a 65 GB teacher read 260 GB from a network filesystem at once. ``stage`` copies the model's
directory to a node-local folder instead, once per node: the first process on the node copies (into a temporary
folder, renamed when complete), the others wait on a file lock and reuse the copy, as does any later engine while its
source is unchanged. The copy logs its progress and fails past a timeout sized to the model (``MIN_RATE``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

MARKER = ".amr-staged.json"
MIN_RATE = 50e6
"""Bytes per second a staging copy must keep up on average (a slow network filesystem's burst-less floor)."""
FIXED_S = 60.0
"""Seconds a copy is allowed on top of its size at ``MIN_RATE``."""


class StagingError(RuntimeError):
    """A model could not be staged in time, or at all."""


def timeout_for(size: int) -> float:
    """The time a copy of ``size`` bytes may take."""
    return FIXED_S + size / MIN_RATE


def _files(source: Path) -> list[tuple[str, int, int]]:
    """The model directory's files (path, size, mtime), symbolic links followed (a Hugging Face snapshot's are)."""
    found = []
    for folder, _, names in os.walk(source, followlinks=True):
        for name in names:
            path = Path(folder) / name
            stat = path.stat()
            found.append((str(path.relative_to(source)), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def staged_path(source: str, root: str) -> Path:
    """Where ``stage`` puts ``source`` under ``root``: the same folder on every node for the same source."""
    name = Path(source).resolve().name
    return Path(root) / f"{name}-{hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:12]}"


def stage(source: str, root: str, progress_s: float = 30.0, timeout_s: float | None = None) -> str:
    """``source`` (a model directory) copied under ``root`` on this node, or the copy already there when its files
    are the source's (name, size, modification time); its path. Raises ``StagingError`` past ``timeout_s`` (default:
    ``timeout_for`` the model's size)."""
    files = _files(Path(source))
    if not files:
        raise StagingError(f"staging {source}: no files to stage")
    target = staged_path(source, root)
    manifest = {"source": str(Path(source).resolve()), "files": files}
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        marker = target / MARKER
        if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(manifest)):
            log.info("staging %s: on this node already (%s)", source, target)
            return str(target)
        size = sum(f[1] for f in files)
        limit = timeout_s if timeout_s is not None else timeout_for(size)
        _make_room(Path(root), size, keep=target)
        partial = Path(f"{target}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        log.info("staging %s (%.2f GB) to %s, at most %.0f s", source, size / 1e9, target, limit)
        began = last = time.monotonic()
        done = 0
        for name, *_ in files:
            out = partial / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(Path(source) / name, "rb") as src, open(out, "wb") as sink:
                while chunk := src.read(16 << 20):
                    sink.write(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if now - began > limit:
                        shutil.rmtree(partial, ignore_errors=True)
                        raise StagingError(
                            f"staging {source}: {done / 1e9:.2f} of {size / 1e9:.2f} GB after {now - began:.0f} s, "
                            f"past its {limit:.0f} s (a copy must average {MIN_RATE / 1e6:.0f} MB/s)"
                        )
                    if now - last >= progress_s:
                        rate = done / (now - began)
                        log.info("staging %s: %.2f of %.2f GB, %.0f MB/s", source, done / 1e9, size / 1e9, rate / 1e6)
                        last = now
        (partial / MARKER).write_text(json.dumps(manifest))
        partial.rename(target)
        log.info("staged %s: %.2f GB in %.0f s, %s", source, size / 1e9, time.monotonic() - began, target)
    return str(target)


def _make_room(root: Path, size: int, keep: Path) -> None:
    """Free ``size`` bytes under ``root`` (with a tenth to spare) by deleting the copies staged longest ago: an engine
    holds its weights in memory once loaded, and a node evaluates many students, each once."""
    staged = sorted((m.stat().st_mtime, m.parent) for m in root.glob(f"*/{MARKER}") if m.parent != keep)
    for _, old in staged:
        if shutil.disk_usage(root).free >= 1.1 * size:
            return
        log.info("staging: deleting %s, the oldest copy on this node, to make room", old)
        shutil.rmtree(old, ignore_errors=True)


def describe(stage_dir: str | None) -> str:
    """Where an engine's replicas read their model from, in words (``amr run --dry-run``)."""
    if stage_dir:
        return f"copied once per node to {stage_dir} (node-local), then loaded from there by the node's replicas"
    return "read by each replica where it is (vllm.stage_dir unset)"

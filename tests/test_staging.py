"""Staging a model to node-local disk (amr.staging): copied once per node however many processes ask at once,
reused while the source is unchanged, copied again when it changes, with progress lines and a timeout."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from amr import staging


def _model(folder: Path, size: int = 3 << 20) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def test_a_model_is_staged_once_per_node_and_reused(tmp_path, caplog):
    source = _model(tmp_path / "shared" / "student")
    root = tmp_path / "local"
    caplog.set_level(logging.INFO, logger="amr.staging")
    with ThreadPoolExecutor(4) as pool:  # four replicas on one node start at once
        paths = list(pool.map(lambda _: staging.stage(str(source), str(root), progress_s=0), range(4)))
    assert len(set(paths)) == 1 and Path(paths[0]) == staging.staged_path(str(source), str(root))
    staged = Path(paths[0])
    for name in ("config.json", "model.safetensors", "sub/tokenizer.json"):
        assert (staged / name).read_bytes() == (source / name).read_bytes()
    copies = [r.message for r in caplog.records if r.message.startswith("staged ")]
    assert len(copies) == 1 and sum("on this node already" in r.message for r in caplog.records) == 3
    assert any(r.message.endswith(" MB/s") for r in caplog.records)  # progress lines while it copies
    assert not list(root.glob("*.partial"))
    (source / "model.safetensors").write_bytes(os.urandom(1 << 20))  # a new version of the source: copied again
    assert staging.stage(str(source), str(root)) == paths[0]
    assert (staged / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


def test_a_full_disk_gives_up_the_copies_staged_longest_ago(tmp_path, monkeypatch):
    root = tmp_path / "local"
    first, second, third = (_model(tmp_path / name, size=1 << 20) for name in ("a", "b", "c"))
    staged = [Path(staging.stage(str(m), str(root))) for m in (first, second)]
    free = iter([0, 10 << 20])  # no room for the third, then room once the oldest copy is gone
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: type("Usage", (), {"free": next(free)}))
    staging.stage(str(third), str(root))
    assert not staged[0].exists() and staged[1].exists()
    assert staging.staged_path(str(third), str(root)).is_dir()


def test_a_copy_past_its_timeout_fails_and_leaves_nothing(tmp_path):
    source = _model(tmp_path / "student", size=64 << 20)
    assert staging.timeout_for(65 * 10**9) == pytest.approx(60 + 1300)  # 65 GB at 50 MB/s
    with pytest.raises(staging.StagingError, match=r"staging .*student: .* GB after \d+ s, past its 0 s"):
        staging.stage(str(source), str(tmp_path / "local"), timeout_s=0)
    assert not any((tmp_path / "local").glob("student-*[!k]"))  # neither a copy nor a partial one, the lock only
    with pytest.raises(staging.StagingError, match="no files"):
        (tmp_path / "empty").mkdir()
        staging.stage(str(tmp_path / "empty"), str(tmp_path / "local"))


def test_an_engine_loads_its_model_staged_on_its_node(tiny_teacher, tiny_model):
    """The session's engine (``vllm.stage_dir``): its node's copy of the tiny model is what vLLM loaded."""
    import ray

    staged = staging.staged_path(tiny_model, tiny_teacher.config.vllm.stage_dir)
    assert (staged / staging.MARKER).is_file()
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    loaded = [p for p in logs.rglob("worker-*") if f"model='{staged}'" in p.read_text(errors="replace")]
    assert loaded, f"no engine logged loading {staged}"

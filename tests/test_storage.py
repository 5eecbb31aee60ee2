"""Run directories on a local disk and on S3 (a real S3 HTTP server, moto), and the module table on S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from amr import storage
from amr.modules import ModuleDB
from amr.storage import RunDir, Slices

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path: Path) -> RunDir:
    if request.param == "local":
        return RunDir(str(tmp_path / "run"))
    bucket = request.getfixturevalue("s3_server")["bucket"]
    return RunDir(f"s3://{bucket}/runs/{uuid.uuid4().hex}/")


def test_local_and_object_store_uris(tmp_path, monkeypatch, s3_server):
    monkeypatch.chdir(tmp_path)
    local = RunDir("runs/a")
    assert local.is_local and local.uri == str(tmp_path / "runs" / "a")
    assert local.path("waves", "00001.json") == str(tmp_path / "runs" / "a" / "waves" / "00001.json")
    assert RunDir(f"file://{tmp_path}/b").uri == str(tmp_path / "b")
    remote = RunDir(f"s3://{s3_server['bucket']}/runs/a/")
    assert not remote.is_local and remote.uri == f"s3://{s3_server['bucket']}/runs/a"
    assert remote.path("modules") == f"s3://{s3_server['bucket']}/runs/a/modules"


def test_path_arithmetic_is_the_same_for_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.is_uri("s3://b/x") and not storage.is_uri("runs/x") and not storage.is_uri(f"file://{tmp_path}")
    assert storage.normalize("s3://b/runs/x/") == "s3://b/runs/x"
    assert (
        storage.normalize("runs/x/") == storage.normalize(f"file://{tmp_path}/runs/x") == str(tmp_path / "runs" / "x")
    )
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert storage.normalize("link") == str(tmp_path / "real")  # one spelling per location
    assert storage.join("s3://b/runs/", "amr", "distill") == "s3://b/runs/amr/distill"
    assert storage.join("runs", "amr") == "runs/amr"  # a relative path stays relative
    assert storage.parent("s3://b/runs/seeds.jsonl") == "s3://b/runs" and storage.parent("s3://b") == "s3://b"
    assert storage.parent("seeds.jsonl") == "." and storage.parent("/a/b/") == "/a"
    assert storage.name("s3://b/runs/seeds.jsonl") == "seeds.jsonl" and storage.name("/a/b/") == "b"


def test_file_functions_find_copy_and_remove(run_dir, tmp_path):
    root = run_dir.uri
    missing = storage.join(root, "none.json")
    assert not storage.exists(root) and not storage.exists(missing) and storage.find(root, "scores.json") == []
    storage.write_json(storage.join(root, "amr", "eval", "mbpp", "scores.json"), {"a": 1})
    storage.write_text(storage.join(root, "base", "scores.json"), '{"b": 2}')
    storage.write_bytes(storage.join(root, "plot.png"), b"\x89PNG")
    assert (
        storage.exists(root)
        and storage.exists(storage.join(root, "amr"))
        and not storage.is_file(storage.join(root, "amr"))
    )
    assert storage.find(root, "scores.json") == [
        storage.join(root, "amr", "eval", "mbpp", "scores.json"),
        storage.join(root, "base", "scores.json"),
    ]
    assert storage.find(storage.join(root, "base", "scores.json"), "scores.json") == [
        storage.join(root, "base", "scores.json")
    ]
    assert storage.read_json(storage.join(root, "base", "scores.json")) == {"b": 2}
    assert list(storage.read_lines(storage.join(root, "base", "scores.json"))) == ['{"b": 2}']
    with storage.open_input(storage.join(root, "plot.png")) as f:
        assert f.read() == b"\x89PNG"
    with pytest.raises(FileNotFoundError, match=missing):
        storage.read_json(missing)

    local = tmp_path / "made"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("a")
    (local / "sub" / "b.txt").write_text("b")
    storage.copy_to(local, storage.join(root, "copied"))
    assert storage.read_text(storage.join(root, "copied", "sub", "b.txt")) == "b"
    storage.copy_to(local / "a.txt", storage.join(root, "one.txt"))
    assert storage.read_text(storage.join(root, "one.txt")) == "a"
    with storage.local_dir(storage.join(root, "work")) as work:
        assert work.is_dir() and (not run_dir.is_local or str(work) == storage.join(root, "work"))
        (work / "samples.jsonl").write_text("{}\n")
    assert storage.read_text(storage.join(root, "work", "samples.jsonl")) == "{}\n"

    storage.remove(storage.join(root, "copied"))
    storage.remove(storage.join(root, "one.txt"))
    storage.remove(missing)  # nothing there: nothing to do
    assert not storage.exists(storage.join(root, "copied", "a.txt")) and not storage.exists(
        storage.join(root, "one.txt")
    )


def test_text_and_json_round_trip_with_nested_names(run_dir):
    assert not run_dir.exists("waves/00001.json")
    run_dir.write_json("waves/00001.json", {"version_read": 3, "name": "é"})
    assert run_dir.exists("waves/00001.json") and run_dir.exists("waves")
    assert run_dir.read_json("waves/00001.json") == {"version_read": 3, "name": "é"}
    assert run_dir.read_text("waves/00001.json") == json.dumps({"version_read": 3, "name": "é"}, indent=2) + "\n"
    run_dir.write_text("log.txt", "first")
    run_dir.write_text("log.txt", "second")  # overwrite
    assert run_dir.read_text("log.txt") == "second"


def test_tables_rows_and_json_lines(run_dir):
    table = pa.table({"id": ["a", "b"], "n": [1, 2], "tags": [["x"], []]})
    run_dir.write_table("direct.parquet", table)
    assert run_dir.read_table("direct.parquet").equals(table)
    assert run_dir.read_table("direct.parquet", columns=["n"]).to_pylist() == [{"n": 1}, {"n": 2}]
    run_dir.write_rows("growth/00001.parquet", [{"outcome": "verified", "name": "f"}])
    assert run_dir.read_table("growth/00001.parquet").to_pylist() == [{"outcome": "verified", "name": "f"}]
    with pytest.raises(ValueError, match="empty.parquet: no rows"):
        run_dir.write_rows("empty.parquet", [])
    assert not run_dir.exists("empty.parquet")
    run_dir.write_jsonl("dataset.jsonl", pa.table({"id": ["a"], "response": ["héllo"]}))
    assert run_dir.read_text("dataset.jsonl") == '{"id": "a", "response": "héllo"}\n'


def test_reading_a_missing_file_names_its_uri(run_dir):
    for read in (run_dir.read_text, run_dir.read_json, run_dir.read_table):
        with pytest.raises(FileNotFoundError, match=run_dir.path("waves/missing")):
            read("waves/missing")


def test_local_writes_leave_no_temporary_file(tmp_path):
    run_dir = RunDir(str(tmp_path))
    run_dir.write_text("a/b/c.txt", "x")
    run_dir.write_table("a/t.parquet", pa.table({"x": [1]}))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["c.txt", "t.parquet"]


def test_scratch_is_local_and_stable(run_dir):
    scratch = run_dir.scratch()
    assert scratch.is_dir() and scratch == RunDir(run_dir.uri).scratch()
    if run_dir.is_local:
        assert str(scratch) == run_dir.uri
    else:
        assert scratch != RunDir(run_dir.uri + "-other").scratch()


def test_write_dataset_promotes_a_column_null_in_one_block(ray_local, run_dir):
    blocks = [pa.table({"id": ["a"], "error": pa.array([None])}), pa.table({"id": ["b"], "error": ["boom"]})]
    written = run_dir.write_dataset("stage.parquet", ray_local.data.from_arrow(blocks))
    table = run_dir.read_table("stage.parquet")
    assert table.equals(written) and table.schema.field("error").type == pa.string()
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
        {"id": "a", "error": None},
        {"id": "b", "error": "boom"},
    ]
    with pytest.raises(ValueError, match="e.parquet: nothing to write"):
        run_dir.write_dataset("e.parquet", ray_local.data.from_items([{"x": 1}]).filter(lambda r: False))


def test_stage_directories_are_written_by_workers_and_read_back_unified(ray_local, run_dir):
    """A stage's blocks become files written by the workers; a cut-off write is replaced; reads unify types."""
    blocks = [pa.table({"index": [0, 1], "error": pa.array([None, None])}), pa.table({"index": [2], "error": ["boom"]})]
    run_dir.write_json("stage.parquet/leftover.json", {})  # a write cut off before its marker
    assert not run_dir.stage_done("stage.parquet")
    run_dir.write_stage("stage.parquet", ray_local.data.from_arrow(blocks))
    assert run_dir.stage_done("stage.parquet") and not run_dir.exists("stage.parquet/leftover.json")
    dataset = run_dir.open_stage("stage.parquet")
    assert dataset.schema.field("error").type == pa.string() and dataset.count_rows() == 3
    assert sorted(run_dir.read_stage("stage.parquet").take_all(), key=lambda r: r["index"]) == [
        {"index": 0, "error": None},
        {"index": 1, "error": None},
        {"index": 2, "error": "boom"},
    ]
    copy = RunDir(run_dir.uri + "-copy")
    copy.copy_stage("stage.parquet", run_dir)
    assert copy.stage_done("stage.parquet") and copy.open_stage("stage.parquet").to_table().num_rows == 3
    run_dir.write_stage("empty.parquet", ray_local.data.from_items([{"x": 1}]).filter(lambda r: False))
    assert run_dir.stage_done("empty.parquet") and run_dir.open_stage("empty.parquet") is None
    assert run_dir.open_stage("growth") is None  # a directory nothing was written to
    run_dir.write_jsonl_batches("rows.jsonl", dataset.to_batches())
    assert sorted(json.loads(line)["index"] for line in run_dir.read_text("rows.jsonl").splitlines()) == [0, 1, 2]


def test_driver_made_stage_files_fill_up_to_rows_per_file(run_dir, monkeypatch):
    monkeypatch.setattr(storage, "ROWS_PER_FILE", 2)
    schema = pa.schema([("index", pa.int64()), ("error", pa.string())])
    tables = [pa.table({"index": [i], "error": pa.array([None] if i < 2 else ["boom"])}) for i in range(3)]
    run_dir.write_stage_tables("made.parquet", iter(tables), schema)
    assert run_dir._stage_files("made.parquet") == [
        "made.parquet/part-00000.parquet",
        "made.parquet/part-00001.parquet",
    ]
    assert [f.count_rows() for f in run_dir.open_stage("made.parquet").get_fragments()] == [2, 1]
    assert run_dir.open_stage("made.parquet").to_table().to_pylist() == [
        {"index": 0, "error": None},
        {"index": 1, "error": None},
        {"index": 2, "error": "boom"},
    ]

    # no declared schema: a table whose columns do not fit the open file starts the next one
    monkeypatch.setattr(storage, "ROWS_PER_FILE", 100)
    tables.append(pa.table({"index": [3], "error": ["late"], "round": [1]}))
    run_dir.write_stage_tables("inferred.parquet", iter(tables))
    assert [f.count_rows() for f in run_dir.open_stage("inferred.parquet").get_fragments()] == [2, 1, 1]
    assert run_dir.open_stage("inferred.parquet").to_table().to_pylist()[1:] == [
        {"index": 1, "error": None, "round": None},
        {"index": 2, "error": "boom", "round": None},
        {"index": 3, "error": "late", "round": 1},
    ]
    # the driver's scan reads file by file, in the unified schema, with the filter applied
    assert [
        b.to_pylist()
        for b in run_dir.scan_stage("inferred.parquet", ["index", "round"], pc.field("index") >= 2)
        if b.num_rows
    ] == [[{"index": 2, "round": None}], [{"index": 3, "round": 1}]]
    with pytest.raises(ValueError, match="do not fit the schema"):
        run_dir.write_stage_tables("declared.parquet", iter(tables), schema)
    assert not run_dir.stage_done("declared.parquet")
    batches = list(run_dir.scan_stage("made.parquet", ["error", "absent"]))
    assert {tuple(b.schema.names) for b in batches} == {("error",)} and sum(b.num_rows for b in batches) == 3


def test_a_failed_streamed_write_leaves_no_file(run_dir):
    def batches():
        yield pa.table({"x": [1]})
        raise RuntimeError("cut off")

    with pytest.raises(RuntimeError, match="cut off"):
        run_dir.write_jsonl_batches("rows.jsonl", batches())
    assert not run_dir.exists("rows.jsonl")


def _module(name: str, vector: np.ndarray) -> dict:
    return {
        "name": name,
        "signature": f"def {name}()",
        "description": name,
        "code": f"def {name}():\n    return 1",
        "test": f"assert {name}() == 1",
        "run": "r1",
        "instruction_id": f"mbpp/{name}",
        "stage": "seed",
        "verdict": "passed",
        "vector": vector,
    }


def test_module_table_on_s3(s3_server):
    uri = f"s3://{s3_server['bucket']}/modules-{uuid.uuid4().hex}"
    vectors = np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    db = ModuleDB(uri, dim=384)
    empty = db.version
    assert db.insert([_module(n, v) for n, v in zip("fgh", vectors)]) == 3
    assert db.insert([_module("f", vectors[0])]) == 0  # same code: merged, not duplicated
    assert db.count() == 3 and db.count(name=["f", "g"]) == 2 and db.version > empty
    hits = db.search(vectors[[2, 0]], k=2)
    assert [h[0]["name"] for h in hits] == ["h", "f"] and hits[0][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert db.search(vectors[:1], version=empty) == [[]]
    assert ModuleDB.open(uri).count() == 3


def test_slices_read_only_the_row_groups_a_range_overlaps(tmp_path, monkeypatch):
    """A stage read a slice of ``index`` at a time (the waves): each slice's rows, from the row groups whose statistics
    overlap it, every file's footer read once."""
    for part in range(4):  # files of contiguous ranges, one shuffled, row groups of 25 rows
        index = list(range(part * 100, (part + 1) * 100))
        if part == 2:
            index.reverse()
        pq.write_table(
            pa.table({"index": index, "v": [str(i) for i in index]}), tmp_path / f"{part}.parquet", row_group_size=25
        )
    slices = Slices(pds.dataset(str(tmp_path), format="parquet"), "index")
    assert len(slices.groups) == 16
    opened = []
    real = pq.ParquetFile.iter_batches
    monkeypatch.setattr(
        pq.ParquetFile, "iter_batches", lambda self, *a, **k: opened.append(k["row_groups"]) or real(self, *a, **k)
    )
    for low, high in [(0, 10), (95, 130), (250, 260), (390, 500)]:
        rows = [r for b in slices.read(low, high) for r in b.column("index").to_pylist()]
        assert sorted(rows) == list(range(low, min(high, 400)))
    assert opened == [[0], [3], [0, 1], [1], [3]]  # (95, 130): the last group of file 0, the first two of file 1

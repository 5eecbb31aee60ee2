import gzip
import hashlib
import json
import re
from collections import Counter

import pytest

from amr.data import (
    DATA_DIR,
    MBPP_PLUS_V010,
    MBPP_PLUS_V020,
    MBPP_TRAIN_OVERLAPS,
    InputError,
    load_instructions,
    load_requests,
    mbpp_train,
    mbpp_train_decontaminated,
    mbpp_train_overlaps,
)


def test_vendored_files_match_their_provenance_checksums():
    rows = re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$", (DATA_DIR / "PROVENANCE.md").read_text(), re.M)
    assert len(rows) == 5
    for name, sha in rows:
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == sha, name


def test_mbpp_train_is_ids_601_to_974_with_tests():
    records = mbpp_train()
    assert [r["id"] for r in records] == [f"mbpp/{i}" for i in range(601, 975)]
    first = records[0]
    assert first["instruction"].startswith("Write a function to find the longest chain")
    assert first["tests"][0] in first["instruction"]
    assert all(any(t.startswith("assert") for t in r["tests"]) for r in records)


def test_builtin_source_leaves_out_the_benchmarks_problems():
    """``mbpp-train`` (the default input) is MBPP train without its overlaps with the evaluation benchmarks:
    none of MBPP+ v0.1.0's or v0.2.0's tasks, nothing the exact or n-gram checks tie to HumanEval+, MBPP or MBPP+;
    ``mbpp-train-raw`` is all of it. ``limit`` takes the first N of the source."""
    from amr.config import DecontamConfig
    from amr.decontam import NgramIndex, benchmark_items

    clean, raw = load_instructions("mbpp-train"), load_instructions("mbpp-train-raw")
    assert (len(clean), len(raw)) == (230, 374) and raw == mbpp_train() and clean == mbpp_train_decontaminated()
    removed = mbpp_train_overlaps()
    assert sorted(r["id"] for r in clean + removed) == sorted(r["id"] for r in raw)  # each one or the other
    plus = {
        t["task_id"].replace("Mbpp/", "mbpp/") for path in (MBPP_PLUS_V010, MBPP_PLUS_V020) for t in _jsonl_gz(path)
    }
    assert len(plus & {r["id"] for r in raw}) == 111 and not plus & {r["id"] for r in clean}
    config = DecontamConfig()
    index = NgramIndex.build(benchmark_items(config.benchmarks), config.ngram)
    assert not [(r["id"], hit) for r in clean if (hit := index.match(r["instruction"], config.min_ngram_matches))]
    assert Counter(r["check"] for r in removed) == {"same-task": 111, "embedding": 20, "ngram": 7, "exact": 6}
    assert [r["id"] for r in load_instructions("mbpp-train", limit=3)] == ["mbpp/601", "mbpp/609", "mbpp/613"]
    assert len(load_instructions("mbpp-train-raw", limit=3)) == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_vendored_overlaps_are_what_the_decontamination_finds_now():
    """``mbpp-train-overlaps.json`` is ``amr instructions seed``'s result with the default settings, computed from
    these data files and settings: a fresh computation finds the same problems (``python -m amr.data.overlaps``
    regenerates it)."""
    from amr.data import overlaps

    vendored = json.loads(MBPP_TRAIN_OVERLAPS.read_text())
    fresh = overlaps.compute()
    assert {k: v for k, v in vendored.items() if k != "removed"} == {k: v for k, v in fresh.items() if k != "removed"}
    # the task, not which benchmark's copy of it: MBPP's mbpp/N and MBPP+'s Mbpp/N are the same problem, their
    # statements nearly the same, and which is nearer varies with the CPU's rounding (mbpp/837: 0.957 to either)
    key = [(r["id"], r["check"], r["benchmark_id"].lower()) for r in vendored["removed"]]
    assert key == [(r["id"], r["check"], r["benchmark_id"].lower()) for r in fresh["removed"]]
    assert [r["score"] for r in vendored["removed"]] == pytest.approx([r["score"] for r in fresh["removed"]], abs=1e-3)


def test_overlaps_are_tied_to_the_data_they_were_computed_from(tmp_path, monkeypatch):
    import amr.data

    stale = json.loads(MBPP_TRAIN_OVERLAPS.read_text())
    stale["data_sha256"]["mbpp/mbpp.jsonl"] = "0" * 64
    (tmp_path / "overlaps.json").write_text(json.dumps(stale))
    monkeypatch.setattr(amr.data, "MBPP_TRAIN_OVERLAPS", tmp_path / "overlaps.json")
    with pytest.raises(
        RuntimeError, match=r"other versions of mbpp/mbpp.jsonl; regenerate it: python -m amr.data.overlaps"
    ):
        load_instructions("mbpp-train")


def _jsonl_gz(path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_instruction_file_and_limit(write):
    path = write(
        "in.jsonl", '{"id": 1, "instruction": "a"}\n\n{"id": "b", "instruction": "c", "tests": ["assert 1"]}\n'
    )
    assert load_instructions(str(path)) == [
        {"id": "1", "instruction": "a", "tests": []},
        {"id": "b", "instruction": "c", "tests": ["assert 1"]},
    ]
    assert len(load_instructions(str(path), limit=1)) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"id": "a", "instruction": "x"}\n{"id": "b", "instruction": ', r"in.jsonl:2: invalid JSON"),
        ('{"id": "a"}\n', r"in.jsonl:1: field 'instruction' is missing"),
        ('{"id": "a", "instruction": "  "}\n', r"in.jsonl:1: field 'instruction' must be a non-empty string"),
        (
            '{"id": "a", "instruction": "x"}\n{"id": "a", "instruction": "y"}\n',
            r"in.jsonl:2: field 'id': duplicate id 'a' \(first on line 1\)",
        ),
        ('{"id": "a", "instruction": "x", "tests": "assert 1"}\n', r"in.jsonl:1: field 'tests' must be a list"),
        ("[1, 2]\n", r"in.jsonl:1: expected an object"),
    ],
)
def test_malformed_instructions_name_file_line_field(write, text, message):
    with pytest.raises(InputError, match=message):
        load_instructions(str(write("in.jsonl", text)))


def test_duplicate_ids_are_found_by_hash_then_confirmed(write, monkeypatch):
    import amr.data

    text = '{"id": "a", "instruction": "x"}\n{"id": "b", "instruction": "y"}\n\n{"id": 1, "instruction": "z"}\n'
    path = write("in.jsonl", text + '{"id": "b", "instruction": "w"}\n')
    with pytest.raises(InputError, match=r"in.jsonl:5: field 'id': duplicate id 'b' \(first on line 2\)"):
        load_instructions(str(path))
    assert len(load_instructions(str(path), limit=3)) == 3  # the repeat is past the limit
    monkeypatch.setattr(amr.data, "_id_hash", lambda rid: 7)  # every id shares a hash: only equal ids are errors
    assert [r["id"] for r in load_instructions(str(write("ok.jsonl", text)))] == ["a", "b", "1"]
    with pytest.raises(InputError, match=r"in.jsonl:5: field 'id': duplicate id 'b' \(first on line 2\)"):
        load_instructions(str(path))


def test_parquet_rows_are_validated_too(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "instruction": ["x", ""]}), path)
    with pytest.raises(InputError, match=r"in.parquet:2: field 'instruction'"):
        load_instructions(str(path))


def test_unknown_source_is_a_clear_error():
    with pytest.raises(InputError, match="no such input file .* mbpp-train"):
        load_instructions("mbpp-trian")


def test_requests_accept_prompt_or_messages(write):
    path = write(
        "r.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": 1, "prompt": "hi"},
                {
                    "id": 2,
                    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                    "sampling": {"temperature": 0.5},
                },
            ]
        ),
    )
    first, second = load_requests(path)
    assert first["messages"] == [{"role": "user", "content": "hi"}]
    assert second["sampling"] == {"temperature": 0.5} and len(second["messages"]) == 2
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'messages' is missing"):
        load_requests(write("bad.jsonl", '{"id": 1}\n'))
    with pytest.raises(InputError, match=r"bad2.jsonl:1: field 'messages' must be"):
        load_requests(write("bad2.jsonl", '{"id": 1, "messages": [{"role": "user"}]}\n'))


def test_an_instruction_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "a", "instruction": "x"}\n{"id": "b", "instruction": "café"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.jsonl:2: not UTF-8 text \(byte 0xe9 at column 32\)"):
        load_instructions(str(path))


def test_a_nul_byte_and_a_parquet_file_that_is_not_parquet_name_the_file(tmp_path):
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"id": "a", "instruction": "x"}\n{"id": "b",\x00 "instruction": "y"}\n')
    with pytest.raises(InputError, match=r"binary.jsonl:2: a NUL byte at column 12; is this a binary file\?"):
        load_instructions(str(binary))
    fake = tmp_path / "rows.parquet"
    fake.write_text('{"id": "a", "instruction": "x"}\n')
    with pytest.raises(InputError, match=r"rows.parquet: not a Parquet file \(.*\); write Parquet, or name it .jsonl"):
        load_instructions(str(fake))

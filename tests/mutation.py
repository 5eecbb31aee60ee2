"""``make mutation``: mutation testing (mutmut, in the test extra) of the files whose rules the fast unit tests hold,
one file at a time against its own unit tests, each in a scratch copy of the repository; writes docs/mutation.md
(score per file, every surviving mutant with why it is accepted, the date and the commit measured).

    python tests/mutation.py                        # every covered file; docs/mutation.md
    python tests/mutation.py amr/stages/check.py    # some of them: their rows of docs/mutation.md replaced

A survivor without a reason in ``ACCEPTED`` is listed as unexplained and the command exits 1: kill it with a test,
or say there why it is equivalent or accepted. tests/test_docs.py checks that the record is not stale (the rule is
in docs/mutation.md).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "mutation.md"
COVERED = ("amr/parsing.py", "amr/filters.py", "amr/decontam.py", "amr/stages/*.py", "amr/pipelines/fingerprints.py")
STAGE_TESTS = ["tests/test_stage_rows.py"]
TESTS = {  # each file's fast unit tests (no Ray, no model server); a stage file not named here: STAGE_TESTS
    "amr/parsing.py": ["tests/test_parsing.py"],
    "amr/filters.py": ["tests/test_filters.py"],
    "amr/decontam.py": ["tests/test_decontam.py"],
    "amr/pipelines/fingerprints.py": ["tests/test_fingerprints.py"],
    "amr/stages/__init__.py": [*STAGE_TESTS, "tests/test_runaway.py"],
    "amr/stages/grow.py": ["tests/test_grow.py"],
    "amr/stages/retrieve.py": ["tests/test_retrieve.py"],
    "amr/stages/response_evolution.py": [*STAGE_TESTS, "tests/test_stages.py::test_the_gated_method_keeps_r_d_where_a_rewrite_leaves_out_the_function_asked_for", "tests/test_stages.py::test_an_answer_without_the_papers_heading_is_taken_whole"],
}  # fmt: skip
FORKSERVER = {"amr/filters.py"}
"""Files whose tests open LanceDB tables: its runtime's threads do not survive a fork, so a mutant forked from mutmut's
process (which ran the tests once) hangs until its timeout, a false kill. Their mutants are forked from mutmut's fork
server instead, which has only collected the tests."""
ACCEPTED: dict[str, str] = {  # "<file>: <the mutated line, stripped>": why the mutant is equivalent or accepted
    r'amr/parsing.py: text = re.sub(r"^DESCRIPTION\s*:\s*", "", text, flags=re.IGNORECASE)': "equivalent: the "
    "pattern is matched ignoring case",
    r'amr/parsing.py: return "" if text in ("...", "pass", "XXXX") else text': "equivalent: an empty text is "
    "returned as it is",
    'amr/parsing.py: node = ""': "equivalent: like None, not a function definition",
    'amr/parsing.py: lines = (response or "XXXX").splitlines()': 'equivalent: "XXXX" holds no heading either',
    r'amr/parsing.py: return [block.strip("\n") for block in _FENCE.findall(response or "XXXX")]': "equivalent: "
    "neither text holds a fence",
    r'amr/parsing.py: for block in code_blocks(response) or [response or "XXXX"]:': "equivalent: neither text "
    "holds a def",
    r'amr/parsing.py: text = "\n\n\n".join(["\n".join(imports), *parts] if (imports) or True else parts)': "equivalent: without imports the join only adds leading newlines, which the next line strips",
    "amr/parsing.py: for end in range(len(lines) + 1, 0, -1):": "equivalent: the first two heads tried are the "
    "whole block, which does not parse (else it was returned before)",
    'amr/filters.py: "XXkeptXX", schema=pa.schema([("vector", pa.list_(pa.float32(), embedder.dim))]), mode="overwrite"': "equivalent: the table is the filter's own, made anew (overwrite) and reached through self.table only",
    'amr/filters.py: "KEPT", schema=pa.schema([("vector", pa.list_(pa.float32(), embedder.dim))]), mode="overwrite"': "equivalent: the table is the filter's own, made anew (overwrite) and reached through self.table only",
    'amr/filters.py: self._scratch = None if (uri) and False else tempfile.TemporaryDirectory(prefix="amr-dedup-")': "equivalent: with a uri the scratch directory stays unused and empty, and goes with the filter",
    "amr/filters.py: self._scratch = None if uri else tempfile.TemporaryDirectory(prefix=None)": "equivalent: the scratch directory's name is never read",
    'amr/filters.py: self._scratch = None if uri else tempfile.TemporaryDirectory(prefix="XXamr-dedup-XX")': "equivalent: the scratch directory's name is never read",
    'amr/filters.py: self._scratch = None if uri else tempfile.TemporaryDirectory(prefix="AMR-DEDUP-")': "equivalent: the scratch directory's name is never read",
    "amr/filters.py: _, nearest = self.index.search(self.table.to_lance(), vectors, 2)": "equivalent: the first of the two nearest is the nearest",
    'amr/filters.py: pa.table({"vector": pa.array(list(vectors[kept]), type=None)})': "equivalent: LanceDB casts the rows added to the table's schema (fixed-size lists of float32)",
    'amr/filters.py: pa.table({"vector": pa.array(list(vectors[kept]), )})': "equivalent: LanceDB casts the rows added to the table's schema (fixed-size lists of float32)",
    'amr/filters.py: pa.table({"vector": pa.array(list(vectors[kept]), type=pa.list_(pa.float32(), ))})': "equivalent: LanceDB casts the rows added to the table's schema (fixed-size lists of float32)",
    "amr/decontam.py: with gzip.open(path, ) as f:": "equivalent: json.loads reads the bytes of binary mode alike",
    'amr/decontam.py: prompt = problem_statement(task["prompt"].strip().strip(\'XX"XX\'))': "equivalent: no MBPP+ prompt starts or ends with an X",
    "amr/decontam.py: top = np.argpartition(-similarity, k - 1, )[:, :k]": "equivalent: axis -1, the default, is axis 1 of these 2-d arrays",
    "amr/decontam.py: top = np.argpartition(-similarity, k - 2, axis=1)[:, :k]": "accepted: numpy's introselect put the k-th at k-1 as well on every input tried (test_nearest_picks_the_k_most_similar_of_many, 200 x 30 random vectors)",
    "amr/decontam.py: order = np.take_along_axis(-similarity, top, ).argsort(axis=1)": "equivalent: axis -1, the default, is axis 1 of these 2-d arrays",
    "amr/decontam.py: top = np.take_along_axis(top, order, )": "equivalent: axis -1, the default, is axis 1 of these 2-d arrays",
    "amr/decontam.py: return top, np.take_along_axis(similarity, top, )": "equivalent: axis -1, the default, is axis 1 of these 2-d arrays",
    'amr/decontam.py: text = re.split(r"\\n\\s*(?:>>>|For example|Example)", text, maxsplit=2)[0]': "equivalent: only the part before the first split is kept",
    'amr/decontam.py: text = re.split(r"\\n\\s*(?:>>>|For example|Example)", text, )[0]': "equivalent: only the part before the first split is kept",
    "amr/decontam.py: if len(tokens) <= n:": "equivalent: a text of exactly n words has one n-gram either way, found alike in the short table",
    "amr/decontam.py: hits.update(self.grams.get(gram, None))": "equivalent: Counter.update(None) adds nothing, as an empty tuple",
    "amr/decontam.py: hits.update(self.grams.get(gram, ))": "equivalent: Counter.update(None) adds nothing, as an empty tuple",
    "amr/decontam.py: hits.update(table.get(gram, None))": "equivalent: Counter.update(None) adds nothing, as an empty tuple",
    "amr/decontam.py: hits.update(table.get(gram, ))": "equivalent: Counter.update(None) adds nothing, as an empty tuple",
    "amr/decontam.py: number, count = max(hits.items(), key=lambda kv: (kv[1], -kv[1]))": "accepted: ties of equal counts go to the first text counted, which differs from the earlier text only when they share different n-grams, counted in the order of a set of strings (PYTHONHASHSEED): no test can make it fail every time",
    "amr/decontam.py: if count >= min_matches and self.sizes[number] >= 1:": "equivalent: a text of size 1 with a hit is covered whole, so the exact check returned before",
    "amr/pipelines/fingerprints.py: while chunk := f.read(None):": "equivalent: reads the file in one piece, the same digest",
    "amr/pipelines/fingerprints.py: before = hashlib.sha256(json.dumps([before, needs], sort_keys=None, default=str).encode()).hexdigest()[:16]": "equivalent: the inputs are built in a fixed order, so the digest is the same without sorted keys",
    "amr/pipelines/fingerprints.py: before = hashlib.sha256(json.dumps([before, needs], sort_keys=True, default=None).encode()).hexdigest()[:16]": "equivalent: every setting is JSON already (no value needs str)",
    "amr/pipelines/fingerprints.py: before = hashlib.sha256(json.dumps([before, needs], default=str).encode()).hexdigest()[:16]": "equivalent: the inputs are built in a fixed order, so the digest is the same without sorted keys",
    "amr/pipelines/fingerprints.py: before = hashlib.sha256(json.dumps([before, needs], sort_keys=True, ).encode()).hexdigest()[:16]": "equivalent: every setting is JSON already (no value needs str)",
    "amr/pipelines/fingerprints.py: before = hashlib.sha256(json.dumps([before, needs], sort_keys=False, default=str).encode()).hexdigest()[:16]": "equivalent: the inputs are built in a fixed order, so the digest is the same without sorted keys",
    'amr/pipelines/fingerprints.py: out, before = {}, "XXXX"': "accepted: another seed of the chain changes every fingerprint alike; a run directory made before would stop (as after any change of what stages depend on)",
    'amr/pipelines/fingerprints.py: "teacher.sampling": teacher.sampling.model_dump(mode="XXjsonXX"),': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: "teacher.sampling": teacher.sampling.model_dump(mode="JSON"),': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: modules = config.modules.model_dump(mode=None, exclude={"index_min_rows", "upkeep_every", "lease_ttl_s"})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: modules = config.modules.model_dump(exclude={"index_min_rows", "upkeep_every", "lease_ttl_s"})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: modules = config.modules.model_dump(mode="XXjsonXX", exclude={"index_min_rows", "upkeep_every", "lease_ttl_s"})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: modules = config.modules.model_dump(mode="JSON", exclude={"index_min_rows", "upkeep_every", "lease_ttl_s"})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: needs[f"teacher.stages.{sampled}"] = getattr(teacher.stages, sampled).model_dump(mode=None)': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: needs[f"teacher.stages.{sampled}"] = getattr(teacher.stages, sampled).model_dump(mode="XXjsonXX")': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: needs[f"teacher.stages.{sampled}"] = getattr(teacher.stages, sampled).model_dump(mode="JSON")': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: "teacher.sampling": teacher.sampling.model_dump(mode=None),': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: needs.update({f"check.{k}": v for k, v in config.check.model_dump(mode=None).items()})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: needs.update({f"check.{k}": v for k, v in config.check.model_dump(mode="XXjsonXX").items()})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    'amr/pipelines/fingerprints.py: needs.update({f"check.{k}": v for k, v in config.check.model_dump(mode="JSON").items()})': "equivalent: the settings are numbers, strings, lists and None, dumped alike in python and JSON mode (pydantic takes an unknown mode as python)",
    "amr/pipelines/fingerprints.py: later_files = None": "equivalent: the list is read only for the waves stage, which sets it",
    'amr/stages/__init__.py: ended = Counter(counts.get("finished", {})) + Counter(counts.get("test_finished", None))': "equivalent: Counter(None) is an empty Counter, as Counter({}) is",
    'amr/stages/__init__.py: ended = Counter(counts.get("finished", {})) + Counter(counts.get("test_finished", ))': "equivalent: Counter(None) is an empty Counter, as Counter({}) is",
    'amr/stages/__init__.py: ended = Counter(counts.get("finished", None)) + Counter(counts.get("test_finished", {}))': "equivalent: Counter(None) is an empty Counter, as Counter({}) is",
    'amr/stages/__init__.py: ended = Counter(counts.get("finished", )) + Counter(counts.get("test_finished", {}))': "equivalent: Counter(None) is an empty Counter, as Counter({}) is",
    'amr/stages/check.py: return {**row, "code": python_code(row[response] or "XXXX") or "", "test": "\\n".join(row["self_tests"])}': 'equivalent: "XXXX" holds no code either',
    'amr/stages/check.py: lambda row: {**{k: v for k, v in row.items() if not k.startswith("XXresample_XX")}, "sampling": sampling}': "equivalent: the earlier round's resample_* columns, carried, are replaced by this round's answer columns of the same names",
    'amr/stages/check.py: lambda row: {**{k: v for k, v in row.items() if not k.startswith("RESAMPLE_")}, "sampling": sampling}': "equivalent: the earlier round's resample_* columns, carried, are replaced by this round's answer columns of the same names",
    "amr/stages/decontaminate.py: with tempfile.NamedTemporaryFile(dir=path.parent, suffix=None, delete=False) as f:": "equivalent: the temporary file's name is never read: it is renamed to the cache file",
    "amr/stages/decontaminate.py: with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:": "equivalent: the temporary file's name is never read: it is renamed to the cache file",
    'amr/stages/decontaminate.py: with tempfile.NamedTemporaryFile(dir=path.parent, suffix="XX.npyXX", delete=False) as f:': "equivalent: the temporary file's name is never read: it is renamed to the cache file",
    'amr/stages/decontaminate.py: with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".NPY", delete=False) as f:': "equivalent: the temporary file's name is never read: it is renamed to the cache file",
    'amr/stages/decontaminate.py: with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=None) as f:': "equivalent: None is false, as False: the file is kept for the rename",
    'amr/stages/decontaminate.py: key = hashlib.sha256("XX\\0XX".join([embedder.path, *problems]).encode()).hexdigest()[:16]': "equivalent: another separator keeps the model and the problems apart alike (it names the cache file only)",
    "amr/stages/decontaminate.py: compute=ray.data.ActorPoolStrategy(min_size=None, max_size=config.actors),": "equivalent: Ray Data's ActorPoolStrategy takes a min_size of 1 by default",
    "amr/stages/decontaminate.py: compute=ray.data.ActorPoolStrategy(max_size=config.actors),": "equivalent: Ray Data's ActorPoolStrategy takes a min_size of 1 by default",
    'amr/stages/decompose.py: specs = [] if (row["md_error"]) and False else function_specs(row["md_response"])': "equivalent: a failed call has no answer, from which no spec parses either",
    'amr/stages/grow.py: code = python_code(row[response] or "XXXX")': 'equivalent: "XXXX" holds no code either',
    'amr/stages/grow.py: tests = [python_code(r["test_response"] or "XXXX", cut_off=True) or "" for r in tested]': (
        'equivalent: "XXXX" holds no code either'
    ),
    'amr/stages/embed.py: texts = [queries(row, query) for row in batch.to_dict("RECORDS")]': (
        "equivalent: pandas reads the orient in any case"
    ),
    'amr/stages/response_evolution.py: solution = under_heading(row["are_response"] or "XXXX", response_evolution.HEADING)': 'equivalent: "XXXX" holds no heading either',
    'amr/stages/response_evolution.py: code = python_code(response or "XXXX")': 'equivalent: "XXXX" holds no code either',
    'amr/stages/response_evolution.py: modules = [h["code"].strip(None) for h in json.loads(row["retrieved"] or "[]") if h["name"] in called - defined]': "accepted: it differs only for a retrieved function whose code ends in spaces or tabs; the table holds functions' sources as parsed, which do not",
    'amr/stages/response_evolution.py: return response.replace(code, "\\n\\n\\n".join([*modules, code]), 1) if (modules) or True else response': "equivalent: with no module the code is replaced by itself",
    'amr/stages/response_evolution.py: names = [s["name"] for s in json.loads(row["specs"] or "XX[]XX")]': 'equivalent: specs is never empty: decompose writes a JSON list, the methods without it "[]"',
    'amr/stages/response_evolution.py: defined, _ = _names(python_code(row["are_response"] or "XXXX") or "")': 'equivalent: "XXXX" holds no code either',
    'amr/stages/response_evolution.py: defined, _ = _names(python_code(row["are_response"] or "") or "XXXX")': 'equivalent: "XXXX" parses as a bare name: it defines and calls nothing, as ""',
    'amr/stages/response_evolution.py: return bool(names & _names(python_code(row["are_response"] or "XXXX") or "")[1])': 'equivalent: "XXXX" holds no code either',
    'amr/stages/response_evolution.py: return bool(names & _names(python_code(row["are_response"] or "") or "XXXX")[1])': 'equivalent: "XXXX" parses as a bare name: it defines and calls nothing, as ""',
    'amr/stages/response_evolution.py: names = {h["name"] for h in json.loads(row["retrieved"] or "XX[]XX")}': "equivalent: asked only of a row that retrieved a function (matched)",
    'amr/stages/retrieve.py: code = python_code(row["direct_response"] or "XXXX")': 'equivalent: "XXXX" holds no code either',
    "amr/stages/retrieve.py: break": "equivalent: a query's hits come best first, so none after the first under the floor is above it",
    'amr/stages/repair.py: return python_code(row["direct_response"] or "XXXX") or row["direct_response"] or ""': 'equivalent: "XXXX" holds no code either',
    'amr/stages/repair.py: response = row["anstest_response"] or "XXXX"': 'equivalent: "XXXX" holds no test either',
    'amr/stages/repair.py: "code": python_code(row["direct_response"] or "XXXX") or "",': 'equivalent: "XXXX" holds no code either',
}
"""Survivors, by file and the mutated line as ``mutmut show`` prints it (stable across unrelated edits)."""
MIN_SCORE = 0.9


def covered() -> list[str]:
    """The covered files, in order."""
    return sorted({str(p.relative_to(ROOT)) for pattern in COVERED for p in ROOT.glob(pattern)})


def blob(path: str) -> str:
    """The file's git blob id (``git hash-object``): what the record measured."""
    return subprocess.run(
        ["git", "hash-object", path], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def measure(path: str, children: int) -> dict:
    """mutmut on ``path`` against its unit tests in a scratch copy; counts by status and the survivors' diffs."""
    tests = TESTS.get(path, STAGE_TESTS)
    with tempfile.TemporaryDirectory(prefix="amr-mutation-") as scratch:
        work = Path(scratch)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for folder in ("amr", "tests"):
            shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
        settings = {
            "source_paths": ["amr"],
            "only_mutate": [path],
            "pytest_add_cli_args_test_selection": tests,
            "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "--durations=0", "-x"],
            "process_isolation": "forkserver" if path in FORKSERVER else "fork",
            # a timeout counts as a kill: a mutant's tests may take 50 times their clean run (+1 s) of wall time, not
            # mutmut's 15, so that a measurement at nice 19 beside other work counts no starved mutant as killed
            "timeout_multiplier": 50.0,
        }
        config = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + f"\n[tool.mutmut]\n{config}\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        mutmut = [sys.executable, "-m", "mutmut"]
        run = subprocess.run(
            [*mutmut, "run", "--max-children", str(children)], cwd=work, env=env, capture_output=True, text=True
        )
        results = subprocess.run(
            [*mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True
        )
        statuses = dict(re.findall(r"^\s+(\S+): (.+)$", results.stdout, re.MULTILINE))
        if run.returncode or not statuses:
            raise SystemExit(f"mutmut failed on {path}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        survivors = []
        for name, status in sorted(statuses.items()):
            if status in ("killed", "timeout"):
                continue
            shown = subprocess.run([*mutmut, "show", name], cwd=work, env=env, capture_output=True, text=True).stdout
            lines = [line for line in shown.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            changed = [line[1:].strip() for line in lines if line.startswith("+")] or [
                f"removed {line[1:].strip()}" for line in lines
            ]
            survivors.append({"name": name, "status": status, "line": " / ".join(changed), "diff": shown.strip()})
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    tested = len(statuses) - counts.get("skipped", 0)
    return {"file": path, "blob": blob(path), "tests": tests, "mutants": len(statuses), "killed": killed,
            "score": killed / tested if tested else 1.0, "counts": counts, "survivors": survivors}  # fmt: skip


def read_record() -> dict[str, dict]:
    """The measurements docs/mutation.md holds, by file (its JSON block)."""
    if not RECORD.exists():
        return {}
    found = re.search(r"<!-- measurements\n(.*?)\n-->", RECORD.read_text(), re.DOTALL)
    return {m["file"]: m for m in json.loads(found.group(1))} if found else {}


def write_record(measured: dict[str, dict]) -> None:
    rows, listed = [], []
    for m in measured.values():
        rows.append(f"| `{m['file']}` | {m['mutants']} | {m['killed']} | {len(m['survivors'])} | {m['score']:.1%} | "
                    f"{m['measured']} | `{m['commit'][:10]}` | `{m['blob'][:10]}` |")  # fmt: skip
        for s in m["survivors"]:
            why = ACCEPTED.get(f"{m['file']}: {s['line']}", "**unexplained**")
            listed.append(
                f"- `{m['file']}` `{s['name'].split('.')[-1]}` ({s['status']}): `{s['line'] or '(line removed)'}`: {why}"
            )
    text = RECORD_HEADER + "\n".join(
        [
            f"Measured with mutmut {version('mutmut')} on Python {sys.version.split()[0]}.",
            "",
            "| file | mutants | killed | survived | score | measured | commit | blob |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "## Surviving mutants",
            "",
            *(listed or ["None."]),
            "",
            f"<!-- measurements\n{json.dumps(list(measured.values()), indent=1)}\n-->",
            "",
        ]
    )
    RECORD.write_text(text)


RECORD_HEADER = """# Mutation testing

`make mutation` (`tests/mutation.py`) runs [mutmut](https://github.com/boxed/mutmut) 3 on the files whose rules the
fast unit tests hold: `amr/parsing.py`, `amr/filters.py`, `amr/decontam.py`, every file of `amr/stages/` and
`amr/pipelines/fingerprints.py`. Each file is mutated on its own, in a scratch copy of the repository, against its
own unit tests (`TESTS` in `tests/mutation.py`; the stages' are `tests/test_stage_rows.py`, which runs their row
logic in process: Ray workers would import the unmutated code). The score is the share of mutants killed (a failing
test, or a timeout: tests still running at 50 times their clean run's time + 1 s) out of those tested. The mutants of
`amr/filters.py` are forked from mutmut's fork server, not from its main process: LanceDB's threads, started there by
the clean run, do not survive a fork, and a forked mutant would hang to its timeout. Every covered file must score at least 90%; each surviving mutant is listed
below with why it is equivalent (no test could tell it apart) or accepted.

**When this record is stale** (`tests/test_docs.py::test_the_mutation_record_is_not_older_than_a_release`): a release
starts at a commit that changes `version` in `pyproject.toml`. The record names, for each covered file, the blob (the
file's content, `git hash-object`) it measured. The record may lag the covered files by the changes of the current
release, not more: the test fails when a covered file's measured blob is not one the file had at or after the start
of the current release (or now), and when a covered file that existed at the start of the current release is not in
the record. So: run `make mutation` before changing `version`, and for a file new in this release before the next.

"""


def main(argv: list[str]) -> int:
    files = argv or covered()
    children = int(os.environ.get("MUTATION_CHILDREN", "2"))
    measured = read_record()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for path in files:
        print(f"mutating {path} ...", flush=True)
        result = measure(path, children)
        result["measured"], result["commit"] = datetime.date.today().isoformat(), commit
        measured[path] = result
        print(f"  {result['mutants']} mutants, {result['killed']} killed: {result['score']:.1%}", flush=True)
        write_record(dict(sorted(measured.items())))
    bad = [m for m in measured.values() if m["score"] < MIN_SCORE]
    unexplained = [
        f"{m['file']}: {s['line']}" for m in measured.values() for s in m["survivors"]
        if f"{m['file']}: {s['line']}" not in ACCEPTED
    ]  # fmt: skip
    for line in unexplained:
        print(f"unexplained survivor: {line}")
    for m in bad:
        print(f"{m['file']}: score {m['score']:.1%} < {MIN_SCORE:.0%}")
    return 1 if bad or unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The teacher's answer lengths per stage, recorded from real runs of the local teacher, for the modelled engine.

``lengths.json`` (next to this file) holds, per stage (direct, decompose, evolve, tests), the input tokens, output
tokens and, where the answer repeats itself (``amr.runaway.repeating_tail``: a runaway the replicas' watch stops),
the token where the repetition starts, of every teacher call of the recorded runs: no answer text. It was made with

    python -m bench.simcluster.lengths record --first 0 --count 30 --out /tmp/lengths-runs   # under the heavy lock
    python -m bench.simcluster.lengths table /tmp/lengths-runs/* > bench/simcluster/lengths.json

``record`` runs the real distill job (method ``amr``, ``jobs/configs/local_cpu.yaml``) on MBPP train instructions
``first`` .. ``first + count - 1`` (``mbpp-train``) with the local teacher (Qwen2.5-Coder-0.5B-Instruct on vLLM CPU,
bfloat16), the paper's ``max_tokens: 3000`` and one wave, so that runaway answers run to 3,000 tokens as they would
on the cluster. ``table`` reads the runs' stage files.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections.abc import Iterable
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("lengths.json")
STAGES = {
    # stage: (files of a run directory, token column prefix, the answer's text: a test's is its code, as growth keeps it)
    "direct": (("direct.parquet",), "direct", "direct_response"),
    "decompose": (("decompose.parquet", "decompose-retry.parquet"), "md", "md_response"),
    "evolve": (("waves",), "are", "are_response"),
    "tests": (("growth", "bootstrap.parquet"), "test", "test"),
}
RECORD_SETTINGS = [
    "teacher.sampling.max_tokens=3000",
    "teacher.vllm.max_model_len=8192",
    "teacher.vllm.dtype=bfloat16",
    "modules.min_similarity=null",
    "input.limit=null",
]


def record(first: int, count: int, out: Path) -> Path:
    """One distill run of ``count`` MBPP train instructions from ``first`` (its own run directory under ``out``)."""
    from amr.data import mbpp_train_decontaminated

    rows = mbpp_train_decontaminated()[first : first + count]
    run = out / f"{first:03d}-{first + count - 1:03d}"
    run.mkdir(parents=True, exist_ok=True)
    source = run / "instructions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = [*RECORD_SETTINGS, f"input.source={source}", f"run_dir={run / 'run'}", f"wave_size={count}"]
    command = [sys.executable, "-m", "jobs.distill", "--config", "jobs/configs/local_cpu.yaml"]
    subprocess.run([*command, *(a for s in settings for a in ("--set", s))], check=True)
    return run / "run"


def table(runs: Iterable[Path]) -> dict[str, Any]:
    """The input and output tokens of every teacher call in the run directories, per stage, and the token where
    the answer starts repeating itself (its position in the text, scaled to its tokens) or None."""
    from amr.runaway import repeating_tail
    from amr.storage import RunDir

    calls: dict[str, list[list[int | None]]] = {stage: [] for stage in STAGES}
    runs = sorted(runs)
    for path in runs:
        run = RunDir(str(path / "run") if (path / "run").is_dir() else str(path))
        for stage, (files, prefix, text) in STAGES.items():
            columns = [f"{prefix}_input_tokens", f"{prefix}_output_tokens", f"{prefix}_error", text]
            for name in files:
                if not run.exists(name):
                    continue
                for batch in run.scan_columns(name, columns):
                    for tokens_in, tokens_out, error, answer in zip(*batch.values()):
                        if not tokens_in or error:  # no call (a wave row with nothing to evolve), or a failed one
                            continue
                        repeat = repeating_tail(answer or "")
                        start = None if repeat is None else round(repeat[0] / len(answer) * tokens_out)
                        calls[stage].append([int(tokens_in), int(tokens_out), start])
    return {
        "made": {
            "date": date.today().isoformat(),
            "how": "python -m bench.simcluster.lengths record ... && ... table (see its docstring)",
            "teacher": "qwen2.5-coder-0.5b-instruct on vLLM CPU (bfloat16), greedy",
            "settings": RECORD_SETTINGS,
            "runs": [p.name for p in runs],
            "max_tokens": 3000,
        },
        "calls": calls,
    }


@cache
def calls() -> dict[str, list[tuple[int, int, int | None]]]:
    """The recorded (input tokens, output tokens, token where a runaway starts repeating itself or None) per stage."""
    table = json.loads(TABLE.read_text())["calls"]
    return {stage: [(c[0], c[1], c[2] if len(c) > 2 else None) for c in found] for stage, found in table.items()}


def draw(stage: str, key: str) -> tuple[int, int, int | None]:
    """A recorded call of ``stage``, chosen by ``key`` (the same key, the same call)."""
    found = calls()[stage]
    return found[random.Random(key).randrange(len(found))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("--first", type=int, required=True)
    rec.add_argument("--count", type=int, required=True)
    rec.add_argument("--out", type=Path, required=True)
    tab = commands.add_parser("table")
    tab.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "record":
        print(record(args.first, args.count, args.out))
    else:
        print(json.dumps(table(args.runs), indent=1))


if __name__ == "__main__":
    main()

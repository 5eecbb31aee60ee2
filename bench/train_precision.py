"""Training precision on this machine's CPU: `amr train` of the same student on the same rows, once per precision
(fp32; bf16: bfloat16 compute, float32 master weights and AdamW state; bf16-pure: everything in bfloat16), with the
same seed, steps, schedule and batches. Reports each run's tokens/s, wall time and peak memory, and the loss curves
side by side (each step's loss is on the same batch in every run), each student's loss on rows no run trained on
(float32 compute; the model before training beside them), and what ``precision: auto`` is here.

    python bench/train_precision.py [--model smollm2-135m-instruct] [--steps 12] [--precisions fp32,bf16]
                                    [--output runs/bench-train-precision]

The rows are MBPP train problems 601-974 (the problem and its first test) with their reference solutions as the
responses; 2 workers of 1 CPU each (FSDP2 over both, gloo), sequence 512, global batch 4. Writes
``<output>/precision.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from amr.config import TrainConfig, load_config
from amr.data import mbpp_train
from amr.hardware import cpu_flags
from amr.model_store import resolve
from amr.training import precision
from train.data import example, tokenized
from train.trainer import run

PRECISIONS = ("fp32", "bf16", "bf16-pure")
HELD_OUT = 48
"""Rows of the dataset that no run trained on, each model's held-out loss is taken over."""


def rows(folder: Path) -> str:
    """MBPP train 601-974 as a distill-style dataset (instruction, response: the reference solution)."""
    solutions = {
        r["task_id"]: r["code"].replace("\r\n", "\n")
        for r in map(json.loads, (Path(__file__).parent.parent / "amr/data/mbpp/mbpp.jsonl").read_text().splitlines())
    }
    table = [
        {"id": r["id"], "instruction": r["instruction"], "response": solutions[int(r["id"].rpartition("/")[2])]}
        for r in mbpp_train()
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(table), folder / "dataset.parquet")
    return str(folder)


def held_out_loss(models: dict[str, str], dataset: str, runs: list[Path]) -> dict[str, float]:
    """Each model's mean loss per completion token, in float32, on the first ``HELD_OUT`` rows of ``dataset`` (by id)
    that none of ``runs`` streamed (their ``shards.json``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trained = {i for run_dir in runs for shard in json.loads((run_dir / "shards.json").read_text()) for i in shard}
    held = sorted(
        (r for r in pq.read_table(Path(dataset) / "dataset.parquet").to_pylist() if r["id"] not in trained),
        key=lambda r: r["id"],
    )[:HELD_OUT]
    tokenizer = AutoTokenizer.from_pretrained(next(iter(models.values())))
    items = [item for r in held if (item := tokenized(example(r, "chat", r["id"]), tokenizer, 512))]
    losses = {}
    for name, path in models.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        total = tokens = 0.0
        with torch.no_grad():
            for item in items:
                labels = torch.tensor([item["labels"]])
                count = int((labels[:, 1:] != -100).sum())
                total += model(input_ids=torch.tensor([item["input_ids"]]), labels=labels).loss.item() * count
                tokens += count
        losses[name] = total / tokens
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precisions", default="fp32,bf16", help=f"comma-separated, of {', '.join(PRECISIONS)}")
    parser.add_argument("--output", default="runs/bench-train-precision")
    args = parser.parse_args()
    names = args.precisions.split(",")
    if unknown := set(names) - set(PRECISIONS):
        parser.error(f"--precisions: {', '.join(sorted(unknown))}: not one of {', '.join(PRECISIONS)}")
    out = Path(args.output)
    if taken := [str(out / n) for n in names if (out / n).exists()]:
        parser.error(f"{', '.join(taken)}: exists (amr train would resume it); choose another --output")
    dataset = rows(out / "data")
    results = {}
    for name in names:
        config = load_config(
            TrainConfig,
            "jobs/configs/train_local_cpu.yaml",
            [
                f"model={args.model}",
                f"dataset={dataset}",
                f"output={out / name}",
                f"max_steps={args.steps}",
                f"save_steps={args.steps}",
                f"precision={name}",
                "global_batch_size=4",
                "learning_rate=2e-5",
            ],
        )
        summary = run(config)
        results[name] = {
            "tokens_per_s": summary["tokens_per_s"],
            "seconds": summary["seconds"],
            "wall_time_s": summary["wall_time_s"],
            "steps": summary["steps"],
            "tokens": summary["tokens"],
            "final_loss": summary["final_loss"],
            "losses": json.loads(
                sorted((out / name / "checkpoints" / "train").glob("checkpoint_*/trainer.json"))[-1].read_text()
            )["losses"],
            "peak_rss_gb": max(max(w["load_peak"], w["train_peak"]) for w in summary["workers"]) / 1e9,
        }
    students = {"before training": resolve(args.model)} | {n: str(out / n / "model") for n in names}
    held_out = held_out_loss(students, dataset, [out / n for n in names])
    auto = precision(TrainConfig())
    report = {
        "cpu_flags_bf16": sorted(f for f in cpu_flags() if "bf16" in f),
        "auto": auto,
        "runs": results,
        "held_out_loss": held_out,
    }
    (out / "precision.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"auto: {auto}; bf16 flags: {', '.join(report['cpu_flags_bf16']) or 'none'}")
    base = results[names[0]]
    print(f"| precision | tokens/s | x {names[0]} | train s | mean loss | final loss | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        speedup = r["tokens_per_s"] / base["tokens_per_s"]
        mean = sum(r["losses"]) / len(r["losses"])
        print(
            f"| {name} | {r['tokens_per_s']} | {speedup:.2f} | {r['seconds']} | {mean:.4f} | {r['final_loss']:.4f} "
            f"| {r['peak_rss_gb']:.2f} |"
        )
    print(f"\nloss on {HELD_OUT} rows no run trained on: " + ", ".join(f"{n} {v:.4f}" for n, v in held_out.items()))
    print(f"\n| step | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(names)}")
    for step, losses in enumerate(zip(*(r["losses"] for r in results.values())), 1):
        print(f"| {step} | {' | '.join(f'{loss:.4f}' for loss in losses)} |")


if __name__ == "__main__":
    main()

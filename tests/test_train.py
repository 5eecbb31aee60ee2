"""Student fine-tuning (train/, `amr train`) with the tiny model: FSDP2 in Ray Train on 2 CPU workers (gloo)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from amr.config import ConfigError, TrainConfig, load_config
from amr.data import InputError
from amr.report.collect import training_curves
from amr.training import precision, saved_dtype, schedule
from jobs.cli import app
from train.data import count_examples, example, micro_batches, tokenized
from train.model import mesh_shape
from train.trainer import run

runner = CliRunner()


def rows(n: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        instruction = f"Write a function add{i}(a, b) that returns a + b + {i}."
        response = f"def add{i}(a, b):\n" + "    # add\n" * (i % 3) + f"    return a + b + {i}\n"
        out.append(
            {
                "id": f"t/{i}",
                "instruction": instruction,
                "response": response,
                "messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}],
                "tests": [f"assert add{i}(1, 2) == {3 + i}"],
                "tests_passed": True,
            }
        )
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """A distill-style run directory with dataset.parquet."""
    run_dir = tmp_path_factory.mktemp("run")
    pq.write_table(pa.Table.from_pylist(rows()), run_dir / "dataset.parquet")
    return str(run_dir)


def tiny(tiny_model: str, *extra: str) -> list[str]:
    """Overrides for a short run: 8 rows, global batch 4 (2 workers x 2), 6 steps, a checkpoint every 2."""
    return [
        f"model={tiny_model}",
        "seq_len=128",
        "global_batch_size=4",
        "micro_batch_size=2",
        "max_steps=6",
        "save_steps=2",
        "keep_checkpoints=2",
        "scaling.workers=2",
        "gradient_checkpointing=false",
        "learning_rate=1e-3",
        *extra,
    ]


def test_train_config_defaults_follow_the_paper_and_configs_validate(write):
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.max_steps, cfg.seq_len, cfg.optimizer, cfg.precision, cfg.global_batch_size) == (
        3,
        200,
        2048,
        "adamw_torch",
        "auto",
        "auto",
    )
    local = load_config(TrainConfig, "jobs/configs/train_local_cpu.yaml")
    assert (local.model, local.seq_len, local.scaling.workers, local.scaling.use_gpu) == (
        "smollm2-135m-instruct",
        512,
        2,
        False,
    )
    gpu = load_config(TrainConfig, "jobs/configs/train_gpu.yaml")
    assert (gpu.epochs, gpu.max_steps, gpu.seq_len, gpu.scaling.use_gpu, gpu.global_batch_size) == (
        3,
        200,
        2048,
        True,
        "auto",
    )
    assert (gpu.scaling.workers, gpu.scaling.sharding, precision(gpu), saved_dtype(gpu)) == (
        8,
        "auto",
        "bf16",
        "bfloat16",
    )
    bad = write("bad.yaml", "finetune: lora\nscaling:\n  workers: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: scaling.workers:"):
        load_config(TrainConfig, bad)


def test_the_global_batch_fits_the_papers_epochs_into_its_steps():
    """Issue 32: 200 steps of 128 stop at 2.56 epochs of 10,000 rows; the derived batch covers all 3."""
    gpu = load_config(TrainConfig, "jobs/configs/train_gpu.yaml")
    derived = schedule(gpu, 10_000)
    assert (derived.global_batch, derived.accumulation, derived.steps, derived.epochs) == (160, 10, 188, 3)
    assert not derived.capped and derived.steps_per_epoch == 62.5
    assert derived.describe() == (
        "10000 rows, global batch 160 (derived from the data) = 8 workers x micro batch 2 x 10 accumulation: "
        "62.50 steps per epoch, 188 steps = 3.00 epochs"
    )
    fixed = schedule(gpu.model_copy(update={"global_batch_size": 128}), 10_000)
    assert (fixed.steps, round(fixed.epochs, 2), fixed.capped) == (200, 2.56, True)
    assert fixed.describe().endswith("200 steps = 2.56 epochs; capped by max_steps at 2.56 of 3 epochs")
    for rows in (16, 1_000, 33_333, 100_000):  # whatever the data, the epochs fit the steps
        plan = schedule(gpu, rows)
        assert plan.steps <= 200 and plan.epochs == 3 and plan.global_batch % 16 == 0
        assert (
            plan.global_batch == 16
            or schedule(gpu.model_copy(update={"global_batch_size": plan.global_batch - 16}), rows).capped
        )
    two = TrainConfig(micro_batch_size=2, global_batch_size=4, epochs=2, max_steps=10)
    assert (schedule(two, 9).rows, schedule(two, 9).steps) == (8, 4)  # the equal split drops the odd row
    with pytest.raises(ConfigError, match="1 training rows for 2 workers"):
        schedule(two, 1)
    with pytest.raises(ConfigError, match=r"global_batch_size: 6 is not a multiple .* \(2 x 2\)"):
        schedule(two.model_copy(update={"global_batch_size": 6}), 9)


def test_sharding_shards_within_a_node_and_replicates_across_nodes():
    assert mesh_shape("auto", [0, 0]) == ("full", (2,))
    assert mesh_shape("auto", [0] * 8 + [1] * 8) == ("hybrid", (2, 8))
    assert mesh_shape("auto", [0, 1]) == ("hybrid", (2, 1))  # a worker per node: replicas, nothing sharded
    assert mesh_shape("full", [0, 1]) == ("full", (2,))
    assert mesh_shape("none", [0, 0, 1, 1]) == ("none", (4, 1))
    with pytest.raises(ValueError, match=r"same number of workers on every node.*\[0, 0, 1\]"):
        mesh_shape("hybrid", [0, 0, 1])


@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_loss_mask_covers_only_the_response(tiny_model, template):
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    done = [tokenized(example(row, template, "t"), tokenizer, 128) for row in rows()]
    for row, tokenized_row in zip(rows(), done):
        ids, labels = tokenized_row["input_ids"], tokenized_row["labels"]
        if template == "chat":
            prompt = tokenizer.apply_chat_template(
                [row["messages"][0]], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            completion = row["response"] + "<|im_end|>\n"
        else:
            prompt = tokenizer(
                f"Below is an instruction that describes a task. Write a response that appropriately "
                f"completes the request.\n\n### Instruction:\n{row['instruction']}\n\n### Response:\n"
            )["input_ids"]
            completion = row["response"] + tokenizer.eos_token
        n = len(prompt)
        assert ids[:n] == prompt
        assert labels[:n] == [-100] * n  # no loss on the prompt
        assert labels[n:] == ids[n:] and len(ids) > n  # the response's own token ids
        assert tokenizer.decode(labels[n:]) == completion
    first = example(rows()[0], template, "t")
    n = done[0]["labels"].count(-100)
    cut = tokenized(first, tokenizer, n + 2)  # seq_len: the first 2 response tokens kept
    assert cut == {"input_ids": done[0]["input_ids"][: n + 2], "labels": done[0]["labels"][: n + 2]}
    assert tokenized(first, tokenizer, n) is None  # the cut leaves no response: nothing to learn from
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(done[:2])
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["labels"][padded] == -100).all()


def test_packing_keeps_each_example_and_its_mask(tiny_model):
    """TRL's best-fit packing of a Ray Data batch: rows of at most seq_len tokens, every example's tokens and labels
    kept, their lengths in seq_lengths; the collator restarts positions at each example."""
    from transformers import AutoTokenizer

    from train.data import _pack_batch

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    unpacked = [tokenized(example(row, "chat", "t"), tokenizer, 128) for row in rows()]
    table = pa.table(
        {"ids": [[r["id"]] for r in rows()], **{k: [u[k] for u in unpacked] for k in ("input_ids", "labels")}}
    )
    packed = _pack_batch(table, 128).to_pylist()
    assert len(packed) < len(unpacked) and all(len(r["input_ids"]) <= 128 for r in packed)
    assert sorted(n for r in packed for n in r["seq_lengths"]) == sorted(len(u["input_ids"]) for u in unpacked)
    assert sum(t != -100 for r in packed for t in r["labels"]) == sum(t != -100 for u in unpacked for t in u["labels"])
    batch = next(micro_batches(iter(packed[:1]), 1, tokenizer.pad_token_id, packed=True))
    assert (batch["position_ids"][0] == 0).sum() == len(packed[0]["seq_lengths"])


def test_bad_datasets_name_the_file_and_field(tmp_path, tiny_model):
    with pytest.raises(InputError, match="dataset.parquet: no such dataset file"):
        count_examples(str(tmp_path / "nowhere"), "chat")
    (tmp_path / "empty").mkdir()
    pq.write_table(
        pa.Table.from_pylist([{"id": "a", "instruction": "x", "response": "y"}]).slice(0, 0),
        tmp_path / "empty" / "dataset.parquet",
    )
    with pytest.raises(InputError, match=r"empty/dataset.parquet: no rows"):
        count_examples(str(tmp_path / "empty"), "chat")
    (tmp_path / "bad.jsonl").write_text(
        json.dumps(rows(2)[1]) + "\n" + json.dumps({"id": "a", "instruction": "x", "answer": "y"})
    )
    with pytest.raises(
        InputError,
        match=r"bad.jsonl: row 1 \(id 'a'\): field 'response' is missing \(columns: id, instruction, answer\)",
    ):
        count_examples(str(tmp_path / "bad.jsonl"), "alpaca")
    with pytest.raises(InputError, match="field 'messages' must end with a non-empty assistant message"):
        example(
            {"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}, "chat", "f"
        )
    (tmp_path / "stage" / "dataset.parquet").mkdir(parents=True)  # as distill writes it: a directory of files
    for part in (0, 1):
        pq.write_table(
            pa.Table.from_pylist(rows()[part * 4 : part * 4 + 4]),
            tmp_path / "stage" / "dataset.parquet" / f"{part}.parquet",
        )
    assert count_examples(str(tmp_path / "stage"), "chat") == (8, str(tmp_path / "stage" / "dataset.parquet"))
    (tmp_path / "lines.jsonl").write_text('{"id": "a", "instruction": "x", "response": "y"}\n{oops\n')
    with pytest.raises(InputError, match="lines.jsonl:2: invalid JSON"):
        count_examples(str(tmp_path / "lines.jsonl"), "chat")
    with pytest.raises(ConfigError, match="global_batch_size: 5 is not a multiple"):
        run(load_config(TrainConfig, None, [f"dataset={tmp_path}", f"output={tmp_path}/o", "global_batch_size=5"]))
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            str(tmp_path / "empty"),
            "--output",
            str(tmp_path / "out"),
            "--set",
            f"model={tiny_model}",
        ],
    )
    assert result.exit_code == 2 and "dataset.parquet: no rows" in result.output


def checkpoint_dirs(out):
    """Ray Train's checkpoint directories of a run, oldest first."""
    return sorted(p for p in (out / "checkpoints" / "train").glob("checkpoint_*") if p.is_dir())


@pytest.fixture(scope="module")
def trained(ray_local, tiny_model, dataset, tmp_path_factory):
    """`amr train` end to end on this machine's Ray: LoRA with gradient checkpointing, 6 steps on 2 CPU workers (one
    node: FSDP2 shards over both)."""
    out = tmp_path_factory.mktemp("student")
    lora = ["finetune=lora", "lora.r=4", "lora.alpha=8", "gradient_checkpointing=true"]
    result = runner.invoke(
        app,
        ["train", "--dataset", dataset, "--output", str(out), *(f"--set={o}" for o in tiny(tiny_model, *lora))],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_amr_train_cli_two_workers(trained, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, output = trained
    summary = json.loads((out / "train.json").read_text())
    assert (summary["steps"], summary["examples"], summary["resumed_from_step"]) == (6, 8, 0)
    assert (summary["sharding"], summary["mesh"], [w["rank"] for w in summary["workers"]]) == ("full", [2], [0, 1])
    assert summary["schedule"] | {"steps_per_epoch": 2.0} == summary["schedule"]  # 8 rows, 4 a step
    assert summary["tokens"] > 0 and summary["tokens_per_s"] > 0
    assert summary["precision"] == precision(load_config(TrainConfig, None, tiny(tiny_model)))
    assert 0 < summary["final_loss"] < 7.6  # ln(2000 tokens) = 7.6 for a random model
    assert summary["versions"]["trl"] == "1.16.0"
    assert f"6 steps = 3.00 epochs of 8 rows at 4 a step, final loss {summary['final_loss']:.4f}" in output
    assert "2 workers (full sharding, " in output and "tokens/s" in output
    assert f"model: {out / 'model'}" in output
    shards = json.loads((out / "shards.json").read_text())  # each worker streamed its own half of the rows
    assert sorted(shards[0] + shards[1]) == sorted(r["id"] for r in rows()) and not set(shards[0]) & set(shards[1])
    curves = training_curves(str(out))  # TensorBoard event files under out/tensorboard, rank 0's
    assert [step for step, _ in curves["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert curves["train/loss"][-1][1] == pytest.approx(summary["final_loss"], abs=1e-4)
    assert max(v for _, v in curves["train/learning_rate"]) > 0  # after warm-up
    assert all(v > 0 for _, v in curves["train/tokens_per_s"])
    checkpoints = checkpoint_dirs(out)
    assert len(checkpoints) == 2  # CheckpointConfig(num_to_keep=2) of the 3 saved (steps 2, 4, 6)
    assert json.loads((checkpoints[-1] / "trainer.json").read_text())["step"] == 6
    shards_written = sorted(p.name for p in (checkpoints[-1] / "state").iterdir())
    assert shards_written == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each worker's own shards
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])  # LoRA merged into a plain model
    assert not any("lora" in k for k in model.state_dict())
    assert model.dtype == getattr(torch, saved_dtype(load_config(TrainConfig, None, tiny(tiny_model))))
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=model.dtype)
    assert any(not v.equal(base.state_dict()[k]) for k, v in model.state_dict().items())
    tokenizer = AutoTokenizer.from_pretrained(summary["model_dir"])
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write add."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 6


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_rerun_with_more_steps_resumes(trained, tiny_model, dataset):
    out, _ = trained
    lora = ["finetune=lora", "lora.r=4", "lora.alpha=8", "gradient_checkpointing=true"]
    again = run(
        load_config(
            TrainConfig,
            None,
            [f"dataset={dataset}", f"output={out}", *tiny(tiny_model, *lora, "max_steps=8", "epochs=4")],
        )
    )
    assert (again["steps"], again["resumed_from_step"]) == (8, 6)
    assert json.loads((out / "train.json").read_text())["steps"] == 8
    assert [step for step, _ in training_curves(str(out))["train/loss"]] == list(range(1, 9))

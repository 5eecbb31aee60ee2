"""Student fine-tuning (train/, `amr train`) with the tiny model: TRL's SFTTrainer in Ray Train, 2 CPU workers (gloo)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from amr.config import ConfigError, TrainConfig, load_config
from amr.data import InputError
from amr.report.collect import training_curves
from jobs.cli import app
from tests.support.faults import FailOnce
from train.data import count_examples, example
from train.loop import build_trainer
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
        "gradient_checkpointing=false",
        "learning_rate=1e-3",
        *extra,
    ]


def test_train_config_defaults_follow_the_paper_and_configs_validate(write):
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.max_steps, cfg.seq_len, cfg.optimizer, cfg.precision) == (
        3,
        200,
        2048,
        "adamw_torch",
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
    assert (gpu.epochs, gpu.max_steps, gpu.seq_len, gpu.scaling.use_gpu) == (3, 200, 2048, True)
    bad = write("bad.yaml", "finetune: lora\nscaling:\n  workers: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: scaling.workers:"):
        load_config(TrainConfig, bad)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_loss_mask_covers_only_the_response(tiny_model, dataset, tmp_path, template):
    config = load_config(
        TrainConfig, None, tiny(tiny_model, f"template={template}", "scaling.workers=1", f"dataset={dataset}")
    )
    trainer = build_trainer(config, tiny_model, str(tmp_path))
    tokenizer = trainer.processing_class
    assert trainer.args.max_steps == 6  # 3 epochs of 8 rows at 4 a step, under max_steps
    assert len(trainer.train_dataset) == 8
    for row, tokenized in zip(rows(), trainer.train_dataset):
        ids, labels = tokenized["input_ids"], tokenized["labels"]
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
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["labels"][padded] == -100).all()


@pytest.mark.timeout(180)
def test_packing_keeps_the_mask_and_trains(tiny_model, dataset, tmp_path):
    """Packed rows of seq_len tokens (TRL best-fit, sequence boundaries kept), trained in process for 2 steps."""
    config = load_config(
        TrainConfig, None, tiny(tiny_model, "packing=true", "scaling.workers=1", "max_steps=2", f"dataset={dataset}")
    )
    unpacked = build_trainer(
        config.model_copy(update={"packing": False}), tiny_model, str(tmp_path / "a")
    ).train_dataset
    trainer = build_trainer(config, tiny_model, str(tmp_path / "b"))
    packed = trainer.train_dataset
    assert len(packed) < len(unpacked) and all(len(r["input_ids"]) <= 128 for r in packed)
    assert sorted(n for r in packed for n in r["seq_lengths"]) == sorted(len(r["input_ids"]) for r in unpacked)
    assert sum(t != -100 for r in packed for t in r["labels"]) == sum(t != -100 for r in unpacked for t in r["labels"])
    assert trainer.train().global_step == 2


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
    """`amr train` end to end: 6 steps on 2 CPU workers."""
    out = tmp_path_factory.mktemp("student")
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            dataset,
            "--output",
            str(out),
            "--set",
            "scaling.workers=2",
            *(f"--set={o}" for o in tiny(tiny_model)),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_amr_train_cli_two_workers(trained, tiny_model):
    from transformers import AutoModelForCausalLM

    out, output = trained
    summary = json.loads((out / "train.json").read_text())
    assert (summary["steps"], summary["workers"], summary["examples"], summary["resumed_from_step"]) == (6, 2, 8, 0)
    assert summary["tokens"] > 0 and summary["tokens_per_s"] > 0 and summary["bf16"] is False
    assert 0 < summary["final_loss"] < 7.6  # ln(2000 tokens) = 7.6 for a random model
    assert summary["versions"]["trl"] == "1.16.0"
    assert f"6 steps, final loss {summary['final_loss']:.4f}" in output and "tokens/s" in output
    assert f"model: {out / 'model'}" in output
    curves = training_curves(str(out))  # TensorBoard event files under out/tensorboard, rank 0's
    assert [step for step, _ in curves["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert curves["train/loss"][-1][1] == pytest.approx(summary["final_loss"], abs=1e-4)
    assert max(v for _, v in curves["train/learning_rate"]) > 0  # after warm-up
    assert all(v > 0 for _, v in curves["train/tokens_per_s"])
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [k for k, v in model.state_dict().items() if not v.equal(base.state_dict()[k])]
    assert changed  # full fine-tuning moved the weights
    checkpoints = checkpoint_dirs(out)
    assert len(checkpoints) == 2  # CheckpointConfig(num_to_keep=2) of the 3 saved (steps 2, 4, 6)
    state = json.loads((checkpoints[-1] / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and (checkpoints[-1] / "checkpoint" / "optimizer.pt").is_file()


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_resume_after_a_failure_and_on_rerun(trained, tiny_model, dataset, tmp_path):
    """A worker failure after the step-2 checkpoint: Ray Train restarts the group (FailureConfig), the Trainer
    resumes from that checkpoint and ends where an uninterrupted run ends. Rerunning with more steps resumes at 6."""
    expected = json.loads((trained[0] / "train.json").read_text())["final_loss"]
    overrides = [f"dataset={dataset}", f"output={tmp_path}", *tiny(tiny_model)]
    summary = run(load_config(TrainConfig, None, overrides), callbacks=[FailOnce(2)])
    assert (summary["steps"], summary["resumed_from_step"]) == (6, 2)
    assert summary["final_loss"] == pytest.approx(expected, abs=1e-4)
    again = run(load_config(TrainConfig, None, [*overrides, "max_steps=8", "epochs=4"]))
    assert (again["steps"], again["resumed_from_step"]) == (8, 6)
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 8


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_lora_is_merged_into_a_plain_model_that_generates(ray_local, tiny_model, dataset, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary = run(
        load_config(
            TrainConfig,
            None,
            [
                f"dataset={dataset}",
                f"output={tmp_path}",
                *tiny(tiny_model),
                "finetune=lora",
                "lora.r=4",
                "lora.alpha=8",
                "max_steps=2",
                "gradient_checkpointing=true",
            ],
        )
    )
    assert summary["steps"] == 2
    checkpoint = checkpoint_dirs(tmp_path)[-1] / "checkpoint"
    assert (checkpoint / "adapter_model.safetensors").is_file()  # checkpoints hold the adapter
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert not any("lora" in k for k in model.state_dict())
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert any(not v.equal(base.state_dict()[k]) for k, v in model.state_dict().items())
    tokenizer = AutoTokenizer.from_pretrained(summary["model_dir"])
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write add."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6

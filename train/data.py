"""The SFT dataset of a distill run: checked, tokenized and packed once with Ray Data, streamed to each worker.

Rows come from ``dataset.parquet`` (else ``dataset.jsonl``) of a run directory (a local path or an object-store
URI) or from one such file. The driver checks them all, a row at a time (an error names the file, the row and the
field); Ray Data then reads them on the cluster, turns each into a prompt-completion example (the prompt is the
instruction, the completion the response), tokenizes it with the loss on the completion only (labels -100 on the
prompt, as TRL's ``completion_only_loss``), shuffles the rows once (seeded), packs them (TRL's best-fit packing)
if asked, and keeps the result in the object store. Each worker streams its equal share (``get_dataset_shard``),
pass after pass, each pass in its own seeded order, and batches it with TRL's collator.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from amr.data import InputError
from amr.prompts.student import ALPACA
from amr.storage import RunDir

FILES = ("dataset.parquet", "dataset.jsonl")
TOKENIZED = pa.schema(
    [("ids", pa.list_(pa.string())), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))]
)
LOCAL_SHUFFLE_ROWS = 1024
"""Rows a worker's pass is shuffled within (the rows were shuffled as a whole once, before the split)."""
TOKENIZE_ROWS = 1024
"""Rows of a tokenizing task. Ray Data reads a small file as blocks of a few rows (twice the cluster's CPUs of them),
and each block's task imports transformers in a Ray worker of its own: 4 rows took 10 s in 4 cold workers on 2 cores."""


def dataset_file(source: str) -> tuple[RunDir, str]:
    """Where the rows of ``source`` (a run directory or a .parquet/.jsonl file) are: a folder and a name."""
    if source.endswith((".parquet", ".jsonl")):
        folder, _, name = source.rpartition("/")
        run_dir, names = RunDir(folder or "."), (name,)
    else:
        run_dir, names = RunDir(source), FILES
    name = next((n for n in names if run_dir.exists(n)), None)
    if name is None:
        raise InputError(
            f"{run_dir.path(names[0])}: no such dataset file"
            + (f" (nor {names[1]})" if len(names) > 1 else "")
            + "; run `amr distill` first"
        )
    return run_dir, name


def iter_examples(source: str, template: str) -> Iterator[dict[str, Any]]:
    """The examples of ``source``, a row at a time (nothing is held), each checked: an error names the row
    and the field."""
    return _examples(*dataset_file(source), template)


def count_examples(source: str, template: str) -> tuple[int, str]:
    """Every example of ``source`` checked; their number and the file they come from (none is an error)."""
    run_dir, name = dataset_file(source)
    count = sum(1 for _ in _examples(run_dir, name, template))
    if not count:
        raise InputError(f"{run_dir.path(name)}: no rows: nothing to train on")
    return count, run_dir.path(name)


def _examples(run_dir: RunDir, name: str, template: str) -> Iterator[dict[str, Any]]:
    where = run_dir.path(name)
    for i, row in enumerate(_rows(run_dir, name, where)):
        at = f"{where}: row {i}" + (f" (id {row['id']!r})" if isinstance(row, dict) and "id" in row else "")
        yield example(row, template, at)


def _rows(run_dir: RunDir, name: str, where: str) -> Iterator[Any]:
    if name.endswith(".parquet"):
        try:
            yield from (row for batch in run_dir.scan_stage(name) for row in batch.to_pylist())
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{where}: not a readable Parquet file: {exc}") from None
        return
    for i, line in enumerate(run_dir.read_lines(name), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}:{i}: invalid JSON: {exc.msg}") from None


def example(row: Any, template: str, at: str) -> dict[str, Any]:
    """A prompt-completion example: chat messages (``chat``) or strings (``alpaca``); ``at`` names the row."""
    if not isinstance(row, dict):
        raise InputError(f"{at}: expected an object with 'instruction' and 'response'")
    if template == "chat" and row.get("messages") is not None:
        messages = _messages(row["messages"], at)
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    instruction, response = (_text(row, field, at) for field in ("instruction", "response"))
    if template == "chat":
        return {
            "prompt": [{"role": "user", "content": instruction}],
            "completion": [{"role": "assistant", "content": response}],
        }
    return {"prompt": ALPACA.format(instruction=instruction), "completion": response}


def _text(row: dict[str, Any], field: str, at: str) -> str:
    if field not in row:
        raise InputError(f"{at}: field {field!r} is missing (columns: {', '.join(map(str, row))})")
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{at}: field {field!r} must be a non-empty string")
    return value


def _messages(messages: Any, at: str) -> list[dict[str, str]]:
    ok = (
        isinstance(messages, list)
        and len(messages) >= 2
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    )
    if not ok:
        raise InputError(f"{at}: field 'messages' must be a list of at least two {{role, content}} strings")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise InputError(f"{at}: field 'messages' must end with a non-empty assistant message (the response)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def tokenized(example_: dict[str, Any], tokenizer: Any, seq_len: int) -> dict[str, list[int]] | None:
    """``input_ids`` and ``labels`` (-100 on the prompt) of a prompt-completion example, cut to ``seq_len`` tokens;
    None when the cut leaves no completion token. The completion starts where the prompt's tokens and the whole
    example's part (TRL's ``common_prefix_length``); a string completion ends with the EOS token."""
    from trl.data_utils import common_prefix_length

    prompt, completion = example_["prompt"], example_["completion"]
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        prompt_ids = prompt_ids["input_ids"]
    else:
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        ids = tokenizer(text=prompt + completion + tokenizer.eos_token)["input_ids"]
    start = common_prefix_length(prompt_ids, ids)
    labels = ([-100] * start + ids[start:])[:seq_len]
    if all(label == -100 for label in labels):
        return None
    return {"input_ids": ids[:seq_len], "labels": labels}


@functools.cache
def _tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def _tokenize_batch(batch: pa.Table, model_path: str, template: str, seq_len: int) -> pa.Table:
    tokenizer = _tokenizer(model_path)
    out: dict[str, list] = {"ids": [], "input_ids": [], "labels": []}
    for row in batch.to_pylist():
        done = tokenized(example(row, template, f"row {row.get('id')!r}"), tokenizer, seq_len)
        if done is not None:
            out["ids"].append([str(row.get("id", ""))])
            out["input_ids"].append(done["input_ids"])
            out["labels"].append(done["labels"])
    return pa.table(out, schema=TOKENIZED)


def _pack_batch(batch: pa.Table, seq_len: int) -> pa.Table:
    """TRL's best-fit packing of a batch's rows into rows of at most ``seq_len`` tokens (``seq_lengths`` keeps each
    example's length: no attention across examples). A packed row holds several examples: their ids are not kept."""
    import datasets
    from trl import pack_dataset

    datasets.disable_progress_bars()
    tokens = datasets.Dataset(datasets.table.InMemoryTable(batch.select(["input_ids", "labels"])))
    return pack_dataset(tokens, seq_len, "bfd").data.table


def training_rows(
    source: str, examples: int, template: str, model_path: str, seq_len: int, packing: bool, seed: int
) -> Any:
    """The tokenized rows of ``source`` (``examples`` rows) as a materialised Ray Dataset: ``ids`` (the row's id),
    ``input_ids`` and ``labels``; packed: ``input_ids``, ``labels`` and ``seq_lengths``."""
    import ray.data

    run_dir, name = dataset_file(source)
    path = run_dir.path(name)
    rows = ray.data.read_parquet(path) if name.endswith(".parquet") else ray.data.read_json(path, lines=True)
    rows = (
        rows.repartition(-(-examples // TOKENIZE_ROWS))
        .map_batches(
            _tokenize_batch,
            fn_kwargs={"model_path": model_path, "template": template, "seq_len": seq_len},
            batch_format="pyarrow",
        )
        .random_shuffle(seed=seed)
    )
    if packing:
        rows = rows.map_batches(_pack_batch, fn_kwargs={"seq_len": seq_len}, batch_format="pyarrow", batch_size=4096)
    return rows.materialize()


def stream(shard: Any, rows_per_pass: int, start: int, stop: int, seed: int) -> Iterator[dict[str, Any]]:
    """Rows ``start`` to ``stop`` (exclusive) of a worker's passes over its shard, one pass after the other, pass
    ``p`` shuffled within ``LOCAL_SHUFFLE_ROWS`` by seed ``seed + p``: the same rows in the same order whenever the
    stream starts again (a resumed run skips to ``start``)."""
    epoch, skip = divmod(start, rows_per_pass)
    position = start
    while position < stop:
        seen = 0
        batches = shard.iter_batches(
            batch_format="pyarrow",
            local_shuffle_buffer_size=min(rows_per_pass, LOCAL_SHUFFLE_ROWS),
            local_shuffle_seed=seed + epoch,
        )
        for batch in batches:
            for row in batch.to_pylist():
                seen += 1
                if seen <= skip:
                    continue
                yield row
                position += 1
                if position == stop:
                    return
        if seen != rows_per_pass:
            raise RuntimeError(f"a pass over this worker's shard gave {seen} rows, not {rows_per_pass}")
        epoch, skip = epoch + 1, 0


def micro_batches(rows: Iterator[dict[str, Any]], size: int, pad_token_id: int, packed: bool) -> Iterator[dict]:
    """Rows collated ``size`` at a time by TRL's collator: padded with ``attention_mask``, or (packed) flattened
    into one row with ``position_ids`` restarting at each example."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=packed)
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield collate(batch)
            batch = []
    if batch:
        yield collate(batch)

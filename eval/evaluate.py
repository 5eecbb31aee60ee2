"""An EvalPlus evaluation: a model answers HumanEval(+) or MBPP(+) tasks, evalplus scores the answers (``amr eval``).

Offline: the datasets are the vendored releases in amr/data/evalplus. Writes to the output directory (a path
or an object-store URI: evalplus works in a local temporary directory, then its files are copied there):
``samples.jsonl`` (task_id, solution, raw answer, error, output_tokens), ``samples_eval_results.json``
(evalplus's per-sample results), ``evalplus.log`` (its output) and ``scores.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from amr import preflight, storage
from amr.config import EVALPLUS_VERSIONS, EvalConfig
from amr.engines import EngineError, open_teacher
from amr.logs import job_logs
from amr.runtime import init_ray
from amr.serving import preload
from eval.data import dataset_file, default_cache, load_tasks
from eval.generate import generate, student
from eval.score import score


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Generate, sanitize and score; return the scores (also ``<output>/scores.json``). The model's engine is
    shared with an enclosing ``open_teacher`` of it (``amr run`` scores a model on every dataset with one)."""
    start = time.perf_counter()
    student(config)  # a missing model fails before Ray starts
    with job_logs(config.output):
        version = config.version or EVALPLUS_VERSIONS[config.dataset][0]
        cache = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache()
        data = dataset_file(config.dataset, version, config.limit, cache)
        tasks = load_tasks(data)
        init_ray(config.ray, preload(student(config)))
        preflight.run(config)
        with open_teacher(student(config), config.model_store) as engine:
            samples = generate(tasks, config, engine)
        failed = [s["error"] for s in samples if s["error"]]
        if failed and len(failed) == len(samples):
            raise EngineError(f"{config.model}: every generation failed, nothing to score; the first: {failed[0]}")
        generated = time.perf_counter()
        with storage.local_dir(config.output) as out:  # evalplus reads and writes local files
            with open(out / "samples.jsonl", "w") as f:
                f.writelines(json.dumps(s) + "\n" for s in samples)
            scored = score(
                config.dataset,
                data,
                out / "samples.jsonl",
                cache_dir=cache,
                **config.scoring.model_dump(),
                log=out / "evalplus.log",
                sandbox=config.sandbox,
            )
        if storage.is_uri(config.output):
            scored["results"] = storage.join(config.output, storage.name(scored["results"]))
        scores = {
            "dataset": config.dataset,
            "version": version,
            "model": config.model,
            "limit": config.limit,
            **scored,
            "generation_errors": sum(s["error"] is not None for s in samples),
            "output_tokens": sum(s["output_tokens"] for s in samples),
            "generation_s": round(generated - start, 1),
            "scoring_s": round(time.perf_counter() - generated, 1),
            "config": config.model_dump(),
        }
        storage.write_json(storage.join(config.output, "scores.json"), scores)  # last: it marks the output done
    return scores

"""The MBPP train problems that overlap the evaluation benchmarks, as ``amr instructions seed`` finds them with the
default decontamination (``amr.config.DecontamConfig()``: the benchmark's own task ids, exact, n-gram and embedding
checks; no judge). The built-in source ``mbpp-train`` leaves them out; ``mbpp-train-raw`` keeps them.

The result is fixed for fixed data and settings, and the check takes ~30 s (the embedding model), so it is vendored
(``mbpp/mbpp-train-overlaps.json``) with what it was computed from: the sha256 of MBPP and of the benchmark files,
the decontamination settings and the embedding model. ``tests/test_data.py`` recomputes it and compares.
Regenerate (after a data or default-settings change)::

    python -m amr.data.overlaps
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from amr.data import HUMANEVAL_PLUS, MBPP, MBPP_PLUS_V010, MBPP_PLUS_V020, MBPP_TRAIN_OVERLAPS, mbpp_train

SETTINGS = ("benchmarks", "ngram", "min_ngram_matches", "embedding_threshold")
"""The decontamination settings the result depends on (the judge is off: it needs a teacher)."""


def inputs() -> dict[str, Any]:
    """What the result is computed from: the data files' sha256 and the default settings."""
    from amr.config import DecontamConfig, EmbeddingConfig

    defaults = DecontamConfig().model_dump()
    return {"data_sha256": {path.relative_to(MBPP.parent.parent).as_posix(): _sha256(path)
                            for path in (MBPP, HUMANEVAL_PLUS, MBPP_PLUS_V010, MBPP_PLUS_V020)},
            "decontam": {k: defaults[k] for k in SETTINGS}, "embedding_model": EmbeddingConfig().model}


def compute() -> dict[str, Any]:
    """The overlaps, freshly computed: the decontamination stage's checker (``amr.stages.decontaminate``) over
    MBPP train 601-974, each flagged row with its check, benchmark item and score."""
    import pandas as pd

    from amr.config import DecontamConfig, EmbeddingConfig
    from amr.embeddings import Embedder
    from amr.stages.decontaminate import _Checker

    embedding = EmbeddingConfig()  # the stage's embedders' settings, in this process: float32 on CPU
    checked = _Checker(DecontamConfig().model_dump(), embedding.model_dump(), None, Embedder(embedding.model))(
        pd.DataFrame(mbpp_train()))
    removed = [{"id": r["id"], "check": r["contamination"], "benchmark_id": r["benchmark_id"],
                "score": float(r["contamination_score"])}
               for r in checked.to_dict("records") if isinstance(r["contamination"], str)]
    return {**inputs(), "rows": len(checked), "removed": removed}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    result = compute()
    rows = ",\n".join(f"  {json.dumps(r)}" for r in result["removed"])  # one removed problem a line
    head = json.dumps({k: v for k, v in result.items() if k != "removed"}, indent=1)[:-2]
    MBPP_TRAIN_OVERLAPS.write_text(f'{head},\n "removed": [\n{rows}\n ]\n}}\n')
    assert json.loads(MBPP_TRAIN_OVERLAPS.read_text()) == result
    print(f"{MBPP_TRAIN_OVERLAPS}: {len(result['removed'])} of {result['rows']} MBPP train problems overlap")


if __name__ == "__main__":
    main()

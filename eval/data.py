"""The EvalPlus datasets, offline: the vendored .jsonl.gz releases as plain JSONL (what evalplus reads), whole
or as the first N tasks (``--limit``: evalplus scores only complete sample sets, so a subset is its own dataset).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from amr.config import EVALPLUS_VERSIONS
from amr.data import HUMANEVAL_PLUS, MBPP_PLUS_V010, MBPP_PLUS_V020

DATASETS: dict[str, dict[str, Path]] = {
    "humaneval": {"v0.1.10": HUMANEVAL_PLUS},
    "mbpp": {"v0.1.0": MBPP_PLUS_V010, "v0.2.0": MBPP_PLUS_V020},
}
"""The files of ``amr.config.EVALPLUS_VERSIONS``, whose first version per dataset is the default."""


def default_cache() -> Path:
    return Path(os.environ.get("AMR_EVALPLUS_CACHE", "~/.cache/amr/evalplus")).expanduser()


def dataset_file(
    dataset: str, version: str | None = None, limit: int | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The plain-JSONL file of ``dataset`` at ``version`` (the first ``limit`` tasks), written once to the cache."""
    version = version or EVALPLUS_VERSIONS[dataset][0]
    source = DATASETS[dataset][version]
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache()
    target = cache / f"{source.name.removesuffix('.jsonl.gz')}{f'-first{limit}' if limit else ''}.jsonl"
    if not target.is_file():
        with gzip.open(source, "rt") as f:
            lines = [line for line in f if line.strip()]
        _write_atomic(target, "".join(lines[:limit] if limit else lines))
    return target


def load_tasks(path: str | Path) -> list[dict[str, Any]]:
    """The tasks of a dataset file, in file order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

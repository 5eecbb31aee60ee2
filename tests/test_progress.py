"""The job's progress display: rows and teacher tokens counted as Ray workers make them, a line per stage."""

from __future__ import annotations

import logging
import re

import pytest
import ray

from amr.progress import StageProgress


@pytest.mark.timeout(120)
def test_rows_and_tokens_are_counted_as_the_workers_make_them(ray_local, caplog):
    caplog.set_level(logging.INFO, logger="amr")
    rows = [{"id": str(i), "direct_output_tokens": i} for i in range(40)]
    with StageProgress(poll_s=0.05) as progress:
        made = progress.counted(
            ray.data.from_items(rows, override_num_blocks=8), "direct", 40, "direct_output_tokens"
        ).materialize()
        progress.finished("direct")
        progress.start("waves", 40)
        progress.advance("waves", 16, 100)
        progress.finished("waves", lambda: "2 waves")
    assert made.count() == 40 and progress.counts == {"direct": [40, 780], "waves": [16, 100]}
    lines = [r.getMessage() for r in caplog.records if r.name == "amr.progress"]
    assert re.fullmatch(r"direct: 40 rows in \d+ s \([\d.]+ rows/s, \d+ output tokens/s\)", lines[0])
    assert re.fullmatch(r"waves: 16 rows in \d+ s \([\d.]+ rows/s, \d+ output tokens/s\); 2 waves", lines[1])

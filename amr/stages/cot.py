"""Chain-of-thought distillation (baseline): the teacher reasons step by step, then answers."""

from __future__ import annotations

import ray

from amr.engines import Teacher
from amr.prompts import cot
from amr.stages import ask


def run(ds: ray.data.Dataset, teacher: Teacher) -> ray.data.Dataset:
    """Instruction records -> + ``cot_response``, ``cot_error`` and tokens."""
    return ask(ds, teacher, lambda row: cot.messages(row["instruction"]), "cot")

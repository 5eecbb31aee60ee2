"""Direct distillation: the teacher answers each instruction (R_d)."""

from __future__ import annotations

import ray

from amr.engines import Teacher
from amr.prompts import direct
from amr.stages import ask


def run(ds: ray.data.Dataset, teacher: Teacher) -> ray.data.Dataset:
    """Instruction records -> the same records with ``direct_response``, ``direct_error`` and tokens."""
    return ask(ds, teacher, lambda row: direct.messages(row["instruction"]), "direct")

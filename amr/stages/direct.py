"""Direct distillation: the teacher answers each instruction (R_d)."""

from __future__ import annotations

from typing import Any

import ray

from amr.engines import Teacher
from amr.prompts import direct

COLUMNS = ("id", "instruction", "tests")


def request(row: dict[str, Any]) -> dict[str, Any]:
    return {**{k: row[k] for k in COLUMNS}, "messages": direct.messages(row["instruction"])}


def run(ds: ray.data.Dataset, teacher: Teacher) -> ray.data.Dataset:
    """Instruction records -> the same records with the teacher's direct ``response``."""
    return teacher.generate(ds.map(request), carry=COLUMNS)

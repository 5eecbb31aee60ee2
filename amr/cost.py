"""The teacher's cost of a distill run, from its stages' counts (a manifest's ``stages``): what the report, the
matched baselines' token budget (``check.token_budget``) and bench/quality.py all count."""

from __future__ import annotations

from typing import Any


def teacher_cost(stages: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Teacher calls and tokens over every stage: answers, decompositions, retries, resamples, growth and seed
    tests; ``tokens`` is input and output together."""
    cost = {"calls": 0, "input_tokens": 0, "output_tokens": 0}
    for stage in stages.values():
        if "input_tokens" in stage:
            cost["calls"] += stage["rows"]
            cost["input_tokens"] += stage["input_tokens"]
            cost["output_tokens"] += stage["output_tokens"]
        cost["calls"] += stage.get("test_calls", 0)
        cost["input_tokens"] += stage.get("test_input_tokens", 0)
        cost["output_tokens"] += stage.get("test_output_tokens", 0)
    return {**cost, "tokens": cost["input_tokens"] + cost["output_tokens"]}

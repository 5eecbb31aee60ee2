"""Chain-of-thought distillation (baseline, paper section 4): the teacher reasons step by step before
the code, and the whole answer, reasoning included, becomes the response.

The paper's exact text is not reachable offline here. Reconstructed from its description of the baseline (the
teacher thinks step by step, then writes the code): the request ends with the zero-shot trigger "Let's think step
by step."; the system prompt and the one-shot example are this project's."""

from __future__ import annotations

SYSTEM = """You are a professional coder. Answer the programming question in two parts. First, under
"Reasoning:", think step by step: restate what is asked, the edge cases, and the approach. Then write
a correct, complete and efficient Python solution in one Markdown code block.

## One-Shot Example
### Python Question:
Write a function to merge overlapping intervals given as (start, end) pairs, returning the merged intervals
sorted by start.

Let's think step by step.

### Response:
Reasoning:
1. Sorted by start, every interval that can overlap the last merged one comes right after it.
2. An interval overlaps the last merged one when it starts at or before that one's end (touching intervals
   merge too): then the merged end is the larger of the two ends.
3. Otherwise it starts a new merged interval. An empty input gives an empty list.

```python
def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
```"""


def messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\nLet's think step by step.\n\n### Response:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

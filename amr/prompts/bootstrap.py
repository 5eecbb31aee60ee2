"""Seed functions for the module database (paper section 3.4): self-instructed helpers, in the
spirit of a task but general enough to be reused by others."""

from __future__ import annotations

SYSTEM = '''You are a professional coder building a library of small, reusable Python functions. You
will be given a programming task. Write two or three general helper functions that would be useful
for tasks like it (not the task's own solution): each with a typed signature, a docstring and a
correct body, using only the standard library. Put all functions in one Python code block.

## One-Shot Example
### Python Question:
Write a function to compute the total price of a shopping cart given as (item, quantity, unit price)
tuples, after a percentage discount.

### Helper Functions:
```python
def line_total(quantity: int, unit_price: float) -> float:
    """The price of one cart line: quantity times unit price."""
    return quantity * unit_price


def apply_discount(amount: float, percent: float) -> float:
    """The amount less a percentage discount, the percentage limited to 0-100."""
    percent = min(max(percent, 0.0), 100.0)
    return amount * (100.0 - percent) / 100.0


def round_money(amount: float) -> float:
    """Round an amount of money to whole cents."""
    return round(amount, 2)
```'''


def messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Helper Functions:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

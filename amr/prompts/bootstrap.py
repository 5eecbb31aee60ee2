"""Seed functions for the module database (paper section 3.4): a task's solution written as small, general
functions (its helpers and the function the task asks for), so that later tasks like it retrieve them."""

from __future__ import annotations

SYSTEM = '''You are a professional coder building a library of small, reusable Python functions. You
will be given a programming task. Solve it with small, general functions that other tasks could reuse:
one or two helpers, then the function the task asks for, built on them. Each function has a typed
signature, a docstring and a correct body, and uses only the standard library. Put all functions in
one Python code block.

## One-Shot Example
### Python Question:
Write a function to compute the total price of a shopping cart given as (item, quantity, unit price)
tuples, after a percentage discount.

### Functions:
```python
def line_total(quantity: int, unit_price: float) -> float:
    """The price of one cart line: quantity times unit price."""
    return quantity * unit_price


def apply_discount(amount: float, percent: float) -> float:
    """The amount less a percentage discount, the percentage limited to 0-100."""
    percent = min(max(percent, 0.0), 100.0)
    return amount * (100.0 - percent) / 100.0


def cart_total(cart: list[tuple[str, int, float]], percent: float) -> float:
    """The total price of a cart of (item, quantity, unit price) lines after a percentage discount."""
    return apply_discount(sum(line_total(q, p) for _, q, p in cart), percent)
```'''


def messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Functions:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

"""The report's statistics, pure: paired verdicts, an exact sign test, Wilson intervals and the verdict words."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964
SIGNIFICANT = 0.05


@dataclass(frozen=True)
class Paired:
    """Two methods' verdicts on the same items (instructions or benchmark tasks)."""

    only_a: int
    only_b: int
    both: int
    neither: int

    @property
    def n(self) -> int:
        return self.only_a + self.only_b + self.both + self.neither

    @property
    def a(self) -> int:
        """Items ``a`` got right."""
        return self.only_a + self.both

    @property
    def b(self) -> int:
        return self.only_b + self.both

    @property
    def p(self) -> float:
        """The exact two-sided sign test on the discordant pairs."""
        return sign_test(self.only_a, self.only_b)


def paired(a: dict[str, bool], b: dict[str, bool]) -> Paired:
    """The paired count over the items both verdict maps (item -> right) hold."""
    shared = a.keys() & b.keys()
    count = {(x, y): 0 for x in (True, False) for y in (True, False)}
    for item in shared:
        count[a[item], b[item]] += 1
    return Paired(count[True, False], count[False, True], count[True, True], count[False, False])


def sign_test(x: int, y: int) -> float:
    """Two-sided exact binomial test of ``x`` successes against ``y`` failures at p = 1/2 (1.0 when none)."""
    n = x + y
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(x, y) + 1)) / 2**n
    return min(1.0, 2 * tail)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def p_text(p: float) -> str:
    return "p<0.01" if p < 0.01 else f"p={p:.2f}"


def verdict(a: str, b: str, pair: Paired, verb: str, items: str) -> str:
    """A plain-words sentence on ``a`` against ``b`` over ``pair``, e.g. "AMR-Evol answered 3 more of 40
    instructions correctly than direct (8 vs 5; p=0.25): within noise" (``verb`` "answered", ``items``
    "instructions correctly")."""
    diff = pair.only_a - pair.only_b
    if pair.n == 0:
        return f"{a} and {b}: nothing in common to compare"
    if diff == 0:
        return f"{a} and {b} {verb} the same number of the {pair.n} {items} ({pair.a} each; {p_text(pair.p)}): no difference"
    more, fewer = (a, b) if diff > 0 else (b, a)
    counts = f"{pair.a} vs {pair.b}" if diff > 0 else f"{pair.b} vs {pair.a}"
    noise = "beyond noise" if pair.p < SIGNIFICANT else "within noise"
    return f"{more} {verb} {abs(diff)} more of {pair.n} {items} than {fewer} ({counts}; {p_text(pair.p)}): {noise}"

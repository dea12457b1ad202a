"""Chance windows for tests that check counts themselves, at the judge's corrected level.

A fixed window (say 0.4-0.6) fails fair counts at a rate nobody chose; this asks
the exact binomial test whether a count fits, at `statistics.ALPHA`, the per-check level
that keeps a whole suite's false alarms below one in a thousand (see verdict/statistics.py).
"""

from __future__ import annotations

import math

from testbed.verdict.statistics import ALPHA


def binomial_p(k: int, n: int, p: float) -> float:
    """Exact two-sided p-value: the chance of a count at most as likely as `k`."""
    probs = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    here = probs[k] * (1 + 1e-9)
    return min(1.0, sum(q for q in probs if q <= here))


def fits(k: int, n: int, p: float) -> bool:
    return binomial_p(k, n, p) >= ALPHA

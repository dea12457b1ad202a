"""Statistics the verdicts rest on, from the standard library alone: the chi-square tail (the
regularized upper incomplete gamma function) and the family-wise significance level."""

from __future__ import annotations

import math
from collections.abc import Sequence

FAMILY_ALPHA = 0.001  # at most one false alarm in a thousand runs of up to MAX_CHECKS checks
MAX_CHECKS = 200  # statistical checks one run (or the test suite: 93 measured) may make
ALPHA = FAMILY_ALPHA / MAX_CHECKS  # each check's level (Bonferroni): 5e-06


# -- statistics -------------------------------------------------------------------


def _gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (good for x < a + 1)."""
    term = total = 1.0 / a
    n = a
    for _ in range(10_000):
        n += 1.0
        term *= x / n
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def upper_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), the regularized upper incomplete gamma function."""
    if a <= 0:
        raise ValueError("a must be positive")
    if x <= 0:
        return 1.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_series(a, x))
    return _gamma_fraction(a, x)


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for a chi-square variable with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError("a chi-square test needs at least one degree of freedom")
    return upper_gamma_q(dof / 2.0, x / 2.0)


def chi_square(observed: Sequence[int], fractions: Sequence[float]) -> tuple[float, int, float]:
    """Pearson's goodness-of-fit statistic, its degrees of freedom and p-value."""
    n = sum(observed)
    scale = sum(fractions)
    stat = 0.0
    for count, frac in zip(observed, fractions, strict=True):
        want = n * frac / scale
        stat += (count - want) ** 2 / want
    dof = len(observed) - 1
    return stat, dof, chi2_sf(stat, dof)


def two_sided_z(alpha: float) -> float:
    """z with P(|Z| > z) = alpha for a standard normal Z (bisection on erfc; plots' whiskers)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.erfc(mid / math.sqrt(2)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def homogeneity(a: Sequence[int], b: Sequence[int]) -> float:
    """p-value that two samples of counts over the same categories share one distribution
    (Pearson's chi-square on the 2 x k table). Categories empty in both are left out, and
    those expected under 5 in either row are pooled into one, so the chi-square tail stays
    honest for small counts. 1.0 when fewer than two categories remain."""
    na, nb = sum(a), sum(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    kept: list[tuple[int, int]] = []
    pooled = [0, 0]
    for x, y in zip(a, b, strict=True):
        total = x + y
        if total == 0:
            continue
        if min(na, nb) * total / (na + nb) < 5:
            pooled[0] += x
            pooled[1] += y
        else:
            kept.append((x, y))
    if sum(pooled):
        kept.append((pooled[0], pooled[1]))
    if len(kept) < 2:
        return 1.0
    n = na + nb
    stat = 0.0
    for x, y in kept:
        total = x + y
        for count, row in ((x, na), (y, nb)):
            want = row * total / n
            stat += (count - want) ** 2 / want
    return chi2_sf(stat, len(kept) - 1)

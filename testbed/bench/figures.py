"""Figures of the benchmark, pure: statistics of samples, a figure with its baseline and
target, and the table that prints them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.yaml"
SECTIONS = ("default", "scale", "rules", "probes", "startup", "memory", "upstream", "load")
NS_PREFIX = "tbb-"
MODES = ("iptables", "nftables")


# -- statistics and figures (pure) --------------------------------------------------


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def spread(samples: Sequence[float]) -> tuple[float, float]:
    """(min, max): with five samples the whole range says more than quartiles."""
    return float(min(samples)), float(max(samples))


def iqr(samples: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile, inclusive method; both equal the value for one sample."""
    if len(samples) < 2:
        return float(samples[0]), float(samples[0])
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return float(q[0]), float(q[2])


@dataclass(frozen=True)
class Figure:
    """One measured figure, its floor and its target."""

    name: str
    unit: str  # s | ms | ms/ns | /s | MB
    samples: tuple[float, ...]
    baseline: tuple[float, ...] = ()  # samples of the floor it is compared with
    baseline_name: str = ""
    target: float | None = None
    op: str = "<"  # how the value must compare with the target: < | <= | >=
    on_ratio: bool = False  # the target bounds median / baseline, not the median
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def base(self) -> float | None:
        return median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        base = self.base
        return self.median / base if base else None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ratio if self.on_ratio else self.median
        if value is None:
            return None
        return {"<": value < self.target, "<=": value <= self.target}.get(
            self.op, value >= self.target
        )

    def to_json(self) -> dict[str, Any]:
        lo, hi = spread(self.samples)
        q1, q3 = iqr(self.samples)
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": lo,
            "max": hi,
            "q1": q1,
            "q3": q3,
            "samples": list(self.samples),
            "baseline": self.base,
            "baseline_name": self.baseline_name,
            "baseline_samples": list(self.baseline),
            "ratio": self.ratio,
            "target": self.target,
            "target_op": self.op,
            "target_on": "ratio" if self.on_ratio else "median",
            "met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.1f} s" if value >= 100 else f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "ms/ns":
        return f"{value:.2f} ms/ns"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


def _target_text(fig: Figure) -> str:
    if fig.target is None:
        return "-"
    if fig.on_ratio:
        return f"{fig.op} {fig.target:g}x"
    return f"{fig.op} {fmt(fig.target, fig.unit)}"


def table(figures: Sequence[Figure]) -> str:
    """The figures as an aligned text table, notes below it."""
    head = ("figure", "median", "spread (min-max)", "baseline", "ratio", "target", "met?")
    rows = [head]
    notes = []
    for fig in figures:
        lo, hi = spread(fig.samples)
        same = fmt(lo, fig.unit) == fmt(hi, fig.unit)
        rng = fmt(lo, fig.unit) if same else f"{fmt(lo, fig.unit)} - {fmt(hi, fig.unit)}"
        ratio = f"{fig.ratio:.2f}x" if fig.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[fig.met]
        rows.append(
            (
                fig.name,
                fmt(fig.median, fig.unit),
                rng,
                fmt(fig.base, fig.unit),
                ratio,
                _target_text(fig),
                met,
            )
        )
        if fig.note:
            notes.append(f"  {fig.name}: {fig.note}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)

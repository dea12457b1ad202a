"""A steady load's timeline: success rate per window, longest outage, the judgement.

The load engine (kernel/load.py) records one compact tuple per attempt; everything
here is a pure function of those tuples and of when each step ran, so it is tested
without root. Attempts count in the window in which they *started*: a window shows
what a new connection met then, even when its answer (or its timeout) came later.
A window in which no attempt started is not judged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from testbed.core.model import LoadPlan
from testbed.core.records import BROKEN, COMPLETED, DROPPED, ENDS, REJECTED
from testbed.verdict.judge import Verdict
from testbed.verdict.words import and_list

# One attempt: (start offset s, duration s, index into ENDS, pod index or -1,
# entry node index or -1). Tuples, not objects: 100,000 attempts stay a few MB.
AttemptRow = tuple[float, float, int, int, int]
MAX_WINDOWS_SHOWN = 3  # failing windows named in the reasons; the rest are counted


@dataclass(frozen=True)
class LoadSample:
    """What a load's engine saw: every attempt, and how well it kept its schedule."""

    attempts: Sequence[AttemptRow]
    pods: Sequence[str] = ()  # names the attempts' pod indices point at
    nodes: Sequence[str] = ()  # names their entry node indices point at
    target: str = ""  # ip:port aimed at
    seconds: float = 0.0  # from the first scheduled start to the last
    skipped: int = 0  # due but not started: no file descriptor was free
    capped: bool = False  # stopped at the attempt limit
    limit: int = 0
    late_mean_ms: float = 0.0  # how late attempts started against the schedule
    late_max_ms: float = 0.0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepMark:
    """A step that ran while the load did: its start and end, in seconds since the load began."""

    name: str
    start: float
    end: float


@dataclass
class _Window:
    start: float
    ends: Counter = field(default_factory=Counter)
    entries: Counter = field(default_factory=Counter)  # failed attempts per entry node

    @property
    def sent(self) -> int:
        return sum(self.ends.values())

    @property
    def rate(self) -> float:
        return self.ends[COMPLETED] / self.sent if self.sent else 1.0


def step_at(marks: Sequence[StepMark], offset: float) -> str:
    """The step running `offset` seconds after the load began (the last one started)."""
    name = marks[0].name if marks else ""
    for mark in marks:
        if mark.start <= offset:
            name = mark.name
    return name


def steps_during(marks: Sequence[StepMark], start: float, end: float) -> str:
    """The steps that ran in [start, end): "a", "a and b" (the one running at start if none)."""
    names = [m.name for m in marks if m.start < end and m.end > start]
    return and_list(names) if names else step_at(marks, start)


def windows(sample: LoadSample, width: float) -> list[_Window]:
    """Every window from the load's start to its last attempt, in order (empty ones too)."""
    last = max((a[0] for a in sample.attempts), default=0.0)
    out = [_Window(round(i * width, 6)) for i in range(int(last / width) + 1)]
    for start, _d, end, _pod, entry in sample.attempts:
        w = out[min(int(start / width), len(out) - 1)]
        w.ends[ENDS[end]] += 1
        if ENDS[end] != COMPLETED:
            w.entries[sample.nodes[entry] if entry >= 0 else "?"] += 1
    return out


@dataclass(frozen=True)
class Outage:
    attempts: int
    start: float  # the first failed attempt's start
    end: float  # the next completed attempt's start, or the last failed one's end
    step: str

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


def longest_outage(sample: LoadSample, marks: Sequence[StepMark]) -> Outage | None:
    """The longest run of consecutive failed attempts, in start order, by time."""
    rows = sorted(sample.attempts)
    best: Outage | None = None
    first = -1
    for i, row in enumerate([*rows, None]):
        failed = row is not None and ENDS[row[2]] != COMPLETED
        if failed and first < 0:
            first = i
        if not failed and first >= 0:
            start = rows[first][0]
            end = row[0] if row is not None else rows[i - 1][0] + rows[i - 1][1]
            found = Outage(i - first, start, end, step_at(marks, start))
            if best is None or found.seconds > best.seconds:
                best = found
            first = -1
    return best


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _entries(counts: Counter) -> str:
    return and_list([f"{node} ({n})" for node, n in counts.most_common()])


def _span(w: _Window, width: float) -> str:
    return f"{w.start:.1f}-{w.start + width:.1f} s"


def judge_load(
    load: LoadPlan,
    sample: LoadSample,
    marks: Sequence[StepMark],
    pod_nodes: Mapping[str, str],
    source: str,
) -> Verdict:
    """The load's verdict row: every judged window's success rate >= expect.successRate."""
    rows = sample.attempts
    ends = Counter(ENDS[a[2]] for a in rows)
    wins = windows(sample, load.window)
    judged = [w for w in wins if w.sent]
    worst = min(judged, key=lambda w: (w.rate, w.start)) if judged else None
    outage = longest_outage(sample, marks)
    served = Counter(sample.pods[a[3]] for a in rows if a[3] >= 0 and ENDS[a[2]] == COMPLETED)
    per_node: dict[str, dict[str, int]] = {}
    for a in rows:
        node = sample.nodes[a[4]] if a[4] >= 0 else "?"
        row = per_node.setdefault(node, {"sent": 0, "failed": 0})
        row["sent"] += 1
        row["failed"] += ENDS[a[2]] != COMPLETED
    steps = _per_step(rows, marks)

    reasons = []
    low = [w for w in judged if w.rate < load.success_rate]
    for w in low[:MAX_WINDOWS_SHOWN]:
        reasons.append(
            f"window {_span(w, load.window)}: success rate {w.rate:.2f} < {load.success_rate:g} "
            f"({w.ends[COMPLETED]} of {w.sent} completed) during "
            f"{steps_during(marks, w.start, w.start + load.window)}; "
            f"failures entered at {_entries(w.entries)}"
        )
    if len(low) > MAX_WINDOWS_SHOWN:
        reasons.append(f"{len(low) - MAX_WINDOWS_SHOWN} more windows below {load.success_rate:g}")
    if not rows:
        reasons.append("no attempt started: nothing to judge")
    if sample.capped:
        reasons.append(
            f"the load stopped at {sample.limit:,} attempts (its limit, a probe's most) before "
            f"its last step ended: lower ratePerSecond"
        )

    lines = [
        f"load {load.rate:g}/s from {source} to {sample.target} ({load.protocol}) for "
        f"{sample.seconds:.1f} s: {len(rows)} attempts, windows of {load.window:g} s",
    ]
    if worst is not None:
        lines.append(
            f"worst window {_span(worst, load.window)}: {_pct(worst.rate)} "
            f"({worst.ends[COMPLETED]}/{worst.sent}) during "
            f"{steps_during(marks, worst.start, worst.start + load.window)}"
        )
    if outage is not None:
        lines.append(
            f"longest outage {outage.seconds:.2f} s ({outage.attempts} attempts in a row failed, "
            f"{outage.start:.2f}-{outage.end:.2f} s) during {outage.step}"
        )
    lines.append(
        "per step: " + ", ".join(f"{s['name']} {_pct(s['rate'])}" for s in steps if s["sent"])
    )
    failed_nodes = {n: r for n, r in per_node.items() if r["failed"]}
    if failed_nodes:
        lines.append(
            "failures by entry node: "
            + ", ".join(
                f"{n} {r['failed']} of {r['sent']}" for n, r in sorted(failed_nodes.items())
            )
        )
    slow = durations(rows)
    if slow:
        lines.append(
            f"completed in {slow['p50Ms']:.0f} ms (median), {slow['p99Ms']:.0f} ms (p99), "
            f"{slow['maxMs']:.0f} ms (slowest)"
        )
    if sample.skipped:
        lines.append(f"{sample.skipped} attempts not started: no file descriptor was free")
    lines += sample.notes

    info = {
        "from": source,
        "to": sample.target,
        "protocol": load.protocol,
        "ratePerSecond": load.rate,
        "timeoutSeconds": load.timeout,
        "windowSeconds": load.window,
        "until": load.until or (marks[-1].name if marks else None),
        "seconds": round(sample.seconds, 3),
        "attempts": len(rows),
        "skipped": sample.skipped,
        "capped": sample.capped,
        "lateness": {
            "meanMs": round(sample.late_mean_ms, 2),
            "maxMs": round(sample.late_max_ms, 2),
        },
        "windows": [[w.start, w.sent, *(w.ends[e] for e in ENDS)] for w in wins],
        "worstWindow": None
        if worst is None
        else {
            "start": worst.start,
            "end": round(worst.start + load.window, 6),
            "rate": round(worst.rate, 4),
            "step": steps_during(marks, worst.start, worst.start + load.window),
        },
        "longestOutage": None
        if outage is None
        else {
            "seconds": round(outage.seconds, 3),
            "attempts": outage.attempts,
            "start": round(outage.start, 3),
            "end": round(outage.end, 3),
            "step": outage.step,
        },
        "durations": slow,
        "steps": steps,
        "nodes": dict(sorted(per_node.items())),
        "pods": {p: {"served": n, "node": pod_nodes.get(p)} for p, n in sorted(served.items())},
    }
    observed = {
        "sent": len(rows),
        "completed": ends[COMPLETED],
        "broken": ends[BROKEN],
        "delivered": ends[COMPLETED] + ends[BROKEN],
        "dropped": ends[DROPPED],
        "rejected": ends[REJECTED],
        "pods": dict(sorted(served.items())),
        "sourceIPs": {},
        "sourceIPsBy": {},
        "returnPath": "none",
    }
    return Verdict(
        name=load.name,
        passed=not reasons,
        reasons=tuple(reasons),
        observed=observed,
        expected={"successRate": load.success_rate, "windowSeconds": load.window},
        oracle={},
        details={"load": info},
        lines=tuple(lines),
    )


def durations(rows: Sequence[AttemptRow]) -> dict[str, float] | None:
    """How long completed attempts took: a retransmitted SYN shows here as a slow success."""
    took = sorted(a[1] for a in rows if ENDS[a[2]] == COMPLETED)
    if not took:
        return None

    def at(q: float) -> float:
        return round(1000 * took[min(len(took) - 1, int(q * len(took)))], 1)

    return {"p50Ms": at(0.5), "p99Ms": at(0.99), "maxMs": round(1000 * took[-1], 1)}


def _per_step(rows: Sequence[AttemptRow], marks: Sequence[StepMark]) -> list[dict]:
    """Each step's span and how the attempts started during it ended."""
    out = []
    for i, mark in enumerate(marks):
        until = marks[i + 1].start if i + 1 < len(marks) else float("inf")
        mine = [a for a in rows if mark.start <= a[0] < until or (i == 0 and a[0] < mark.start)]
        done = sum(1 for a in mine if ENDS[a[2]] == COMPLETED)
        out.append(
            {
                "name": mark.name,
                "start": round(mark.start, 3),
                "end": round(mark.end, 3),
                "sent": len(mine),
                "completed": done,
                "rate": round(done / len(mine), 4) if mine else None,
            }
        )
    return out

"""Pictures of a run: which pod received how many connections, and how long they took.

Drawn from the verdicts' report data (shares per pod and node, expected shares)
and, for latency, from the attempts themselves. matplotlib is an optional
extra: it is imported only here and only when pictures are asked for.

- `<scenario>-<mode>-outcomes.png`: every probe, how its attempts ended (completed,
  broken, rejected, dropped: the table's words), so a scenario whose probes only drop
  still gets a picture;
- `<scenario>-<mode>-<probe>-shares.png`: how the attempts ended per entry node, and one
  bar per pod, coloured by its node, with the expected share and the range a fair draw
  misses only with probability ALPHA (the level the share test uses);
- `<scenario>-<mode>-shares.png`: every share probe of a scenario side by side;
- `<scenario>-<mode>-<probe>-latency.png`: connect and request time per path;
- `<scenario>-<mode>-<step>-convergence.png`: completed, dropped and other (broken or
  rejected) attempts per batch while the edge converges after a change;
- `<scenario>-<mode>-<step>-timeline.png`: a steady load, attempts per window coloured by
  how they ended, the success rate per window against expect.successRate, and the steps
  that ran meanwhile as vertical lines.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Collection, Sequence

from testbed.core import outfiles
from testbed.core.errors import TestbedError
from testbed.core.records import ENDS, Observation
from testbed.verdict import measure
from testbed.verdict.judge import Verdict
from testbed.verdict.report import ScenarioResult, completed_words
from testbed.verdict.statistics import ALPHA, two_sided_z

MISSING = "plots need matplotlib: pip install 'kubeproxy-testbed[plots]'"
MIN_COUNT = 20  # probes with fewer attempts and no share expectation get no picture
NODE_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")
PATH_COLOURS = {measure.LOCAL: "#55A868", measure.CROSS_NODE: "#C44E52"}
END_COLOURS = {"completed": "#55A868", "broken": "#DD8452", "rejected": "#8C8C8C"}
END_COLOURS["dropped"] = "#C44E52"
Z = two_sided_z(ALPHA)  # whiskers at the level of the share test, not 95%
WHISKER_WORDS = f"whiskers: a fair draw lands outside with probability alpha = {ALPHA:g}"


class PlotsUnavailable(TestbedError, RuntimeError):
    """matplotlib is not installed."""


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailable(MISSING) from None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _wrap(text: str, width: int = 110) -> str:
    return "\n".join(textwrap.wrap(text, width)) if text else ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# -- shares -------------------------------------------------------------------------


def wants_shares(verdict: Verdict) -> bool:
    nodes = verdict.details.get("nodes")
    sent = verdict.observed.get("sent", 0)
    return bool(nodes) and (bool(verdict.expected.get("share")) or sent >= MIN_COUNT)


def _pods(verdict: Verdict) -> list[tuple[str, str, int, float, float | None]]:
    """(pod, node, count, observed share, expected share) in node order."""
    rows = []
    for node, item in verdict.details.get("nodes", {}).items():
        for pod, p in item.get("pods", {}).items():
            rows.append((pod, node, p["count"], p["share"], p.get("expectedShare")))
    return rows


def _node_colours(result: ScenarioResult) -> dict[str, str]:
    """One colour per node for every picture of a scenario."""
    names = sorted({n for v in result.verdicts for n in v.details.get("nodes", {})})
    return {n: NODE_COLOURS[i % len(NODE_COLOURS)] for i, n in enumerate(names)}


def _share_panel(ax, verdict: Verdict, colours: dict[str, str], title: str) -> None:
    rows = _pods(verdict)
    delivered = sum(r[2] for r in rows)
    xs = list(range(len(rows)))
    ax.bar(
        xs,
        [100 * r[3] for r in rows],
        color=[colours[r[1]] for r in rows],
        edgecolor="black",
        linewidth=0.5,
        width=0.7,
    )
    expected = [(x, r[4]) for x, r in zip(xs, rows, strict=True) if r[4] is not None]
    if expected and delivered:
        spread = [Z * 100 * math.sqrt(e * (1 - e) / delivered) for _, e in expected]
        low = [min(w, 100 * e) for w, (_, e) in zip(spread, expected, strict=True)]
        high = [min(w, 100 - 100 * e) for w, (_, e) in zip(spread, expected, strict=True)]
        ax.errorbar(
            [x for x, _ in expected],
            [100 * e for _, e in expected],
            yerr=[low, high],  # a share stays within 0-100%
            fmt="D",
            color="black",
            markersize=6,
            capsize=6,
            linewidth=1.2,
            label=f"expected share ({WHISKER_WORDS})",
        )
    labels = [f"{r[0]}\non {r[1]}\n{r[2]} of {delivered}" for r in rows]
    ax.set_xticks(xs, labels, fontsize=9)
    ax.set_ylabel("share of delivered attempts (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _percent_axis(ax, _top(verdict))


def _top(verdict: Verdict) -> float:
    """The highest bar or whisker, in percent (a share never exceeds 100)."""
    rows = _pods(verdict)
    delivered = sum(r[2] for r in rows) or 1
    tops = [100 * r[3] for r in rows]
    for r in rows:
        if r[4] is not None:
            tops.append(100 * (r[4] + Z * math.sqrt(r[4] * (1 - r[4]) / delivered)))
    return min(100.0, max([*tops, 1.0]))


def _percent_axis(ax, top: float) -> None:
    """0 to a little above the top, never a tick above 100%."""
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(0, min(105.0, top * 1.1 + 2))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= 100])


def _ends(verdict: Verdict) -> dict[str, dict[str, int]]:
    """Per entry node (or `edge`), how many attempts ended which way, from the flows."""
    out: dict[str, dict[str, int]] = {}
    for flow in verdict.details.get("flows", []):
        where = flow.get("entryNode") or flow.get("edgeNode") or "not seen at a node"
        end = flow.get("end", "other")
        out.setdefault(where, {}).setdefault(end, 0)
        out[where][end] += flow.get("count", 0)
    if not out:  # no flows kept: the totals alone
        obs = verdict.observed
        rest = obs.get("sent", 0) - obs.get("completed", 0) - obs.get("broken", 0)
        rest -= obs.get("dropped", 0)
        ends = {"completed": obs.get("completed", 0), "broken": obs.get("broken", 0)}
        out["all nodes"] = {**ends, "rejected": rest, "dropped": obs.get("dropped", 0)}
    return dict(sorted(out.items()))


def _ends_panel(ax, verdict: Verdict) -> None:
    """Stacked bars: how the attempts that entered each node ended."""
    ends = _ends(verdict)
    names = list(ends)
    bottom = [0] * len(names)
    for end in (*ENDS, "other"):
        counts = [ends[n].get(end, 0) for n in names]
        if not any(counts):
            continue
        colour = END_COLOURS.get(end, "#BBBBBB")
        ax.bar(names, counts, bottom=bottom, color=colour, label=end, edgecolor="black", lw=0.5)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_ylim(0, max([*bottom, 1]) * 1.35)  # room for the legend above the bars
    ax.set_ylabel("attempts")
    ax.set_title("how the attempts ended,\nby the node they entered", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.tick_params(axis="x", labelsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _entry_words(verdict: Verdict) -> str:
    nodes = verdict.details.get("nodes", {})
    parts = [f"{n} {100 * i['entryShare']:.0f}%" for n, i in nodes.items() if i["entered"]]
    return "flows entered via " + ", ".join(parts) if parts else ""


def _legend(fig, colours: dict[str, str], nodes: Collection[str], with_expected: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=c, edgecolor="black", label=f"pod on {n}")
        for n, c in colours.items()
        if n in nodes
    ]
    if with_expected:
        handles.append(
            Line2D(
                [],
                [],
                marker="D",
                color="black",
                linestyle="none",
                label=f"expected share; {WHISKER_WORDS}",
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)


def share_figure(result: ScenarioResult, verdict: Verdict):
    rows = _pods(verdict)
    colours = _node_colours(result)
    fig = _figure(max(8.0, 1.2 * len(rows) + 5), 5.0)
    ends_ax, ax = fig.subplots(1, 2, width_ratios=[1, max(2, len(rows))])
    _ends_panel(ends_ax, verdict)
    words = completed_words(verdict.observed)
    title = f"{verdict.name}: which pod each delivered attempt reached\ncompleted {words}"
    _share_panel(ax, verdict, colours, title + "; " + _entry_words(verdict))
    fig.suptitle(f"{result.name} ({result.proxy_mode})\n{_wrap(result.description)}", fontsize=11)
    _legend(fig, colours, {r[1] for r in rows}, any(r[4] is not None for r in rows))
    return fig


def combined_share_figure(result: ScenarioResult, verdicts: Sequence[Verdict]):
    """Every share probe of one scenario side by side, on one scale."""
    rows = [r for v in verdicts for r in _pods(v)]
    colours = _node_colours(result)
    fig = _figure(5.0 * len(verdicts), 5.5)
    axes = fig.subplots(1, len(verdicts), sharey=True)
    for ax, verdict in zip(axes, verdicts, strict=True):
        words = completed_words(verdict.observed)
        title = f"{verdict.name}\ncompleted {words}\n{_entry_words(verdict)}"
        _share_panel(ax, verdict, colours, title)
    for ax in axes[1:]:
        ax.set_ylabel("")
    _percent_axis(axes[0], max(_top(v) for v in verdicts))
    fig.suptitle(
        f"{result.name} ({result.proxy_mode}): which pod each delivered attempt reached\n"
        f"{_wrap(result.description)}",
        fontsize=11,
    )
    _legend(fig, colours, {r[1] for r in rows}, any(r[4] is not None for r in rows))
    return fig


def outcomes_figure(result: ScenarioResult):
    """Every probe of the scenario: how its attempts ended, as shares of those sent."""
    verdicts = [v for v in result.verdicts if v.observed.get("sent")]
    fig = _figure(9.0, 1.4 + 0.55 * len(verdicts))
    ax = fig.add_subplot()
    names = [v.name for v in verdicts][::-1]
    left = [0.0] * len(verdicts)
    for end in ENDS:
        shares = []
        for v in verdicts[::-1]:
            obs, sent = v.observed, v.observed["sent"]
            rejected = sent - obs.get("completed", 0) - obs.get("broken", 0)
            rejected -= obs.get("dropped", 0)
            count = rejected if end == "rejected" else obs.get(end, 0)
            shares.append(100 * count / sent)
        if any(shares):
            ax.barh(names, shares, left=left, color=END_COLOURS[end], label=end, height=0.6)
            left = [a + b for a, b in zip(left, shares, strict=True)]
    for y, v in enumerate(verdicts[::-1]):
        verdict_word = "PASS" if v.passed else "FAIL"
        ax.annotate(
            f"{completed_words(v.observed)}  {verdict_word}",
            (101, y),
            va="center",
            fontsize=8,
            annotation_clip=False,
        )
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the attempts sent (%)")
    fig.legend(loc="outside lower center", ncol=4, fontsize=8)
    ax.set_title("how each probe's attempts ended (completed / broken / rejected / dropped)")
    fig.suptitle(f"{result.name} ({result.proxy_mode})\n{_wrap(result.description)}", fontsize=11)
    return fig


# -- latency ------------------------------------------------------------------------


def latency_figure(result: ScenarioResult, observation: Observation):
    """Box plots of connect and request time, one box per path, with the comparison."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = _figure(9.0, 5.0)
    axes = fig.subplots(1, 2)
    notes = []
    for ax, (metric, what) in zip(
        axes, (("connect_ms", "connect time"), ("rtt_ms", "request round trip")), strict=True
    ):
        split = measure.samples(observation.attempts, metric)
        names = list(split)
        if not names:
            ax.set_axis_off()
            continue
        box = ax.boxplot(
            [split[n] for n in names],
            patch_artist=True,
            widths=0.5,
            showfliers=True,
            flierprops={"markersize": 3, "alpha": 0.5},
        )
        ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(split[n])})" for n in names])
        for patch, name in zip(box["boxes"], names, strict=True):
            patch.set_facecolor(PATH_COLOURS.get(name, "#999999"))
            patch.set_alpha(0.7)
        for i, name in enumerate(names, start=1):
            median = measure.percentile(split[name], 0.5)
            ax.annotate(
                f"median\n{median:.3f} ms",
                (i + 0.27, median),
                ha="left",
                va="center",
                fontsize=8,
            )
        ax.set_xlim(0.5, len(names) + 0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"{what} (ms, log scale)")
        ax.set_title(what, fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
        if len(names) == 2:
            comparison = measure.compare(split[names[0]], split[names[1]], tuple(names), what)
            notes.append(comparison.sentence)
    ends = {e: sum(1 for a in observation.attempts if a.end == e) for e in ENDS}
    sent = len(observation.attempts)
    others = ", ".join(f"{k} {e}" for e, k in ends.items() if k and e != "completed")
    timed = f"{ends['completed']}/{sent} completed" + (f" ({others}: no time)" if others else "")
    fig.suptitle(
        f"{result.name} ({result.proxy_mode}) - {observation.probe}: time per connection by path"
        f"; {timed}\n"
        "local: the entry node hosts the pod; cross-node: the packet went on to another node\n"
        "box: the middle half of the connections; line: the median; dots: unusually slow ones",
        fontsize=11,
    )
    if notes:
        fig.text(0.5, -0.02, "\n".join(_wrap(n, 120) for n in notes), ha="center", va="top")
    return fig


# -- convergence ------------------------------------------------------------------------


def convergence_figure(result: ScenarioResult, verdict: Verdict):
    """Each batch of a probeDuringConvergence step: completed, dropped and the rest, over time."""
    info = verdict.details["convergence"]
    rows = info["timeline"]
    fig = _figure(9.0, 4.8)
    ax = fig.add_subplot()
    times = [r[0] for r in rows]
    dropped = [r[2] for r in rows]
    completed = [r[3] if len(r) > 3 else r[1] - r[2] for r in rows]
    other = [r[1] - d - c for r, d, c in zip(rows, dropped, completed, strict=True)]
    width = 0.6 * min((b - a for a, b in zip(times, times[1:], strict=False)), default=0.1)
    ax.bar(times, completed, width=width, color="#55A868", label="completed", align="edge")
    bottom = completed
    if any(other):
        ax.bar(
            times,
            other,
            width=width,
            bottom=bottom,
            color="#8C8C8C",
            label="broken or rejected",
            align="edge",
        )
        bottom = [b + o for b, o in zip(bottom, other, strict=True)]
    ax.bar(
        times,
        dropped,
        width=width,
        bottom=bottom,
        color="#C44E52",
        label="dropped",
        align="edge",
    )
    top = max((r[1] for r in rows), default=1)
    if info.get("poolChangedSeconds") is not None:
        ax.axvline(info["poolChangedSeconds"], color="black", linestyle="--", linewidth=1)
        ax.annotate(
            "edge route changed\n(seen here)",
            (info["poolChangedSeconds"], top * 1.05),
            ha="right",
            fontsize=8,
        )
    if info.get("settledSeconds") is not None:
        ax.axvline(info["settledSeconds"], color="black", linewidth=1.5)
        ax.annotate(
            f"edge settled\n({info['settleRounds']} check rounds)",
            (info["settledSeconds"], top * 1.05),
            ha="left",
            fontsize=8,
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax.set_ylim(0, top * 1.35)
    ax.set_xlim(0, (times[-1] if times else 1) + 2 * width)
    ax.set_xlabel(f"seconds since step {info['after']}")
    ax.set_ylabel("connections per batch")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    before, after = info["beforeConvergence"], info["afterConvergence"]
    ax.set_title(
        f"{verdict.name}: {info['poolChanges']}\n"
        f"dropped before the edge settled: {before['dropped']} of {before['sent']}; "
        f"after: {after['dropped']} of {after['sent']}",
        fontsize=10,
    )
    fig.suptitle(f"{result.name} ({result.proxy_mode})\n{_wrap(result.description)}", fontsize=11)
    return fig


# -- a steady load ---------------------------------------------------------------------


def timeline_figure(result: ScenarioResult, verdict: Verdict):
    """A load's attempts per window by how they ended, its success rate, and the steps."""
    info = verdict.details["load"]
    width = info["windowSeconds"]
    rows = info["windows"]  # [start, sent, completed, broken, rejected, dropped]
    fig = _figure(9.5, 5.0)
    ax = fig.add_subplot()
    starts = [r[0] for r in rows]
    bottom = [0] * len(rows)
    for k, end in enumerate(ENDS):
        counts = [r[2 + k] for r in rows]
        if not any(counts):
            continue
        ax.bar(
            starts,
            counts,
            width=0.9 * width,
            bottom=bottom,
            align="edge",
            color=END_COLOURS[end],
            label=end,
        )
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    top = max([*bottom, 1])
    ax.set_ylim(0, top * 1.45)
    ax.set_xlim(0, max([*starts, 0]) + width)
    ax.set_xlabel("seconds since the load began (attempts count in the window they started in)")
    ax.set_ylabel(f"attempts per {width:g} s window")
    ax.grid(axis="y", alpha=0.3)
    for k, step in enumerate(info["steps"]):
        ax.axvline(step["start"], color="black", linestyle="--", linewidth=0.8)
        ax.annotate(
            step["name"],
            (step["start"], top * (1.38 - 0.08 * (k % 3))),
            fontsize=8,
            xytext=(3, 0),
            textcoords="offset points",
        )
    rate = ax.twinx()
    judged = [(r[0] + width / 2, r[2] / r[1]) for r in rows if r[1]]
    rate.plot(
        [x for x, _ in judged],
        [y for _, y in judged],
        color="black",
        marker=".",
        lw=1.2,
        label="success rate",
    )
    rate.axhline(
        verdict.expected["successRate"],
        color="#C44E52",
        linestyle=":",
        linewidth=1.2,
        label="expected at least",
    )
    rate.set_ylim(0, 1.45)
    rate.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    rate.set_ylabel("success rate per window")
    handles = [*ax.get_legend_handles_labels()[0], *rate.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=6)
    worst = info.get("worstWindow") or {}
    outage = info.get("longestOutage") or {}
    words = f"worst window {100 * worst.get('rate', 1):.1f}%"
    if outage:
        words += f", longest outage {outage['seconds']:.2f} s ({outage['attempts']} attempts)"
    ax.set_title(
        f"{verdict.name}: {info['ratePerSecond']:g}/s {info['protocol']} from {info['from']} "
        f"to {info['to']}; {words}",
        fontsize=10,
    )
    fig.suptitle(f"{result.name} ({result.proxy_mode})\n{_wrap(result.description)}", fontsize=11)
    return fig


# -- writing ------------------------------------------------------------------------


def write(
    directory: str,
    result: ScenarioResult,
    observations: Sequence[Observation],
    latency_probes: Collection[str] = (),
) -> list[str]:
    """Every picture of one scenario run; returns the files written (never through a link)."""
    stem = f"{_slug(result.name)}-{result.proxy_mode}"
    written: list[str] = []

    def save(fig, name: str) -> None:
        path = os.path.join(directory, name)
        folder = outfiles.directory(directory)
        try:
            with outfiles.create(folder, name, path) as handle:
                fig.savefig(handle, format="png", bbox_inches="tight")
        finally:
            os.close(folder)
        written.append(path)

    if any(v.observed.get("sent") for v in result.verdicts):
        save(outcomes_figure(result), f"{stem}-outcomes.png")
    shared = [v for v in result.verdicts if wants_shares(v)]
    for verdict in shared:
        save(share_figure(result, verdict), f"{stem}-{_slug(verdict.name)}-shares.png")
    with_expectation = [v for v in shared if v.expected.get("share")]
    if len(with_expectation) > 1:
        save(combined_share_figure(result, with_expectation), f"{stem}-shares.png")
    for verdict in result.verdicts:
        if verdict.details.get("convergence", {}).get("timeline"):
            name = f"{stem}-{_slug(verdict.name)}-convergence.png"
            save(convergence_figure(result, verdict), name)
    for verdict in result.verdicts:
        if verdict.details.get("load", {}).get("windows"):
            name = f"{stem}-{_slug(verdict.name)}-timeline.png"
            save(timeline_figure(result, verdict), name)
    for obs in observations:
        if obs.probe in latency_probes and measure.latency(obs.attempts):
            save(latency_figure(result, obs), f"{stem}-{_slug(obs.probe)}-latency.png")
    return written

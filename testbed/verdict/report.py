"""Renderers for verdicts: a table for people, JSON and JUnit XML for machines.

Pure functions of `ScenarioResult`s; nothing here runs probes or judges them.
The JSON shape is the contract in SCENARIO-FORMAT.md (schemas/report.schema.json);
it adds `summary.alpha`, the significance level of every statistical check, and
`error` on a scenario that could not run.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from testbed.verdict import tablefit
from testbed.verdict.judge import Verdict
from testbed.verdict.statistics import ALPHA, FAMILY_ALPHA, MAX_CHECKS

PASS = "PASS"
FAIL = "FAIL"


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    file: str
    proxy_mode: str  # iptables | nftables
    seconds: float
    verdicts: tuple[Verdict, ...]
    error: str | None = None  # the scenario could not be built or probed
    description: str = ""  # the scenario's one-line story
    warnings: tuple[str, ...] = ()  # what it loaded with but a person should know
    topology: dict | None = None  # verdict/layout.py: what the HTML report draws

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts)


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counter.items()) or "-"


def _fraction(x: float) -> str:
    return f"{100 * x:.3g}%"


def _completed(obs: Mapping) -> str:
    """`26/90 (64 dropped)`: how many attempts a real client saw succeed, and the rest."""
    sent = obs.get("sent", 0)
    done = obs.get("completed", 0)
    rejected = sent - done - obs.get("broken", 0) - obs.get("dropped", 0)
    rest = [
        (obs.get("broken", 0), "broken"),
        (rejected, "rejected"),
        (obs.get("dropped", 0), "dropped"),
    ]
    others = ", ".join(f"{k} {name}" for k, name in rest if k)
    return f"{done}/{sent}" + (f" ({others})" if others else "")


def _sources(obs: Mapping) -> str:
    """Each source address with who reported it: the pod's own answer, or only a capture."""
    by = obs.get("sourceIPsBy", {})
    out = []
    for ip, k in obs.get("sourceIPs", {}).items():
        said, seen = by.get(ip, {}).get("answer", 0), by.get(ip, {}).get("capture", 0)
        if said and seen:
            how = f"answer {said}, capture only {seen}"
        else:
            how = "answer" if said else "capture only"
        out.append(f"{ip} x{k} ({how})")
    return ", ".join(out) or "-"


def _expected(exp: Mapping) -> str:
    if exp.get("successRate") is not None:  # a load: every window at least this
        return f"success >= {_fraction(exp['successRate'])} per {exp.get('windowSeconds', 1):g} s"
    if not exp:
        return "-"
    parts = []
    if exp.get("completed") is not None:
        parts.append(f"completed {_fraction(exp['completed'])}")
    if exp.get("outcomes"):
        parts.append(", ".join(f"{k} {_fraction(v)}" for k, v in exp["outcomes"].items()))
    else:
        parts.append(str(exp.get("outcome", "?")))
    if exp.get("sourceIP"):
        parts.append(f"sees {exp['sourceIP']}")
    if exp.get("pods"):
        parts.append("pods " + ",".join(exp["pods"]))
    if exp.get("returnPath") not in (None, "none"):
        parts.append(f"return {exp['returnPath']}")
    return "; ".join(parts)


# the table's words, for the HTML report (verdict/html.py) to say the same
completed_words, sources_words, expected_words = _completed, _sources, _expected

HEADER = ("PROBE", "COMPLETED", "PATH TAKEN", "POD(S)", "SOURCE IP SEEN", "EXPECTED", "VERDICT")
# in a narrow terminal the path and the expectation go under the row first (tablefit.py)
COLUMNS = (
    tablefit.Column("PROBE", "probe", keep=100, whole=True, min_width=12),
    tablefit.Column("COMPLETED", "completed", keep=80, whole=True, min_width=9),
    tablefit.Column("PATH TAKEN", "path", keep=10, min_width=44),
    tablefit.Column("POD(S)", "pods", keep=50, min_width=16),
    tablefit.Column("SOURCE IP SEEN", "source IP seen", keep=40, min_width=18),
    tablefit.Column("EXPECTED", "expected", keep=20, min_width=24),
    tablefit.Column("VERDICT", "verdict", keep=90, whole=True, min_width=7),
)


def _rows(verdicts: Sequence[Verdict]) -> list[tuple[str, ...]]:
    return [
        (
            v.name,
            _completed(v.observed),
            v.path or "-",
            _counts(v.observed.get("pods", {})),
            _sources(v.observed),
            _expected(v.expected),
            PASS if v.passed else FAIL,
        )
        for v in verdicts
    ]


def table(results: Sequence[ScenarioResult], summary: bool = True, width: int | None = None) -> str:
    """One block per scenario, one row per probe, failing reasons indented under their row.

    `width`: the terminal's; no line is wider (None: one line per row, as wide as it takes).
    """
    lines: list[str] = []
    for res in results:
        state = PASS if res.passed else FAIL
        title = f"{res.name} ({res.proxy_mode}, {res.seconds:.1f} s, {res.file}): {state}"
        lines += tablefit.hanging("", title, width, "    ")
        if res.error:
            lines += tablefit.hanging("    error: ", res.error, width)
        rows = _rows(res.verdicts)
        if rows:
            fitted = tablefit.fit(COLUMNS, rows, width)
            lines += fitted.header
            for verdict, row in zip(res.verdicts, fitted.rows, strict=True):
                lines += row
                for line in verdict.lines:
                    lines += tablefit.hanging("      | ", line, width, "      |   ")
                for reason in verdict.reasons:
                    lines += tablefit.hanging("      - ", reason, width, "        ")
        lines.append("")
    if summary:
        lines.append(summary_text(results, width))
    return "\n".join(lines).rstrip("\n")


def _totals(results: Sequence[ScenarioResult]) -> dict[str, int]:
    verdicts = [v for r in results for v in r.verdicts]
    return {
        "scenarios": len(results),
        "probes": len(verdicts),
        "passed": sum(1 for v in verdicts if v.passed),
        "failed": sum(1 for v in verdicts if not v.passed),
        "errors": sum(1 for r in results if r.error),
    }


def summary_line(results: Sequence[ScenarioResult]) -> str:
    t = _totals(results)
    line = (
        f"{t['scenarios']} scenario{'s' if t['scenarios'] != 1 else ''}, "
        f"{t['probes']} probe{'s' if t['probes'] != 1 else ''}: "
        f"{t['passed']} passed, {t['failed']} failed"
    )
    if t["errors"]:
        line += f", {t['errors']} scenario{'s' if t['errors'] != 1 else ''} could not run"
    return line + (
        f" (statistical checks at alpha {ALPHA:g} each,"
        f" Bonferroni: {FAMILY_ALPHA:g} for up to {MAX_CHECKS})"
    )


def summary_text(results: Sequence[ScenarioResult], width: int | None = None) -> str:
    """The summary line, wrapped to the width (None: one line)."""
    return "\n".join(tablefit.hanging("", summary_line(results), width, "  "))


def to_json(results: Sequence[ScenarioResult]) -> dict:
    """The report of `testbed run --json`, as SCENARIO-FORMAT.md and the schema define it."""
    summary = {**_totals(results), "alpha": ALPHA}
    scenarios = []
    for res in results:
        item: dict = {
            "name": res.name,
            "file": res.file,
            "proxyMode": res.proxy_mode,
            "passed": res.passed,
            "seconds": round(res.seconds, 3),
            "probes": [v.as_report() for v in res.verdicts],
        }
        if res.error:
            item["error"] = res.error
        if res.description:
            item["description"] = res.description
        item["warnings"] = list(res.warnings)
        if res.topology:
            item["topology"] = res.topology
        scenarios.append(item)
    return {"summary": summary, "scenarios": scenarios}


def to_junit(results: Sequence[ScenarioResult]) -> str:
    """JUnit XML: a testsuite per scenario and mode, a testcase per probe."""
    root = ET.Element("testsuites", name="kubeproxy-testbed")
    for res in results:
        failures = sum(1 for v in res.verdicts if not v.passed)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"{res.name} [{res.proxy_mode}]",
            tests=str(len(res.verdicts) + (1 if res.error else 0)),
            failures=str(failures),
            errors="1" if res.error else "0",
            time=f"{res.seconds:.3f}",
            file=res.file,
        )
        if res.error:
            case = ET.SubElement(suite, "testcase", classname=res.name, name="(scenario)")
            ET.SubElement(case, "error", message=res.error).text = res.error
        for v in res.verdicts:
            case = ET.SubElement(suite, "testcase", classname=res.name, name=v.name)
            if not v.passed:
                message = " ".join(v.reasons)
                body = "\n".join([*v.reasons, "", f"path: {v.path}"])
                ET.SubElement(case, "failure", message=message).text = body
            ET.SubElement(case, "system-out").text = v.path
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

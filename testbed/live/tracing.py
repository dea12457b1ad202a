"""`trace: true` on a probe: after its attempts, one marked packet and the kernel's trace.

The verdict keeps the trace under `trace` in the JSON report (kernel/ruletrace.py's
shape) and one line per node that saw the packet under the probe's row. A host that
cannot trace (legacy iptables, a tool missing) gets the reason instead, not a failure:
the trace explains a verdict, it is not one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from testbed.core.model import ProbePlan
from testbed.core.targets import aim
from testbed.kernel import ruletrace
from testbed.verdict.judge import Verdict

if TYPE_CHECKING:
    from testbed.live.lab import Lab


def traced(lab: Lab, probe: ProbePlan, verdict: Verdict) -> Verdict:
    try:
        found = ruletrace.trace(lab.id, lab.plan, probe.source, aim(lab.plan, probe))
    except ruletrace.TraceError as exc:
        report: dict = {"error": str(exc)}
        lines = [f"kernel trace: not available: {exc}"]
    else:
        report = found.as_report()
        lines = [
            f"kernel trace at {node}: {got['verdict']}"
            for node, got in found.nodes.items()
            if got["verdict"] != "not seen"
        ] or ["kernel trace: no node saw the marked packet"]
    return replace(
        verdict,
        details={**verdict.details, "trace": report},
        lines=(*verdict.lines, *lines),
    )

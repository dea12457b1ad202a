"""kubeproxy-testbed: see how kube-proxy really handles Service traffic.

The public API for scripts and tests:

    import testbed

    with testbed.load("local-no-local-endpoint") as lab:      # a scenario file or name
        for verdict in lab.verdicts():
            print(verdict.name, verdict.passed, verdict.observed)

    with testbed.build(nodes=2, clients=["client"], ...) as lab:   # or a world built in code
        ...

Names are resolved on first use: `import testbed` stays cheap (no netlink, no
Scapy), so the command line starts fast and a unit test can import it freely.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Lab": "testbed.live.lab",
    "LabError": "testbed.live.lab",
    "Verdict": "testbed.verdict.judge",
    "Expectation": "testbed.core.model",
    "Observation": "testbed.core.records",
    "Attempt": "testbed.core.records",
    "Hop": "testbed.core.records",
    "ScenarioError": "testbed.core.scenario",
    "build": "testbed.builders",
    "documents": "testbed.builders",
    "load": "testbed.builders",
    "service": "testbed.builders",
    "pod": "testbed.builders",
    "deployment": "testbed.builders",
    "client": "testbed.builders",
    "probe_spec": "testbed.builders",
}

__all__ = [
    "Attempt",
    "Expectation",
    "Hop",
    "Lab",
    "LabError",
    "Observation",
    "ScenarioError",
    "Verdict",
    "build",
    "client",
    "deployment",
    "documents",
    "load",
    "pod",
    "probe_spec",
    "service",
]

if TYPE_CHECKING:  # what type checkers and editors see; nothing is imported at run time
    from testbed.builders import (
        build,
        client,
        deployment,
        documents,
        load,
        pod,
        probe_spec,
        service,
    )
    from testbed.core.model import Expectation
    from testbed.core.records import Attempt, Hop, Observation
    from testbed.core.scenario import ScenarioError
    from testbed.live.lab import Lab, LabError
    from testbed.verdict.judge import Verdict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'testbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

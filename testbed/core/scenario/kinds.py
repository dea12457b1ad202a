"""What the reader knows of each kind: which it reads, in which order, which workload
fields it ignores, and how to read owner references leniently."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.core.scenario.types import (
    LAB_API,
    Loc,
)

# -- the reader -----------------------------------------------------------------------


@dataclass
class _Seen:
    """Names, addresses and ports already taken, with where they were first written."""

    where: dict[tuple[str, Any], Loc] = field(default_factory=dict)

    def claim(self, kind: str, value: Any, loc: Loc, message: Callable[[Loc], str]) -> None:
        first = self.where.get((kind, value))
        if first is not None:
            raise loc.error(message(first))
        self.where[(kind, value)] = loc

    def owner(self, kind: str, value: Any) -> Loc | None:
        return self.where.get((kind, value))


_KINDS = {
    "Lab": LAB_API,
    "Service": "v1",
    "Pod": "v1",
    "Node": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "Endpoints": "v1",
}
_ORDER = (
    "Lab",
    "Node",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Pod",
    "EndpointSlice",
    "Endpoints",
)
_WORKLOAD_FIELDS = {
    "Deployment": (
        ("replicas", "selector", "template"),
        "strategy revisionHistoryLimit progressDeadlineSeconds minReadySeconds paused",
    ),
    "StatefulSet": (
        ("replicas", "selector", "template", "ordinals"),
        "serviceName podManagementPolicy updateStrategy revisionHistoryLimit minReadySeconds "
        "persistentVolumeClaimRetentionPolicy volumeClaimTemplates",
    ),
    "DaemonSet": (("selector", "template"), "updateStrategy revisionHistoryLimit minReadySeconds"),
}


def _loose(value: Any, *keys: str) -> Any:
    """A nested value read without validation (None when absent or of another shape)."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _controller_ref(meta: Any) -> tuple[str, str] | None:
    """(kind, name) of the controller in metadata.ownerReferences, loosely read."""
    refs = _loose(meta, "ownerReferences")
    if not isinstance(refs, list):
        return None
    entries = [r for r in refs if isinstance(r, dict)]
    chosen = [r for r in entries if r.get("controller") is True] or entries[:1]
    for ref in chosen:
        kind, name = ref.get("kind"), ref.get("name")
        if isinstance(kind, str) and isinstance(name, str):
            return kind, name
    return None

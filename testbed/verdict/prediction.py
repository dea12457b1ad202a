"""What the oracle predicts, as plain data: the fates an attempt can meet, with their
probabilities, and the prediction for one probe that the judge reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from testbed.core.errors import TestbedError
from testbed.core.records import BROKEN as BROKEN_END
from testbed.core.records import COMPLETED, DELIVERED

CORRECT = "correct"
BROKEN = "broken"
NONE = "none"
MIXED = "mixed"
NO_SNAT = "no-snat"
NO_ROUTE_CLUSTER_IP = (
    "the edge has no route to the Service CIDR: outside traffic reaches a ClusterIP "
    "only from inside the cluster"
)
NO_ROUTE_POD = (
    "the edge has no route to the pod network: outside traffic reaches a pod only "
    "through a Service's NodePort, LB IP or externalIP"
)


class OracleError(TestbedError, ValueError):
    """The probe aims at something the service does not have (no NodePort, no VIP...)."""


@dataclass(frozen=True)
class Fate:
    """One way an attempt can end, and how likely it is."""

    probability: float
    outcome: str  # delivered | dropped | rejected
    pod: str | None = None
    source_ip: str | None = None  # the address the pod sees as its peer
    return_path: str = NONE  # correct | broken | none
    entry_node: str | None = None  # node that DNATs (or drops/rejects) it
    serving_node: str | None = None
    reply_from: str | None = None  # ip:port the source gets its reply from
    why: str = ""  # one plain sentence: the rule or route that decides this fate
    reset: bool = False  # the connection is reset after its handshake (outOfWindow probes)


@dataclass(frozen=True)
class Prediction:
    fates: tuple[Fate, ...]
    source: str  # probe source name
    source_kind: str  # client | pod | node
    source_address: str
    target: str  # ip:port the source aims at
    node_addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()  # node -> (ip, gateway)
    sticky: bool = False  # sessionAffinity ClientIP (remembered per DNAT node)
    notes: tuple[str, ...] = field(default=())

    # -- summaries ------------------------------------------------------------

    @property
    def delivered(self) -> tuple[Fate, ...]:
        return tuple(f for f in self.fates if f.outcome == DELIVERED and f.probability > 0)

    @property
    def outcomes(self) -> dict[str, float]:
        """Probability of each outcome."""
        out: dict[str, float] = {}
        for f in self.fates:
            if f.probability > 0:
                out[f.outcome] = out.get(f.outcome, 0.0) + f.probability
        return dict(sorted(out.items()))

    @property
    def ends(self) -> dict[str, float]:
        """Probability of each way an attempt ends for the source (Attempt.end): a delivery
        completes only when the reply comes back from the address aimed at."""
        out: dict[str, float] = {}
        for f in self.fates:
            if f.probability <= 0:
                continue
            end = f.outcome
            if f.outcome == DELIVERED:
                end = COMPLETED if f.return_path == CORRECT and not f.reset else BROKEN_END
            out[end] = out.get(end, 0.0) + f.probability
        return dict(sorted(out.items()))

    @property
    def completed(self) -> float:
        """The fraction of attempts a real client would see succeed."""
        return self.ends.get(COMPLETED, 0.0)

    @property
    def outcome(self) -> str:
        seen = set(self.outcomes)
        return seen.pop() if len(seen) == 1 else MIXED

    @property
    def pods(self) -> tuple[str, ...]:
        return tuple(sorted({f.pod for f in self.delivered if f.pod}))

    @property
    def entry_nodes(self) -> tuple[str, ...]:
        return tuple(sorted({f.entry_node for f in self.fates if f.entry_node}))

    def addresses_of(self, node: str | None) -> tuple[str, ...]:
        return dict(self.node_addresses).get(node or "", ())

    def label(self, fate: Fate) -> str | None:
        """The scenario format's name for what the pod sees: client, node or the literal IP."""
        ip = fate.source_ip
        if ip is None:
            return None
        own = ip in self.addresses_of(fate.entry_node)
        if self.source_kind == "node" and own:
            return "node"
        if ip == self.source_address:
            return "client"
        return "node" if own else ip

    @property
    def source_labels(self) -> tuple[str, ...]:
        return tuple(sorted({lbl for f in self.delivered if (lbl := self.label(f))}))

    @property
    def source_ip(self) -> str | None:
        labels = self.source_labels
        if not labels:
            return None
        return labels[0] if len(labels) == 1 else MIXED

    @property
    def return_path(self) -> str:
        """Read like Observation.return_path: attempts without a reply do not count."""
        seen = {f.return_path for f in self.delivered if f.return_path != NONE}
        if not seen:
            return NONE
        return seen.pop() if len(seen) == 1 else MIXED

    @property
    def share(self) -> dict[str, float]:
        """Each pod's probability among the delivered attempts."""
        total = sum(f.probability for f in self.delivered)
        out: dict[str, float] = {}
        for f in self.delivered:
            if f.pod:
                out[f.pod] = out.get(f.pod, 0.0) + f.probability / total
        return dict(sorted(out.items()))

    @property
    def affinity(self) -> bool:
        """ClientIP affinity pins every attempt to one pod only when one node does the DNAT:
        each node keeps its own affinity table, and the edge spreads flows over nodes."""
        entries = {f.entry_node for f in self.delivered}
        return self.sticky and bool(entries) and len(entries) == 1

    def as_report(self) -> dict:
        """The `oracle` object of the JSON report."""
        out: dict = {"outcome": self.outcome}
        if self.outcome == MIXED:
            out["outcomes"] = {k: round(v, 6) for k, v in self.outcomes.items()}
        out["completed"] = round(self.completed, 6)
        if self.source_ip is not None:
            out["sourceIP"] = self.source_ip
        out["pods"] = list(self.pods)
        out["returnPath"] = self.return_path
        if len(self.pods) > 1 and not self.sticky:
            out["share"] = {k: round(v, 6) for k, v in self.share.items()}
        if self.affinity:
            out["affinity"] = True
        return out

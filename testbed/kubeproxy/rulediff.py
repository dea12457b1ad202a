"""Our ruleset next to the real kube-proxy's, normalised so that only real differences show.

Both sides are what the kernel prints (`iptables-save`, `nft list table ip kube-proxy`
or `nft list ruleset`), so rule syntax is already the kernel's on both. Normalising:

- counters, comment lines, and built-in chain headers go (`:INPUT ACCEPT [5:300]` says
  nothing about kube-proxy; the built-in chains' jump rules stay);
- chains are listed by name, and set and map elements sorted: the kernel prints them in
  creation or hash order, which means nothing. Inside a chain rule order matters
  (first match wins, and the KUBE-SVC probabilities are conditional on the rules before
  them), so it is kept, except in the dispatch chains (KUBE-SERVICES, KUBE-NODEPORTS,
  KUBE-EXTERNAL-SERVICES, KUBE-PROXY-FIREWALL), whose rules match disjoint destinations:
  they are sorted up to the KUBE-SERVICES rule that "must be the last rule", which (with
  anything after it) keeps its place;
- chain names are compared as they are. No suffix is random: KUBE-SVC/SVL/EXT/FW and
  KUBE-SEP names are base32(sha256(service port name + protocol [+ endpoint]))[:16]
  (`servicePortChainName`, `servicePortEndpointChainName` in pkg/proxy/iptables/
  proxier.go), nftables chains carry the same hash's first 8 characters, and the
  renderer computes them identically (kubeproxy/names.py), so a differing name is a
  differing service or endpoint and must show;
- three things of the real kube-proxy are upstream facts the lab does not render, dropped
  here (docs/upstream.md says why): the empty `KUBE-PROXY-CANARY` chains (and a mangle
  table holding nothing else), the `-m nfacct --nfacct-name ...` counter on the INVALID
  drop (it counts, it does not change a verdict), and everything of the API server's own
  `default/kubernetes` Service (the lab's model has no API server Service); in nftables
  mode also the `ip6` table (kube-proxy runs dual-stack; the lab is IPv4).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from testbed.kubeproxy.incremental import DISPATCH, canonical_nft

API_SERVER_SERVICE = "default/kubernetes"
CANARY = "KUBE-PROXY-CANARY"
LAST_RULE_MARK = "NOTE: this must be the last rule in this chain"
NFT_TABLE = "table ip kube-proxy"

_BUILTIN = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
_NFACCT = re.compile(r" -m nfacct --nfacct-name +\S+")
_API_COMMENT = re.compile(r'--comment "?' + re.escape(API_SERVER_SERVICE) + r'[ :"]')
_API_CHAIN = re.compile(r"-" + re.escape(API_SERVER_SERVICE) + r"/")
_TABLE = re.compile(r"^table (\S+) (\S+) \{$")


# -- iptables ---------------------------------------------------------------------------


def _iptables_tables(save: str) -> dict[str, dict[str, list[str]]]:
    """table -> chain -> rules in kernel order (counters and comment lines dropped)."""
    tables: dict[str, dict[str, list[str]]] = {}
    chains: dict[str, list[str]] = {}
    for line in save.splitlines():
        line = line.rstrip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            chains = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            chains.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            chains.setdefault(line.split(" ", 2)[1], []).append(line)
    return tables


def normalise_iptables(save: str) -> list[str]:
    """An `iptables-save` dump as comparable lines: `*table`, `:CHAIN`, `-A ...`."""
    out: list[str] = []
    for table, chains in sorted(_iptables_tables(save).items()):
        chains.pop(CANARY, None)
        dropped: set[str] = set()
        for chain, rules in chains.items():
            kept = [_NFACCT.sub("", r) for r in rules if not _API_COMMENT.search(r)]
            if rules and not kept and chain not in _BUILTIN:
                dropped.add(chain)  # a chain of the API server's Service only
            chains[chain] = kept
        lines: list[str] = []
        for chain in sorted(c for c in chains if c not in dropped):
            rules = chains[chain]
            if (table, chain) in DISPATCH:
                # sorted up to the first "must be the last rule"; from there on, as is
                first = next((n for n, r in enumerate(rules) if LAST_RULE_MARK in r), len(rules))
                rules = [*sorted(rules[:first]), *rules[first:]]
            if chain not in _BUILTIN:
                lines.append(f":{chain}")
            lines += rules
        if lines:
            out += [f"*{table}", *lines]
    return out


# -- nftables ---------------------------------------------------------------------------


def _ip_table(listing: str) -> str:
    """The `table ip kube-proxy` block of `nft list ruleset` (or the whole listing)."""
    out: list[str] = []
    inside = False
    for line in listing.splitlines():
        match = _TABLE.match(line)
        if match:
            inside = line == f"{NFT_TABLE} {{"
        if inside:
            out.append(line)
        if line == "}":
            inside = False
    return "\n".join(out)


def normalise_nft(listing: str) -> list[str]:
    """`nft list table ip kube-proxy` (or `list ruleset`) as comparable lines."""
    blocks = canonical_nft(_ip_table(listing))
    api_ips = _api_server_ips(blocks)
    out: list[str] = []
    for name in sorted(blocks):
        if _API_CHAIN.search(name):
            continue
        out.append(f"{name} {{")
        for part in blocks[name]:
            if isinstance(part, tuple):
                elements = [e for e in part if not _of_api_server(e, api_ips)]
                out += [f"  element {e}" for e in elements]
            else:
                out.append(f"  {part}")
        out.append("}")
    return out


def _api_server_ips(blocks: dict[str, tuple[object, ...]]) -> set[str]:
    """The API server Service's ClusterIP, from the service-ips element that names it."""
    ips: set[str] = set()
    for part in blocks.get("map service-ips", ()):
        if isinstance(part, tuple):
            ips.update(e.split(" ", 1)[0] for e in part if _API_CHAIN.search(e))
    return ips


def _of_api_server(element: str, ips: set[str]) -> bool:
    return bool(_API_CHAIN.search(element)) or element in ips


# -- the diff ---------------------------------------------------------------------------


def normalise(text: str, mode: str) -> list[str]:
    """A kernel dump in `mode` (iptables | nftables) as comparable lines."""
    if mode == "nftables":
        return normalise_nft(text)
    if mode == "iptables":
        return normalise_iptables(text)
    raise ValueError(f"unknown proxy mode {mode!r} (iptables or nftables)")


@dataclass(frozen=True)
class NodeDiff:
    """One node's comparison: a header line and, when they differ, a unified diff."""

    node: str
    mode: str
    ours: str  # what the left side is, e.g. "rendered"
    theirs: str  # e.g. "kube-proxy v1.37.2"
    lines: tuple[str, ...]  # unified diff lines; empty when identical
    compared: int  # normalised lines on the left

    @property
    def identical(self) -> bool:
        return not self.lines

    @property
    def header(self) -> str:
        if self.identical:
            return (
                f"{self.node} ({self.mode}): identical: {self.ours} and {self.theirs},"
                f" {self.compared} lines after normalising"
            )
        removed = sum(1 for x in self.lines if x.startswith("-") and not x.startswith("---"))
        added = sum(1 for x in self.lines if x.startswith("+") and not x.startswith("+++"))
        return (
            f"{self.node} ({self.mode}): {removed} line(s) only in {self.ours},"
            f" {added} only in {self.theirs}"
        )

    def text(self) -> str:
        return "\n".join((self.header, *self.lines)) + "\n"


def diff(
    node: str,
    mode: str,
    ours: str,
    theirs: str,
    ours_label: str = "rendered",
    theirs_label: str = "kernel",
    context: int = 2,
) -> NodeDiff:
    """Normalise both dumps of one node and diff them, ours first."""
    left, right = normalise(ours, mode), normalise(theirs, mode)
    lines = difflib.unified_diff(
        left, right, f"{ours_label} {node}", f"{theirs_label} {node}", n=context, lineterm=""
    )
    return NodeDiff(node, mode, ours_label, theirs_label, tuple(lines), len(left))


def report(diffs: Iterable[NodeDiff]) -> str:
    """Every node's header (and diff), and the exit code's meaning in one closing line."""
    diffs = list(diffs)
    body = "".join(d.text() for d in diffs)
    differ = [d.node for d in diffs if not d.identical]
    tail = f"differ: {', '.join(differ)}" if differ else "no difference"
    return body + tail + "\n"

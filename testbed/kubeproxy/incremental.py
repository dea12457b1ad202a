"""Sync only what changed: a small loader delta between two service lists of one node.

kube-proxy does not reload a node's whole ruleset on every change. Its nftables
proxier flushes and rewrites the chains of the services that changed, flushes and
deletes stale chains and updates map elements; its iptables proxier (with
MinimizeIPTablesRestore) writes only the chains of changed services. On a node
holding thousands of services a full reload takes seconds here, a delta tens of
milliseconds, so a lab that re-syncs often needs the delta.

`delta()` is pure: it renders only the services that differ (old and new
version) with the same renderers as a full sync and compares the pieces.
`apply_delta()` loads the result. Differences from kube-proxy, both deliberate:

- iptables: kube-proxy rewrites KUBE-SERVICES and the other dispatch chains in
  full on every sync. Here only their changed rules are deleted (by rule spec)
  and inserted (at the head), because rewriting a 5,000-rule chain costs about
  0.8 s on the nf_tables backend. Rules in those chains match disjoint
  destinations, so their order carries no meaning, and the rule that must stay
  last in nat KUBE-SERVICES (the NodePort jump) stays last. `iptables-save`
  therefore lists them in a different order than a full load would.
- When the total endpoint count crosses kube-proxy's large-cluster threshold
  (it drops rule comments above it), every endpoint chain changes: the delta is
  then a full restore, as kube-proxy's own full sync would be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from testbed.core.model import NodePlan, ProxyOptions, ServicePlan
from testbed.kubeproxy import iptables, nftables

# Chains shared by all services in iptables mode: (table, chain).
DISPATCH = frozenset(
    {
        ("nat", "KUBE-SERVICES"),
        ("nat", "KUBE-NODEPORTS"),
        ("filter", "KUBE-SERVICES"),
        ("filter", "KUBE-EXTERNAL-SERVICES"),
        ("filter", "KUBE-NODEPORTS"),
        ("filter", "KUBE-PROXY-FIREWALL"),
    }
)
_LAST_RULE_MARK = "NOTE: this must be the last rule in this chain"
_NFT_TABLE = nftables.TABLE


@dataclass(frozen=True)
class Delta:
    """What one incremental sync loads, and why."""

    mode: str
    text: str  # loader input; "" when the node's rules need no change
    full: bool  # a full restore: the change cannot be expressed as a delta
    added: tuple[str, ...] = ()  # service keys
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.text


def changed_services(
    old: Sequence[ServicePlan], new: Sequence[ServicePlan]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, removed, changed) service keys; unchanged objects are usually the same object."""
    before = {s.key: s for s in old}
    after = {s.key: s for s in new}
    added = tuple(k for k in after if k not in before)
    removed = tuple(k for k in before if k not in after)
    changed = tuple(
        k for k, s in after.items() if k in before and before[k] is not s and before[k] != s
    )
    return added, removed, changed


def _large(services: Iterable[ServicePlan]) -> bool:
    """The iptables renderer's large-cluster switch, computed the same way."""
    total = sum(len(p.endpoints) for s in services if s.cluster_ip for p in s.ports)
    return total > iptables.LARGE_CLUSTER_ENDPOINTS


def delta(
    mode: str,
    old_services: Sequence[ServicePlan],
    new_services: Sequence[ServicePlan],
    node: NodePlan,
    opts: ProxyOptions,
) -> Delta:
    """The loader text that turns the node's `old_services` rules into `new_services` rules."""
    added, removed, changed = changed_services(old_services, new_services)
    if not (added or removed or changed):
        return Delta(mode, "", False)
    before = {s.key: s for s in old_services}
    after = {s.key: s for s in new_services}
    old = [before[k] for k in (*removed, *changed)]
    new = [after[k] for k in (*added, *changed)]
    if mode == "nftables" and nftables.uses_hairpin_set(opts):
        # the hairpin set is shared by every Service: the whole table, in one transaction
        return Delta(mode, nftables.render(node, new_services, opts), True, added, removed, changed)
    if mode == "nftables":
        text = _nft_delta(old, new, node, opts)
        return Delta(mode, text, False, added, removed, changed)
    large = _large(new_services)
    if large != _large(old_services):
        text = iptables.render(node, new_services, opts)
        return Delta(mode, text, True, added, removed, changed)
    text = _iptables_delta(old, new, node, opts, large)
    return Delta(mode, text, False, added, removed, changed)


def loader(mode: str, full: bool) -> list[str]:
    if mode == "nftables":
        return ["nft", "-f", "-"]
    return ["iptables-restore"] if full else ["iptables-restore", "--noflush"]


# -- iptables ----------------------------------------------------------------------


@dataclass
class _IptPiece:
    """One or more services' rules: own chains (nat) in order, and dispatch-chain rules."""

    chains: dict[str, list[str]]
    dispatch: dict[tuple[str, str], list[str]]


def _chain_of(rule: str) -> str:
    return rule.split(" ", 2)[1]


def _iptables_piece(
    services: Sequence[ServicePlan], node: NodePlan, opts: ProxyOptions, large: bool
) -> _IptPiece:
    """The renderer's own per-port writer, so the pieces match a full render line for line.

    `_write_port` is the body of the renderer's per-service loop; a full render
    cannot be cut into services because of the large-cluster switch.
    """
    out = iptables._Out()
    local_cidr = opts.local_cidr(node)
    for svc in services:
        if not svc.cluster_ip:
            continue
        for port in sorted(svc.ports, key=lambda p: (svc.port_name(p), p.protocol)):
            iptables._write_port(out, node, svc, port, opts, local_cidr, large)
    chains: dict[str, list[str]] = {line[1:].split(" ", 1)[0]: [] for line in out.nat_chains}
    dispatch: dict[tuple[str, str], list[str]] = {}
    for table, rules in (("filter", out.filter_rules), ("nat", out.nat_rules)):
        for rule in rules:
            chain = _chain_of(rule)
            if table == "nat" and chain in chains:
                chains[chain].append(rule)
            else:
                dispatch.setdefault((table, chain), []).append(rule)
    return _IptPiece(chains, dispatch)


def _iptables_delta(
    old_services: Sequence[ServicePlan],
    new_services: Sequence[ServicePlan],
    node: NodePlan,
    opts: ProxyOptions,
    large: bool,
) -> str:
    old = _iptables_piece(old_services, node, opts, large)
    new = _iptables_piece(new_services, node, opts, large)
    stale = [c for c in old.chains if c not in new.chains]
    rewrite = [c for c, rules in new.chains.items() if old.chains.get(c) != rules]

    def dispatch_lines(table: str) -> tuple[list[str], list[str]]:
        deletes: list[str] = []
        inserts: list[str] = []
        for key in sorted(set(old.dispatch) | set(new.dispatch)):
            if key[0] != table:
                continue
            was, now = old.dispatch.get(key, []), new.dispatch.get(key, [])
            was_set, now_set = set(was), set(now)
            deletes += ["-D" + r[2:] for r in was if r not in now_set]
            # inserted at the head in reverse, so they read in render order there
            fresh = [r for r in now if r not in was_set]
            inserts += [f"-I {key[1]} 1 {r.split(' ', 2)[2]}" for r in reversed(fresh)]
        return deletes, inserts

    lines: list[str] = []
    f_del, f_ins = dispatch_lines("filter")
    if f_del or f_ins:
        lines += ["*filter", *f_del, *f_ins, "COMMIT"]
    n_del, n_ins = dispatch_lines("nat")
    if stale or rewrite or n_del or n_ins:
        lines.append("*nat")
        # Declaring a chain under --noflush creates it or flushes it.
        lines += [f":{c} - [0:0]" for c in (*rewrite, *stale)]
        lines += n_del
        for c in rewrite:
            lines += new.chains[c]
        lines += n_ins
        lines += [f"-X {c}" for c in stale]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


# -- nftables ----------------------------------------------------------------------

_ADD_CHAIN = f"add chain {_NFT_TABLE} "
_ADD_RULE = f"add rule {_NFT_TABLE} "
_ADD_ELEMENT = f"add element {_NFT_TABLE} "
_ADD_SET = f"add set {_NFT_TABLE} "


@dataclass
class _NftPiece:
    chains: dict[str, str]  # name -> its `add chain` line
    rules: dict[str, list[str]]  # chain -> its `add rule` lines
    elements: dict[tuple[str, str], str]  # (set or map, key) -> its `add element` line
    sets: dict[str, str]  # name -> its `add set` line (affinity sets)


def element_key(line: str) -> tuple[str, str]:
    """(set or map, key) of an `add element` line, e.g. `service-ips { 1.2.3.4 . tcp . 80 : ...`."""
    rest = line[len(_ADD_ELEMENT) :]
    name, _, body = rest.partition(" { ")
    body = body.rstrip().removesuffix("}").rstrip()
    key = body.split(" comment ", 1)[0].split(" : ", 1)[0].strip()
    return name, key


def _nft_piece(services: Sequence[ServicePlan], node: NodePlan, opts: ProxyOptions) -> _NftPiece:
    """The full renderer's output for these services, minus the fixed base of the table."""
    base = len(nftables.render(node, (), opts).splitlines())
    piece = _NftPiece({}, {}, {}, {})
    lines = nftables.render(node, services, opts).splitlines()[base:]
    for line in lines:
        if line.startswith(_ADD_RULE):
            chain = line[len(_ADD_RULE) :].split(" ", 1)[0]
            piece.rules.setdefault(chain, []).append(line)
        elif line.startswith(_ADD_CHAIN):
            name = line[len(_ADD_CHAIN) :].split(" ", 1)[0]
            piece.chains[name] = line
            piece.rules.setdefault(name, [])
        elif line.startswith(_ADD_ELEMENT):
            piece.elements[element_key(line)] = line
        elif line.startswith(_ADD_SET):
            piece.sets[line[len(_ADD_SET) :].split(" ", 1)[0]] = line
    return piece


def _mentions(line: str, names: set[str]) -> bool:
    return any(token.lstrip("@") in names for token in line.split())


def _nft_delta(
    old_services: Sequence[ServicePlan],
    new_services: Sequence[ServicePlan],
    node: NodePlan,
    opts: ProxyOptions,
) -> str:
    old = _nft_piece(old_services, node, opts)
    new = _nft_piece(new_services, node, opts)
    stale = [c for c in old.chains if c not in new.chains]
    # nft keeps an existing chain's comment: a new declaration means delete and add again.
    redeclared = [c for c in new.chains if c in old.chains and old.chains[c] != new.chains[c]]
    gone_sets = [s for s, line in old.sets.items() if new.sets.get(s) != line]
    fresh_sets = [s for s, line in new.sets.items() if old.sets.get(s) != line]
    # What is deleted and made again must first lose every reference, even unchanged ones.
    doomed = {*redeclared, *gone_sets}
    changed = [
        c
        for c in new.chains
        if c in old.chains
        and (
            old.rules[c] != new.rules[c]
            or c in doomed
            or (doomed and any(_mentions(r, doomed) for r in old.rules[c]))
        )
    ]
    forced = {k for k, line in old.elements.items() if doomed and _mentions(line, doomed)}
    gone = [k for k, line in old.elements.items() if new.elements.get(k) != line or k in forced]
    fresh = [k for k, line in new.elements.items() if old.elements.get(k) != line or k in forced]

    out = [f"delete element {_NFT_TABLE} {name} {{ {key} }}" for name, key in gone]
    out += [f"flush chain {_NFT_TABLE} {c}" for c in (*changed, *stale)]
    out += [f"delete chain {_NFT_TABLE} {c}" for c in (*stale, *redeclared)]
    out += [f"delete set {_NFT_TABLE} {s}" for s in gone_sets]
    out += [line for c, line in new.chains.items() if c not in old.chains or c in redeclared]
    out += [new.sets[s] for s in fresh_sets]
    for c in new.chains:
        if c not in old.chains or c in changed:
            out += new.rules[c]
    out += [new.elements[k] for k in fresh]
    return "\n".join(out) + "\n" if out else ""


# -- comparing what the kernel holds -------------------------------------------------


def canonical_iptables(save: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """`iptables-save` as table -> chain -> rules, counters dropped.

    Dispatch chains compare as sorted rules (their order is free), except that the
    rule that must stay last in nat KUBE-SERVICES is kept last.
    """
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    table = ""
    for line in save.splitlines():
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            current = tables.setdefault(table, {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            current.setdefault(_chain_of(line), []).append(line)
    result: dict[str, dict[str, tuple[str, ...]]] = {}
    for table, chains in tables.items():
        result[table] = {}
        for chain, rules in chains.items():
            if (table, chain) in DISPATCH:
                tail = rules[-1:] if rules and _LAST_RULE_MARK in rules[-1] else []
                body = rules[: len(rules) - len(tail)]
                result[table][chain] = (*sorted(body), *tail)
            else:
                result[table][chain] = tuple(rules)
    return result


def _split_elements(text: str) -> list[str]:
    """Split `a, b : goto c, "x, y"` on the commas that are not in quotes or braces."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "{":
            depth += 1
        elif not quoted and ch == "}":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


_BLOCK = re.compile(r"^\t(chain|set|map) (\S+) \{$")


def canonical_nft(listing: str) -> dict[str, tuple[object, ...]]:
    """`nft list table` as block -> contents; set and map elements as a sorted tuple.

    The kernel lists chains in creation order and hash-set elements in hash
    order, so neither order says anything about the ruleset.
    """
    blocks: dict[str, tuple[object, ...]] = {}
    name = ""
    body: list[str] = []
    for line in listing.splitlines():
        match = _BLOCK.match(line)
        if match:
            name, body = f"{match.group(1)} {match.group(2)}", []
        elif name and line == "\t}":
            blocks[name] = _canonical_block(body)
            name = ""
        elif name:
            body.append(line.strip())
    return blocks


def _canonical_block(lines: list[str]) -> tuple[object, ...]:
    joined = "\n".join(lines)
    head, sep, rest = joined.partition("elements = {")
    if not sep:
        return tuple(lines)
    elements, _, after = rest.rpartition("}")
    items = tuple(sorted(_split_elements(" ".join(elements.split()))))
    return (*head.strip().splitlines(), items, *after.strip().splitlines())

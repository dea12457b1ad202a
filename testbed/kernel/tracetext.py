"""The kernel's own rule trace, read: `xtables-monitor --trace` and `nft monitor trace` text.

Pure: text in, the marked packet's path through the rules out, tested on captured output
(tests/data/trace). Each monitor prints, per packet and base chain (hook), one `packet`
line and then the rules that matched it with their verdicts. The kernel reuses a trace
id for later packets of the same buffer, so the marked packet is found by its IP id (NAT
rewrites addresses and ports, never the id) and kept from its first hook on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OUR_TABLE = "testbed_trace"  # the nftables table that sets nftrace on the marked packet
RETURN_CODE = "0xfffffffb"  # NFT_RETURN, as xtables-monitor prints it


@dataclass
class Event:
    """One rule that matched (or a chain's policy / return), with what it did."""

    chain: str
    kind: str  # rule | policy | return
    verdict: str  # accept | drop | jump | goto | continue | return
    target: str = ""  # the chain jumped to, or the rewrite: "DNAT to 10.244.1.2:8080"
    rule: str = ""  # the rule as the tool prints it
    comment: str = ""  # kube-proxy's own comment on the rule, when it has one


@dataclass
class Hook:
    """A packet's pass through one base chain: its header there and the rules it met."""

    table: str
    chain: str
    packet: dict[str, str]
    events: list[Event] = field(default_factory=list)
    trace_id: str = ""

    @property
    def name(self) -> str:
        return f"{self.table} {self.chain}"


# -- xtables-monitor --trace -----------------------------------------------------------

XT_PACKET = re.compile(r"^PACKET: \d+ ([0-9a-f]+) (.*)$")
XT_TRACE = re.compile(
    r"^\s*TRACE: \d+ ([0-9a-f]+) (\w+):([^:]+):(rule|policy|return):?(\S*)\s*(.*)$"
)
COMMENT = re.compile(r'--comment "([^"]*)"|comment "([^"]*)"')


def _xt_packet(text: str) -> dict[str, str]:
    out = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            out[key] = value
    flags = [w for w in text.split() if w in ("SYN", "ACK", "FIN", "RST", "PSH", "URG")]
    out["FLAGS"] = ",".join(flags)
    return {
        "in": out.get("IN", ""),
        "out": out.get("OUT", ""),
        "src": out.get("SRC", ""),
        "dst": out.get("DST", ""),
        "id": out.get("ID", ""),
        "sport": out.get("SPORT", ""),
        "dport": out.get("DPORT", ""),
        "flags": out["FLAGS"],
        "mark": out.get("MARK", ""),
    }


def _xt_event(chain: str, kind: str, code: str, rule: str) -> Event:
    comment = next((a or b for a, b in COMMENT.findall(rule)), "")
    if kind == "policy":
        return Event(chain, "policy", code.lower() or "accept")
    if kind == "return":
        return Event(chain, "return", "return")
    _handle, _, code = code.partition(":")  # 0x10:JUMP:KUBE-SERVICES
    head, _, rest = code.partition(":")  # JUMP:KUBE-SERVICES, GOTO:X, ACCEPT, DROP, CONTINUE
    verdict = "return" if head == RETURN_CODE else head.lower()
    target = rest
    if (m := re.search(r"-j DNAT --to-destination (\S+)", rule)) is not None:
        target = f"DNAT to {m.group(1)}"
    elif "-j MASQUERADE" in rule:
        target = "MASQUERADE"
    elif (m := re.search(r"-j SNAT --to-source (\S+)", rule)) is not None:
        target = f"SNAT to {m.group(1)}"
    elif "-j REJECT" in rule:
        verdict, target = "reject", "REJECT"
    elif (m := re.search(r"-j MARK --set-xmark (\S+)", rule)) is not None:
        target = f"MARK {m.group(1)}"
    return Event(chain, "rule", verdict, target, rule.strip(), comment)


def parse_xtables(text: str) -> list[Hook]:
    """Every hook pass `xtables-monitor --trace` printed, in order."""
    hooks: list[Hook] = []
    current: dict[str, Hook] = {}  # per trace id: the pass its PACKET line opened
    for line in text.splitlines():
        if m := XT_PACKET.match(line):
            current[m.group(1)] = Hook("", "", _xt_packet(m.group(2)), trace_id=m.group(1))
            continue
        m = XT_TRACE.match(line)
        if not m:
            continue
        tid, table, chain, kind, code, rule = m.groups()
        hook = current.get(tid)
        if hook is None or (hook.table and hook.table != table):
            hook = Hook("", "", hook.packet if hook else {}, trace_id=tid)
            current[tid] = hook
        if not hook.table:
            hook.table, hook.chain = table, chain
            hooks.append(hook)
        hook.events.append(_xt_event(chain, kind, code, rule))
    return hooks


# -- nft monitor trace -----------------------------------------------------------------

NFT_LINE = re.compile(
    r"^trace id ([0-9a-f]+) (\w+) (\S+) (\S+) (packet|rule|policy|verdict):? ?(.*)$"
)
NFT_VERDICT = re.compile(r"\(verdict (\w+)(?: (\S+))?\)\s*$")


def _nft_packet(text: str) -> dict[str, str]:
    def word(key: str) -> str:
        m = re.search(rf"{key} \"?([^\s\"]+)\"?", text)
        return m.group(1) if m else ""

    flags = re.search(r"tcp flags == ([\w|]+)", text)
    return {
        "in": word("iif"),
        "out": word("oif"),
        "src": word("ip saddr"),
        "dst": word("ip daddr"),
        "id": word("ip id"),
        "sport": word("(?:tcp|udp) sport"),
        "dport": word("(?:tcp|udp) dport"),
        "flags": (flags.group(1).upper().replace("|", ",") if flags else ""),
        "mark": word("meta mark"),
    }


def _nft_event(chain: str, kind: str, rest: str) -> Event:
    if kind == "policy":
        return Event(chain, "policy", (rest.split() or ["accept"])[0])
    if kind == "verdict":
        return Event(
            chain, "return" if "return" in rest else "rule", rest.split()[0] if rest else ""
        )
    m = NFT_VERDICT.search(rest)
    verdict, target = (m.group(1), m.group(2) or "") if m else ("continue", "")
    rule = NFT_VERDICT.sub("", rest).strip()
    if verdict in ("jump", "goto"):
        pass  # the chain it went to is the target
    elif (d := re.search(r"dnat to (\S+)", rule)) is not None:
        target = f"DNAT to {d.group(1)}"
    elif re.search(r"(^|\s)masquerade(\s|$)", rule):
        target = "MASQUERADE"
    elif (s := re.search(r"snat to (\S+)", rule)) is not None:
        target = f"SNAT to {s.group(1)}"
    elif "reject" in rule and verdict == "drop":
        verdict, target = "reject", "REJECT"
    comment = next((a or b for a, b in COMMENT.findall(rule)), "")
    return Event(chain, "rule", verdict, target, rule, comment)


def parse_nft(text: str) -> list[Hook]:
    """Every hook pass `nft monitor trace` printed, in order (our own table left out)."""
    hooks: list[Hook] = []
    open_by_id: dict[str, Hook] = {}
    for line in text.splitlines():
        m = NFT_LINE.match(line.rstrip())
        if not m:
            continue
        tid, _family, table, chain, kind, rest = m.groups()
        if kind == "packet":
            hook = Hook(table, chain, _nft_packet(rest), trace_id=tid)
            hooks.append(hook)
            open_by_id[tid] = hook
            continue
        hook = open_by_id.get(tid)
        if hook is not None:
            hook.events.append(_nft_event(chain, kind, rest))
    return [h for h in hooks if h.table != OUR_TABLE]


# -- the marked packet -----------------------------------------------------------------


def marked_id(hooks: list[Hook], sport: int) -> str | None:
    """The IP id of the first packet from `sport`: the marked one, before any NAT."""
    first = next((h for h in hooks if h.packet.get("sport") == str(sport)), None)
    return first.packet.get("id") if first else None


def marked(hooks: list[Hook], sport: int, ipid: str | None = None) -> list[Hook]:
    """The hooks of the marked packet: every pass with its IP id (the id survives DNAT and
    SNAT; the trace id is reused by later packets). The id is the first packet's from
    `sport` unless given: a node behind another sees the packet after its port changed."""
    ipid = ipid or marked_id(hooks, sport)
    if ipid is None:
        return []
    return [h for h in hooks if h.packet.get("id", "") == ipid]


def _is_ours(event: Event) -> bool:
    return "-j TRACE" in event.rule or "nftrace set 1" in event.rule


def steps(hook: Hook) -> list[Event]:
    """The events of one hook that say something: not our marking rule, not a bare policy."""
    shown = [e for e in hook.events if not _is_ours(e)]
    if all(e.kind != "rule" for e in shown):
        return []
    return shown


def _why(event: Event) -> str:
    """kube-proxy's comment on a rule, else the set or map that decided (nftables)."""
    if event.comment:
        return event.comment
    named = re.findall(r"@([\w-]+)", event.rule)
    return f"@{named[-1]}" if named else ""


def line(hook: Hook) -> str:
    """`nat PREROUTING: KUBE-SERVICES -> KUBE-NODEPORTS -> ... -> KUBE-SEP-X: DNAT to ip:port`."""
    events = steps(hook)
    chains: list[str] = []
    for e in events:
        if e.kind == "rule" and e.verdict in ("jump", "goto") and e.target:
            chains.append(e.target)
    last = events[-1] if events else None
    end = ""
    if last is not None:
        if last.kind == "policy":
            end = f"policy {last.verdict}"
        elif last.target and last.verdict not in ("jump", "goto"):
            end = last.target
        elif last.verdict not in ("jump", "goto", "continue"):
            end = last.verdict.upper()
            if last.verdict == "drop" and _why(last):
                end += f" ({_why(last)})"
    rewrites = [e.target for e in events[:-1] if e.target.startswith(("DNAT", "SNAT", "MASQ"))]
    path = " -> ".join(chains) if chains else "(no jump)"
    tail = ", ".join([*rewrites, end] if end else rewrites)
    return f"{hook.name}: {path}" + (f": {tail}" if tail else "")


def verdict(hooks: list[Hook]) -> str:
    """What the node did with the packet, in one phrase: DNAT to ..., dropped by ..., ..."""
    rewrites, fate = [], "passed on, no rewrite here"
    for hook in hooks:
        for e in steps(hook):
            if e.target.startswith(("DNAT", "SNAT", "MASQUERADE")):
                rewrites.append(e.target)
            if e.verdict in ("drop", "reject"):
                why = f": {_why(e)}" if _why(e) else ""
                fate = f"{'dropped' if e.verdict == 'drop' else 'rejected'} in {e.chain}{why}"
    if not hooks:
        return "not seen"
    return ", ".join(
        [*dict.fromkeys(rewrites), fate]
        if fate != "passed on, no rewrite here" or not rewrites
        else list(dict.fromkeys(rewrites))
    )


def summary(hooks: list[Hook]) -> dict:
    """One node's part of the trace, for the JSON report and the table."""
    shown = [h for h in hooks if steps(h)]
    return {
        "verdict": verdict(shown)
        if shown
        else ("seen, no kube-proxy rule" if hooks else "not seen"),
        "hooks": [
            {
                "hook": h.name,
                "packet": {k: v for k, v in h.packet.items() if v},
                "path": line(h),
                "rules": [
                    {"chain": e.chain, "verdict": e.verdict, "target": e.target, "rule": e.rule}
                    for e in steps(h)
                ],
            }
            for h in shown
        ],
    }

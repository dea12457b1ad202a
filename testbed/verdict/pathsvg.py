"""SVG pictures of a lab and of one probe's paths, drawn from the JSON report alone.

The picture is the classic Cluster-versus-Local figure: the source at the top, the
edge router / load balancer under it, the nodes in a row with their pods inside.
A probe's flows are drawn on it: the arrow into each node it entered (as thick as its
share), what that node did (DNAT, SNAT, or the drop), the arrow on to the pod that
answered, the source address the pod saw, and the reply coming back (or a broken one
coming straight from the pod). Every string from the scenario is escaped here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html import escape

# the ends of an attempt (testbed/core/records.py ENDS), in the report's own words
COLOURS = {
    "completed": "#1e8449",
    "broken": "#d35400",
    "rejected": "#7d3c98",
    "dropped": "#c0392b",
    "other": "#7f8c8d",
}
MARKS = {"completed": "\u2714", "broken": "\u26a0", "rejected": "\u2298", "dropped": "\u2716"}
ORDER = ("completed", "broken", "rejected", "dropped", "other")

NODE_W, GAP, MARGIN = 210, 36, 16
POD_W, LINE = 190, 14
SRC_Y, SRC_H, EDGE_Y, EDGE_H = 14, 46, 104, 40


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def clip(text: str, width: float, size: float = 12) -> str:
    """Shorten to about `width` pixels at `size` (an average glyph is 0.6 em)."""
    most = max(4, int(width / (size * 0.6)))
    return text if len(text) <= most else text[: most - 1] + "\u2026"


def _text(x: float, y: float, text: str, cls: str = "", width: float = 400, **attrs) -> str:
    fill = attrs.pop("fill", None)  # as a style: the page's CSS would beat an attribute
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    extra += f' style="fill:{esc(fill)}"' if fill else ""
    shown = clip(text, width, 13 if "big" in cls else 11.5)
    title = f"<title>{esc(text)}</title>" if shown != text else ""
    return f'<text x="{x:.0f}" y="{y:.0f}" class="{cls}"{extra}>{title}{esc(shown)}</text>'


@dataclass
class _Pod:
    name: str
    ip: str = ""
    count: int = 0
    ends: Counter = field(default_factory=Counter)
    seen: Counter = field(default_factory=Counter)
    deleted: bool = False  # a step before this probe deleted it
    x: float = 0
    y: float = 0
    h: float = 0


@dataclass
class _Node:
    name: str
    ip: str = ""
    pods: list[_Pod] = field(default_factory=list)
    x: float = 0
    y: float = 0
    h: float = 0


def _nodes(topology: dict, flows: list[dict]) -> list[_Node]:
    """Nodes and pods of the topology, plus any pod a flow reached that it did not list."""
    nodes = [
        _Node(
            n["name"],
            n.get("ip", ""),
            [_Pod(p["name"], p.get("ip", ""), deleted=bool(p.get("deleted"))) for p in n["pods"]],
        )
        for n in topology.get("nodes", [])
    ]
    by_name = {n.name: n for n in nodes}
    for f in flows:
        for key in ("edgeNode", "entryNode", "servingNode"):
            if f.get(key) and f[key] not in by_name:
                by_name[f[key]] = _Node(f[key])
                nodes.append(by_name[f[key]])
        pod, home = f.get("pod"), f.get("servingNode")
        if pod and home and all(p.name != pod for n in nodes for p in n.pods):
            ip = (f.get("dnat") or "").rpartition(":")[0]
            by_name[home].pods.append(_Pod(pod, ip))
    return nodes


def _place(nodes: list[_Node], top: float) -> float:
    """Give every node and pod its box; returns the picture's width."""
    width = max(2 * MARGIN + len(nodes) * NODE_W + (len(nodes) - 1) * GAP, 860)
    left = (width - (len(nodes) * NODE_W + (len(nodes) - 1) * GAP)) / 2
    for i, node in enumerate(nodes):
        node.x, node.y = left + i * (NODE_W + GAP), top
        y = top + 66
        for pod in node.pods:
            pod.x, pod.y = node.x + (NODE_W - POD_W) / 2, y
            pod.h = 34 + LINE * max(len(pod.seen), 0)
            y += pod.h + 10
        node.h = max(y - top, 100)
    return width


def _defs(uid: str) -> str:
    out = []
    for end, colour in COLOURS.items():
        out.append(
            f'<marker id="{uid}-{end}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="11" '
            f'markerHeight="11" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" '
            f'fill="{colour}"/></marker>'
        )
    return "<defs>" + "".join(out) + "</defs>"


def _arrow(
    uid: str, d: str, end: str, width: float = 2, dashed: bool = False, cls: str = ""
) -> str:
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return (
        f'<path class="{cls}" d="{d}" fill="none" stroke="{COLOURS[end]}" '
        f'stroke-width="{width:.1f}"{dash} marker-end="url(#{uid}-{end})"/>'
    )


def curve(x0: float, y0: float, c1: tuple, c2: tuple, x1: float, y1: float) -> str:
    """An SVG cubic path from (x0, y0) to (x1, y1) with two control points."""
    return f"M{x0:.0f},{y0:.0f} C{c1[0]:.0f},{c1[1]:.0f} {c2[0]:.0f},{c2[1]:.0f} {x1:.0f},{y1:.0f}"


def _main_end(ends: Counter) -> str:
    return max(ORDER, key=lambda e: (ends.get(e, 0), -ORDER.index(e)))


def _source_words(route: dict, topology: dict) -> tuple[str, str]:
    kind = route.get("sourceKind", "client")
    name, addr = route.get("source", "?"), route.get("sourceAddress", "")
    if kind == "pod":
        home = next(
            (n["name"] for n in topology.get("nodes", []) for p in n["pods"] if p["name"] == name),
            None,
        )
        return f"pod {name}" + (f" (on {home})" if home else ""), addr
    return f"{kind} {name}", addr


def _box(cls: str, cx: float, y: float, w: float, h: float, lines: list[tuple[str, str]]) -> str:
    out = [
        f'<rect class="{cls}" x="{cx - w / 2:.0f}" y="{y}" width="{w:.0f}" height="{h}" rx="8"/>'
    ]
    for i, (text, style) in enumerate(lines):
        out.append(_text(cx, y + 18 + 15 * i, text, style, w - 10, text_anchor="middle"))
    return "".join(out)


def _header(width: float, route: dict | None, topology: dict, edge: bool) -> list[str]:
    """The source box (or, for the lab, every client) and the edge box above the nodes."""
    out = []
    cx = width / 2
    if route:
        who, addr = _source_words(route, topology)
        via, svc = route.get("via", ""), route.get("service", "")
        aim = f"to {route.get('target', '?')}, {via}{' of ' + svc if svc else ''}"
        out.append(
            _box("source", cx, SRC_Y, 420, SRC_H, [(f"{who}  {addr}", "big"), (aim, "small")])
        )
    else:
        clients = topology.get("clients", [])
        for i, c in enumerate(clients):
            x = cx + (i - (len(clients) - 1) / 2) * 240
            out.append(
                _box(
                    "source",
                    x,
                    SRC_Y,
                    220,
                    SRC_H,
                    [(f"client {c['name']}", "big"), (c.get("ip", ""), "small")],
                )
            )
            if edge:
                out.append(
                    f'<line x1="{x:.0f}" y1="{SRC_Y + SRC_H}" x2="{cx:.0f}" y2="{EDGE_Y}" '
                    f'class="wire"/>'
                )
    if edge:
        e = topology.get("edge", {})
        words = f"{e.get('externalIP', '')} | {e.get('mode', 'ecmp')}"
        if route is None:  # the start; steps may turn checks on or off
            words += ", health checks " + ("on" if e.get("healthChecks", True) else "off")
        out.append(
            _box(
                "edge",
                cx,
                EDGE_Y,
                380,
                EDGE_H,
                [("edge router / load balancer", "big"), (words, "small")],
            )
        )
        if route:
            out.append(
                f'<line x1="{cx}" y1="{SRC_Y + SRC_H}" x2="{cx}" y2="{EDGE_Y}" class="wire"/>'
            )
    return out


def _endpoints(topology: dict, route: dict | None) -> set[str] | None:
    """The pods behind the probe's service; None when unknown (pods then look alike)."""
    if not route or not route.get("service"):
        return None
    key = route["service"] if "/" in route["service"] else f"default/{route['service']}"
    svc = next((s for s in topology.get("services", []) if s["name"] == key), None)
    return set(svc["endpoints"]) if svc and "endpoints" in svc else None


def _node_boxes(
    nodes: list[_Node], highlight: set[str], endpoints: set[str] | None, source: str = ""
) -> list[str]:
    out = []
    for n in nodes:
        cls = "node" + (" dim" if highlight and n.name not in highlight else "")
        out.append(
            f'<rect class="{cls}" x="{n.x:.0f}" y="{n.y:.0f}" width="{NODE_W}" height="{n.h:.0f}" '
            f'rx="10"/>'
        )
        out.append(_text(n.x + 10, n.y + 18, f"{n.name}  {n.ip}", "big", NODE_W - 16))
        if not n.pods:
            out.append(
                _text(n.x + NODE_W / 2, n.y + 86, "no pods", "muted", NODE_W, text_anchor="middle")
            )
        for p in n.pods:
            if p.name == source:  # the probe starts here
                out.append(
                    f'<rect class="source" x="{p.x:.0f}" y="{p.y:.0f}" width="{POD_W}" '
                    f'height="{p.h:.0f}" rx="6"/>'
                )
                out.append(_text(p.x + 8, p.y + 15, f"{p.name}  {p.ip}", "bold", POD_W - 12))
                out.append(_text(p.x + 8, p.y + 29, "the source of this probe", "small", POD_W))
                continue
            other = (endpoints is not None and p.name not in endpoints or p.deleted) and not p.count
            colour = COLOURS[_main_end(p.ends)] if p.count else "#aab7b8"
            dash = ' stroke-dasharray="4 3"' if other else ""
            out.append(
                f'<rect class="pod" x="{p.x:.0f}" y="{p.y:.0f}" width="{POD_W}" height="{p.h:.0f}" '
                f'rx="6" stroke="{colour}"{dash}/>'
            )
            out.append(
                _text(
                    p.x + 8, p.y + 15, f"{p.name}  {p.ip}", "muted" if other else "bold", POD_W - 12
                )
            )
            if other:
                why = "deleted by a step" if p.deleted else "not behind this service"
                out.append(_text(p.x + 8, p.y + 29, why, "muted", POD_W - 12))
            elif p.count:
                ends = ", ".join(f"{k} {e}" for e, k in sorted(p.ends.items()))
                words = ends if len(p.ends) == 1 else f"{p.count}: {ends}"
                out.append(_text(p.x + 8, p.y + 29, words, "small", POD_W - 12))
            elif endpoints is not None:
                out.append(_text(p.x + 8, p.y + 29, "endpoint, got nothing", "small", POD_W - 12))
            for i, (ip, k) in enumerate(p.seen.most_common()):
                out.append(
                    _text(p.x + 8, p.y + 29 + LINE * (i + 1), f"saw {ip} x{k}", "seen", POD_W - 12)
                )
    return out


def _wrap(text: str, most: int, lines: int) -> list[str]:
    out: list[str] = []
    for word in text.split():
        if out and len(out[-1]) + 1 + len(word) <= most:
            out[-1] += " " + word
        else:
            out.append(word)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = clip(out[-1] + " \u2026", most * 7)
    return out


def _causes(oracle: list[dict]) -> dict[str, str]:
    """Per node, the oracle's cause of a drop or rejection there: the clause after the address."""
    out = {}
    for f in oracle:
        if f.get("end") in ("dropped", "rejected") and f.get("entryNode") and f.get("why"):
            out.setdefault(f["entryNode"], f["why"].rpartition(": ")[2])
    return out


def draw(
    topology: dict,
    route: dict | None = None,
    flows: list[dict] | None = None,
    uid: str = "t",
    title: str = "",
    oracle: list[dict] | None = None,
) -> str:
    """One SVG: the lab, and, given a probe's route and flows, every way its attempts went."""
    flows = flows or []
    nodes = _nodes(topology, flows)
    by_name = {n.name: n for n in nodes}
    pods = {p.name: p for n in nodes for p in n.pods}
    for f in flows:
        if f.get("pod") in pods:
            pod = pods[f["pod"]]
            pod.count += f["count"]
            pod.ends[f["end"]] += f["count"]
            if f.get("sourceIP"):
                pod.seen[f["sourceIP"]] += f["count"]
    source_kind = (route or {}).get("sourceKind", "client")
    edge = route is None or source_kind == "client" or any(f.get("edgeNode") for f in flows)
    top = (EDGE_Y + EDGE_H + 70) if edge else (SRC_Y + SRC_H + 70)
    width = _place(nodes, top)
    entered = {f.get("entryNode") or f.get("edgeNode") for f in flows} - {None}
    body = _header(width, route, topology, edge)
    source = (route or {}).get("source", "") if source_kind == "pod" else ""
    body += _node_boxes(nodes, entered, _endpoints(topology, route), source)
    below = [0]
    body += _flows(uid, width, edge, flows, by_name, pods, _causes(oracle or []), below)
    height = (max(n.y + n.h for n in nodes) if nodes else top) + 16 + below[0]
    cls = "path" if route is not None else "topology"
    label = f' data-probe="{esc(title)}"' if route is not None else ""
    return (
        f'<svg class="{cls}"{label} xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} '
        f'{height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img">'
        f"<title>{esc(title or 'the lab')}</title>{_defs(uid)}{''.join(body)}</svg>"
    )


def _snat_words(addresses: set[str]) -> str:
    """`SNAT to 172.18.0.12`, `no SNAT`, or both kinds: `SNAT to 10.244.1.1 or none`."""
    named = sorted(a for a in addresses if a)
    if not named:
        return "no SNAT"
    return "SNAT to " + " or ".join(named) + (" or none" if "" in addresses else "")


def _flows(
    uid: str,
    width: float,
    edge: bool,
    flows: list[dict],
    by_name: dict[str, _Node],
    pods: dict[str, _Pod],
    causes: dict[str, str],
    below: list[float],
) -> list[str]:
    """Arrows into nodes, what each node did, arrows on to pods, and the replies."""
    if not flows:
        return []
    out: list[str] = []
    total = sum(f["count"] for f in flows) or 1
    cx = width / 2
    start_y = EDGE_Y + EDGE_H if edge else SRC_Y + SRC_H
    into: dict[str, Counter] = defaultdict(Counter)
    snat: dict[str, set] = defaultdict(set)
    for f in flows:
        node = f.get("entryNode") or f.get("edgeNode")
        if node:
            into[node][f["end"]] += f["count"]
            if f.get("pod"):
                snat[node].add(f.get("snat") or "")
    nodes_in = sorted((by_name[n] for n in into if n in by_name), key=lambda n: n.x)
    for i, node in enumerate(nodes_in):
        ends = into[node.name]
        n = sum(ends.values())
        sx = cx + (i - (len(nodes_in) - 1) / 2) * 22
        nx, ny = node.x + NODE_W / 2, node.y
        main = _main_end(ends)
        d = curve(sx, start_y, (sx, start_y + 40), (nx, ny - 40), nx, ny - 2)
        out.append(_arrow(uid, d, main, 1.5 + 9 * n / total, cls=f"flow end-{main}"))
        if ends.get("completed"):  # the replies, back the way they came
            d = curve(
                nx + 16, ny - 2, (nx + 16, ny - 46), (sx + 9, start_y + 46), sx + 9, start_y + 2
            )
            out.append(_arrow(uid, d, "completed", 1.3, dashed=True, cls="reply correct"))
        out.append(
            _text(nx - 8, ny - 10, f"{n} ({100 * n / total:.3g}%)", "count", 120, text_anchor="end")
        )
        if snat[node.name]:
            out.append(_text(node.x + 10, node.y + 34, "DNAT to a pod", "nat", NODE_W - 16))
            out.append(
                _text(
                    node.x + 10,
                    node.y + 48,
                    _snat_words(snat[node.name]),
                    "nat",
                    NODE_W - 16,
                )
            )
        y = node.y + node.h + 18
        for end in (e for e in ORDER if ends.get(e)):
            here = " here" if end in ("dropped", "rejected") else ""
            line = f"{MARKS.get(end, '')} {ends[end]} {end}{here} ({100 * ends[end] / n:.3g}%)"
            out.append(_text(node.x + 8, y, line, f"end end-{end}", NODE_W, fill=COLOURS[end]))
            y += 16
        if (ends.get("dropped") or ends.get("rejected")) and node.name in causes:
            for line in _wrap(causes[node.name], 29, 3):
                out.append(_text(node.x + 8, y, line, "cause", NODE_W))
                y += 14
        if ends.get("dropped") or ends.get("rejected"):
            bad = "dropped" if ends.get("dropped") else "rejected"
            out.append(
                f'<text x="{nx + 10:.0f}" y="{ny - 8:.0f}" class="cross" '
                f'style="fill:{COLOURS[bad]}">{MARKS[bad]}</text>'
            )
        below[0] = max(below[0], y - node.y - node.h)
    out += _to_pods(uid, flows, by_name, pods)
    out += _replies(uid, width, flows, by_name, pods, start_y)
    return out


def _to_pods(
    uid: str, flows: list[dict], by_name: dict[str, _Node], pods: dict[str, _Pod]
) -> list[str]:
    pairs: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for f in flows:
        node, pod = f.get("entryNode"), f.get("pod")
        if node in by_name and pod in pods:
            pairs[(node, pod)][f["end"]] += f["count"]
    out = []
    for (node_name, pod_name), ends in pairs.items():
        node, pod = by_name[node_name], pods[pod_name]
        main = _main_end(ends)
        ym = pod.y + min(pod.h / 2, 16)
        if pod in node.pods:  # its own pod: down the node's right margin, in from the side
            xr = node.x + NODE_W - 5
            d = curve(xr, node.y + 52, (xr, ym - 6), (xr, ym), xr - 4, ym)
        else:  # another node's pod: out of the node's side, into the side of the pod's box
            left = pod.x < node.x
            x0 = node.x if left else node.x + NODE_W
            x1 = pod.x + (POD_W + 1 if left else -1)
            bend = -40 if left else 40
            d = curve(x0, node.y + 40, (x0 + bend, node.y + 40), (x1 - bend, ym), x1, ym)
        out.append(_arrow(uid, d, main, 1.8, cls=f"hop end-{main}"))
    return out


def _replies(
    uid: str,
    width: float,
    flows: list[dict],
    by_name: dict[str, _Node],
    pods: dict[str, _Pod],
    top_y: float,
) -> list[str]:
    """Dashed arrows back: a broken reply from the pod itself; a rejection from the node."""
    out = []
    seen: set[tuple[str, str]] = set()
    cx = width / 2
    for f in flows:
        pod = pods.get(f.get("pod") or "")
        if f.get("returnPath") == "broken" and pod is not None:
            if ("broken", pod.name) in seen:
                continue
            seen.add(("broken", pod.name))
            x0, y0 = pod.x + POD_W, pod.y + pod.h / 2
            x1, y1 = cx + 190, SRC_Y + SRC_H / 2
            d = curve(x0, y0, (x0 + 90, y0), (x1 + 60, y1), x1, y1)
            out.append(_arrow(uid, d, "broken", 2.2, dashed=True, cls="reply broken"))
            frm = f.get("replyFrom", "?")
            words = "the source resets it" if f.get("clientReset") else "no answer"
            room = width - (cx + 200)
            for i, line in enumerate(
                (f"reply from {frm},", "not from the address aimed at:", words)
            ):
                out.append(
                    _text(cx + 200, SRC_Y + 12 + 14 * i, line, "warn", room, fill=COLOURS["broken"])
                )
        elif f.get("end") == "rejected" and f.get("entryNode") in by_name:
            node = by_name[f["entryNode"]]
            if ("rejected", node.name) in seen:
                continue
            seen.add(("rejected", node.name))
            x0 = node.x + NODE_W / 2 + 16
            d = f"M{x0:.0f},{node.y - 2:.0f} L{cx + 12:.0f},{top_y + 4:.0f}"
            out.append(_arrow(uid, d, "rejected", 1.5, dashed=True, cls="reply rejected"))
    return out

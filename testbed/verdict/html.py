"""The HTML report: one self-contained page drawn from the JSON report alone.

`render(report)` takes the dict `testbed run --json` writes and returns a page with
inline CSS and SVG only (no script, no font, no link to fetch), so it opens anywhere
without a network. It uses the table's words (verdict/report.py) for counts,
expectations and verdicts, and escapes every string that came from a scenario.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from testbed.verdict import pathsvg
from testbed.verdict.report import FAIL, PASS, completed_words, expected_words, sources_words

CSS = """
body{font-family:'DejaVu Sans',Verdana,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:16px 24px;color:#1c2833;background:#fdfefe;font-size:14px}
h1{font-size:22px;margin:4px 0}h2{font-size:19px;margin:28px 0 4px;padding-top:10px;
border-top:3px solid #34495e}h3{font-size:16px;margin:18px 0 6px}h4{font-size:15px;margin:4px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;color:#fff;font-size:13px;
font-weight:bold;vertical-align:middle}.pass{background:#1e8449}.fail{background:#c0392b}
.meta,.muted{color:#566573;font-size:13px}.warn{color:#b9770e}.error{color:#c0392b;font-weight:bold}
ol.steps{list-style:none;padding:0;margin:0}ol.steps>li{margin:10px 0}
li.change{padding:6px 12px;background:#fef5e7;border-left:5px solid #f39c12;font-weight:bold}
article.probe{border:1px solid #d5d8dc;border-radius:8px;padding:10px 14px;background:#fff}
article.probe.failed{border:2px solid #c0392b}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}
dt{font-weight:bold;color:#34495e}dd{margin:0}
table{border-collapse:collapse;margin:6px 0;font-size:12.5px}
th,td{border:1px solid #d5d8dc;padding:2px 7px;text-align:left;vertical-align:top}
th{background:#eaecee}td.num{text-align:right}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;
height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
ul.lines{margin:4px 0;padding-left:18px;font-size:13px}ul.reasons{color:#c0392b}
svg{display:block;max-width:100%;height:auto;margin:6px 0}
svg text{font-family:'DejaVu Sans',Verdana,Arial,sans-serif;font-size:11.5px;fill:#1c2833}
svg text.big{font-size:13px;font-weight:bold}svg text.bold{font-weight:bold}
svg text.small{font-size:11px;fill:#566573}svg text.muted{fill:#95a5a6;font-style:italic}
svg text.seen{fill:#1f618d}svg text.nat{fill:#1f618d;font-size:11px}
svg text.count{font-weight:bold;fill:#34495e}svg text.cause{fill:#922b21;font-size:11px}
svg text.warn{font-weight:bold;font-size:11.5px}svg text.end{font-weight:bold}
svg text.cross{font-size:22px;font-weight:bold}
svg rect.source{fill:#d6eaf8;stroke:#2471a3;stroke-width:1.5}
svg rect.edge{fill:#fdebd0;stroke:#ca6f1e;stroke-width:1.5}
svg rect.node{fill:#f4f6f6;stroke:#566573;stroke-width:1.5}
svg rect.node.dim{fill:#fbfcfc;stroke:#aab7b8}
svg rect.pod{fill:#fff;stroke-width:2}svg line.wire{stroke:#2471a3;stroke-width:2}
svg rect.bar-completed{fill:#1e8449}svg rect.bar-dropped{fill:#c0392b}
svg rect.bar-other{fill:#d35400}
div.trace{margin:8px 0;padding:6px 10px;background:#f8f9f9;border-left:4px solid #2471a3}
div.tnode{margin:4px 0}ol.chain{list-style:none;padding:0;margin:3px 0 3px 14px;display:flex;
flex-wrap:wrap;gap:4px 0;font-family:'DejaVu Sans Mono',monospace;font-size:11.5px}
ol.chain li{border:1px solid #aab7b8;border-radius:4px;padding:1px 5px;background:#fff}
ol.chain li+li::before{content:"→";margin:0 4px 0 -1px;color:#566573}
ol.chain li+li{border:none;padding-left:0;background:none}
ol.chain li.hook{background:#eaecee;font-weight:bold}
.good{color:#1e8449;font-weight:bold}.bad{color:#c0392b;font-weight:bold}
ol.chain li.end.good,ol.chain li.end.bad{font-weight:bold}
svg line.mark{stroke:#34495e;stroke-dasharray:4 3}
svg polyline.rate{fill:none;stroke:#17202a;stroke-width:1.5}
"""


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def _badge(passed: bool) -> str:
    return f'<span class="badge {"pass" if passed else "fail"}">{PASS if passed else FAIL}</span>'


def _summary(report: Mapping) -> str:
    s = report.get("summary", {})
    line = (
        f"{s.get('scenarios', 0)} scenarios, {s.get('probes', 0)} probes: "
        f"{s.get('passed', 0)} passed, {s.get('failed', 0)} failed"
    )
    if s.get("errors"):
        line += f", {s['errors']} could not run"
    if "alpha" in s:
        line += f" (statistical checks at alpha {s['alpha']:g} each)"
    return line


def _legend() -> str:
    items = [
        f'<span><i class="sw" style="background:{c}"></i>{e}</span>'
        for e, c in pathsvg.COLOURS.items()
        if e != "other"
    ]
    words = (
        "<span>arrow width: share of attempts; dashed: a reply that did not come back "
        "through the node it went in by</span>"
    )
    return '<p class="legend">' + "".join(items) + words + "</p>"


def _services(topology: Mapping) -> str:
    rows = []
    for svc in topology.get("services", []):
        ports = ", ".join(
            f"{p['port']}/{p['protocol']}"
            + (f" nodePort {p['nodePort']}" if p.get("nodePort") else "")
            for p in svc.get("ports", [])
        )
        lb = ", ".join(svc.get("loadBalancerIPs", []) + svc.get("externalIPs", []))
        hc = svc.get("healthCheckNodePort")
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{esc(x)}</td>"
                for x in (
                    svc["name"],
                    svc.get("type", ""),
                    svc.get("clusterIP") or "None",
                    lb or "-",
                    ports,
                    svc.get("externalTrafficPolicy", ""),
                    svc.get("internalTrafficPolicy", ""),
                    hc or "-",
                )
            )
            + "</tr>"
        )
    if not rows:
        return ""
    head = (
        "<tr><th>service</th><th>type</th><th>clusterIP</th><th>LB / external IPs</th>"
        "<th>ports</th><th>externalTrafficPolicy</th><th>internalTrafficPolicy</th>"
        "<th>healthCheckNodePort</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _flow_table(flows: list[Mapping]) -> str:
    if not flows:
        return ""
    head = (
        "<tr><th>attempts</th><th>share</th><th>ended</th><th>edge to</th><th>entered</th>"
        "<th>DNAT to</th><th>SNAT to</th><th>pod</th><th>on</th><th>pod saw</th>"
        "<th>reply from</th></tr>"
    )
    rows = []
    for f in flows:
        end = f.get("end", "?")
        cells = [
            f'<td class="num">{f.get("count", 0)}</td>',
            f'<td class="num">{100 * f.get("share", 0):.3g}%</td>',
            f'<td style="color:{pathsvg.COLOURS.get(end, "#000")}"><b>{esc(end)}</b></td>',
        ]
        for key in ("edgeNode", "entryNode", "dnat", "snat", "pod", "servingNode", "sourceIP"):
            cells.append(f"<td>{esc(f.get(key, '-'))}</td>")
        reply = f.get("replyFrom", "-")
        if f.get("returnPath") == "broken":
            reply += " (broken" + (", reset by the source)" if f.get("clientReset") else ")")
        cells.append(f"<td>{esc(reply)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='flows'>{head}{''.join(rows)}</table>"


def _oracle_table(flows: list[Mapping]) -> str:
    if not flows:
        return ""
    rows = []
    for f in flows:
        end = f.get("end", "?")
        where = f.get("entryNode", "-")
        pod = f.get("pod", "-") + (f" on {f['servingNode']}" if f.get("servingNode") else "")
        rows.append(
            f'<tr><td class="num">{100 * f.get("share", 0):.3g}%</td>'
            f'<td style="color:{pathsvg.COLOURS.get(end, "#000")}"><b>{esc(end)}</b></td>'
            f"<td>{esc(where)}</td><td>{esc(pod)}</td><td>{esc(f.get('sourceIP', '-'))}</td>"
            f"<td>{esc(f.get('why', ''))}</td></tr>"
        )
    head = (
        "<tr><th>share</th><th>ends</th><th>at node</th><th>pod</th><th>pod sees</th>"
        "<th>cause (kube-proxy semantics)</th></tr>"
    )
    return f"<table class='oracle'>{head}{''.join(rows)}</table>"


def _timeline(conv: Mapping) -> str:
    """Batches sent while the edge converged: completed and dropped per batch, in time."""
    rows = conv.get("timeline") or []
    if not rows:
        return ""
    w, h, left, base = 640, 180, 44, 150
    span = max(r[0] for r in rows) or 1.0
    most = max(r[1] for r in rows) or 1
    step = (w - left - 30) / max(len(rows), 1)
    out = [
        '<text x="4" y="14" class="small">per batch of attempts: completed, dropped, other</text>'
    ]
    for r in rows:
        t, sent, dropped, done = r[0], r[1], r[2], r[3]
        x = left + (w - left - 40) * t / span
        y = base
        for n, cls in ((done, "completed"), (dropped, "dropped"), (sent - done - dropped, "other")):
            if n > 0:
                bh = (base - 56) * n / most
                y -= bh
                bw = max(step * 0.6, 4)
                out.append(
                    f'<rect class="bar-{cls}" x="{x:.0f}" y="{y:.1f}" width="{bw:.0f}" '
                    f'height="{bh:.1f}"><title>{t:.2f} s: {n} {cls} of {sent}</title></rect>'
                )
        out.append(f'<text x="{x:.0f}" y="{base + 14}" class="small">{t:.2f}</text>')
    for key, words in (("poolChangedSeconds", "pool changed"), ("settledSeconds", "settled")):
        if conv.get(key) is not None:
            x = left + (w - left - 40) * conv[key] / span - 2
            y = 30 if key == "poolChangedSeconds" else 44
            out.append(f'<line class="mark" x1="{x:.0f}" y1="{y - 10}" x2="{x:.0f}" y2="{base}"/>')
            out.append(
                f'<text x="{x + 3:.0f}" y="{y}" class="small">{words} {conv[key]:.2f} s</text>'
            )
    since = esc(conv.get("after", "the change"))
    out.append(f'<text x="{left}" y="{base + 28}" class="small">seconds since {since}</text>')
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}">{"".join(out)}</svg>'
    )


def _load(info: Mapping, expected: Mapping) -> str:
    """A steady load: attempts per window by how they ended, steps as dashed lines."""
    rows = info.get("windows") or []
    if not rows:
        return ""
    w, h, left, base = 640, 200, 44, 160
    width = float(info.get("windowSeconds", 1)) or 1.0
    span = (max(r[0] for r in rows) + width) or 1.0
    most = max(r[1] for r in rows) or 1
    scale = (w - left - 20) / span
    out = [
        '<text x="4" y="14" class="small">attempts per window: completed, broken, rejected, '
        f"dropped; the line: success rate (expected at least {expected.get('successRate', 1):g})"
        "</text>"
    ]
    for r in rows:
        x, y = left + r[0] * scale, base
        for n, cls in zip(r[2:6], ("completed", "other", "other", "dropped"), strict=True):
            if n > 0:
                bh = (base - 70) * n / most
                y -= bh
                out.append(
                    f'<rect class="bar-{cls}" x="{x:.1f}" y="{y:.1f}" '
                    f'width="{max(scale * width * 0.9, 1):.1f}" height="{bh:.1f}">'
                    f"<title>{r[0]:g} s: {n} of {r[1]}</title></rect>"
                )
    points = [
        f"{left + (r[0] + width / 2) * scale:.1f},{base - (base - 70) * r[2] / r[1]:.1f}"
        for r in rows
        if r[1]
    ]
    out.append(f'<polyline class="rate" points="{" ".join(points)}"/>')
    for k, step in enumerate(info.get("steps", [])):
        x = left + step["start"] * scale
        y = 30 + 12 * (k % 3)
        out.append(f'<line class="mark" x1="{x:.1f}" y1="{y - 8}" x2="{x:.1f}" y2="{base}"/>')
        out.append(f'<text x="{x + 3:.1f}" y="{y}" class="small">{esc(step["name"])}</text>')
    out.append(
        f'<text x="{left}" y="{base + 16}" class="small">0 s</text>'
        f'<text x="{w - 60}" y="{base + 16}" class="small">{span:.1f} s</text>'
        f'<text x="{left + 60}" y="{base + 30}" class="small">seconds since the load began</text>'
    )
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}">{"".join(out)}</svg>'
    )


def _trace_end(verdict: str) -> str:
    if verdict.startswith(("dropped", "rejected", "DROP", "REJECT")):
        return "bad"
    return "good" if verdict.startswith(("DNAT", "SNAT", "MASQ")) else "plain"


def _trace(trace: Mapping) -> str:
    """The kernel's own trace of one marked packet: per node, per hook, the chains in order."""
    if trace.get("error"):
        return f'<p class="warn">kernel trace: not available: {esc(trace["error"])}</p>'
    head = (
        f"The kernel's own trace of one marked {esc(trace.get('protocol', ''))} packet from "
        f"port {esc(trace.get('sourcePort', '?'))} to {esc(trace.get('target', '?'))} "
        f"({esc(trace.get('proxyMode', ''))} mode; the source: {esc(trace.get('answer', '?'))})"
    )
    rows = []
    for node, got in trace.get("nodes", {}).items():
        if got.get("verdict") == "not seen":
            continue
        verdict = str(got.get("verdict", ""))
        hooks = []
        for hook in got.get("hooks", []):
            path = str(hook.get("path", ""))
            _, _, rest = path.partition(": ")
            chain, _, end = rest.partition(": ")
            boxes = [f'<li class="hook">{esc(hook.get("hook", ""))}</li>']
            boxes += [f"<li>{esc(c)}</li>" for c in chain.split(" -> ") if c and c != "(no jump)"]
            if end:
                boxes.append(f'<li class="end {_trace_end(end)}">{esc(end)}</li>')
            hooks.append(f'<ol class="chain">{"".join(boxes)}</ol>')
        rows.append(
            f'<div class="tnode"><b>{esc(node)}</b>: '
            f'<span class="{_trace_end(verdict)}">{esc(verdict)}</span>{"".join(hooks)}</div>'
        )
    unseen = [n for n, got in trace.get("nodes", {}).items() if got.get("verdict") == "not seen"]
    tail = f'<p class="muted">not seen by {esc(", ".join(unseen))}</p>' if unseen else ""
    return f'<div class="trace"><p><b>{head}</b></p>{"".join(rows)}{tail}</div>'


def _probe(probe: Mapping, topology: Mapping, uid: str, number: int) -> str:
    obs, exp, ora = probe.get("observed", {}), probe.get("expected", {}), probe.get("oracle", {})
    passed = bool(probe.get("passed"))
    name = probe.get("name", "?")
    kind = "load" if probe.get("load") else "probe"
    pods = ", ".join(f"{k} x{v}" for k, v in obs.get("pods", {}).items()) or "-"
    parts = [
        f'<article class="probe{"" if passed else " failed"}" id="{uid}">',
        f"<h4>{number}. {kind} {esc(name)} {_badge(passed)}</h4>",
        "<dl>",
        f"<dt>completed</dt><dd>{esc(completed_words(obs))}</dd>",
        f"<dt>pod(s)</dt><dd>{esc(pods)}</dd>",
        f"<dt>source IP seen</dt><dd>{esc(sources_words(obs))}</dd>",
        f"<dt>expected</dt><dd>{esc(expected_words(exp))}</dd>",
        f"<dt>oracle predicts</dt><dd>{esc(expected_words(ora))}</dd>",
        f"<dt>verdict</dt><dd>{PASS if passed else FAIL}</dd>",
        "</dl>",
    ]
    if probe.get("reasons"):
        items = "".join(f"<li>{esc(r)}</li>" for r in probe["reasons"])
        parts.append(f'<ul class="lines reasons">{items}</ul>')
    if probe.get("load"):  # a load: its timeline, not one path (it has no flows)
        lines = "".join(f"<li>{esc(x)}</li>" for x in probe.get("lines", []))
        parts.append(f'<ul class="lines">{lines}</ul>{_load(probe["load"], exp)}</article>')
        return "".join(parts)
    route = probe.get("route") or {"source": "?", "target": "?"}
    parts.append(
        pathsvg.draw(
            topology, route, list(probe.get("flows", [])), uid, str(name), probe.get("oracleFlows")
        )
    )
    if probe.get("trace"):
        parts.append(_trace(probe["trace"]))
    if probe.get("lines"):
        parts.append(
            '<ul class="lines">' + "".join(f"<li>{esc(x)}</li>" for x in probe["lines"]) + "</ul>"
        )
    if probe.get("convergence"):
        parts.append(_timeline(probe["convergence"]))
    parts.append("<details open><summary>every way the attempts went, hop by hop</summary>")
    parts.append(_flow_table(probe.get("flows", [])))
    parts.append("</details><details><summary>the oracle's prediction and its causes</summary>")
    parts.append(_oracle_table(probe.get("oracleFlows", [])) + "</details></article>")
    return "".join(parts)


def _without(topology: Mapping, pod: str) -> dict:
    """The topology with `pod` flagged deleted (a step deleted it)."""
    nodes = [
        {**n, "pods": [{**p, "deleted": True} if p["name"] == pod else p for p in n["pods"]]}
        for n in topology.get("nodes", [])
    ]
    return {**topology, "nodes": nodes}


def _scenario(item: Mapping, index: int) -> str:
    topology = item.get("topology") or {}
    probes = list(item.get("probes", []))
    name = item.get("name", "?")
    parts = [
        f'<section class="scenario" id="scenario-{index}">',
        f"<h2>{esc(name)} {_badge(bool(item.get('passed')))}</h2>",
    ]
    if item.get("description"):
        parts.append(f"<p>{esc(item['description'])}</p>")
    meta = f"{item.get('proxyMode', '?')} mode, {item.get('seconds', 0)} s, {item.get('file', '')}"
    parts.append(f'<p class="meta">{esc(meta)}</p>')
    if item.get("error"):
        parts.append(f'<p class="error">error: {esc(item["error"])}</p>')
    for warning in item.get("warnings", []):
        parts.append(f'<p class="warn">warning: {esc(warning)}</p>')
    if topology:
        parts.append("<h3>The lab</h3>")
        parts.append(pathsvg.draw(topology, uid=f"s{index}-lab", title=f"the lab of {name}"))
        parts.append(_services(topology))
    if probes:
        parts.append("<h3>Probes and steps, in order</h3><ol class='steps'>")
        steps = topology.get("steps", [])
        step_probes = {s["name"] for s in steps if s.get("probe")}
        by_name = {p.get("name"): p for p in probes}
        order: list = [p for p in probes if p.get("name") not in step_probes]
        for step in steps:
            if step.get("probe") and step["name"] in by_name:
                order.append(by_name[step["name"]])
            elif not step.get("probe"):
                order.append(step)
        number = 0
        now = topology  # the lab as the steps so far left it (deleted pods flagged)
        for thing in order:
            if "observed" in thing:
                number += 1
                uid = f"s{index}-p{number}"
                parts.append(f"<li>{_probe(thing, now, uid, number)}</li>")
            else:
                if thing.get("action") == "deletePod" and thing.get("pod"):
                    now = _without(now, str(thing["pod"]))
                parts.append(
                    f'<li class="change">step {esc(thing["name"])}: {esc(thing["words"])}</li>'
                )
        parts.append("</ol>")
    parts.append("</section>")
    return "".join(parts)


def render(report: Mapping) -> str:
    """The whole page for a report dict (as `testbed run --json` writes it)."""
    scenarios = list(report.get("scenarios", []))
    names = ", ".join(str(s.get("name", "?")) for s in scenarios) or "no scenarios"
    nav = "".join(
        f'<li><a href="#scenario-{i}">{esc(s.get("name", "?"))}</a> '
        f"{_badge(bool(s.get('passed')))}</li>"
        for i, s in enumerate(scenarios)
    )
    body = "".join(_scenario(s, i) for i, s in enumerate(scenarios))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>kubeproxy-testbed report: {esc(names)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>kubeproxy-testbed report</h1><p>{esc(_summary(report))}</p>{_legend()}"
        f"<ul>{nav}</ul></header>{body}</body></html>\n"
    )

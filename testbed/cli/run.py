"""`testbed run` and `testbed probe`: the commands that produce verdicts.

As in the rest of the CLI, each command imports what it needs when it runs, so
`testbed --help` and `testbed plan` start fast and work without root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import replace

from testbed.cli import exits, output
from testbed.cli.common import (
    PROG,
    CliError,
    add_lab_option,
    check_limits,
    check_upstream,
    find_lab,
    lab_of,
    load_both,
    print_warnings,
    require_root,
    resolve_scenario,
)
from testbed.core.errors import LabError, TestbedError
from testbed.core.library import library
from testbed.core.model import DEFAULT_PROBE_COUNT


def _progress(enabled: bool):
    if not enabled:
        return None

    def show(text: str) -> None:
        sys.stderr.write(f"\r\x1b[K  running {text}")
        sys.stderr.flush()

    return show


def cmd_run(args: argparse.Namespace) -> int:
    require_root()
    from testbed.live import runner
    from testbed.verdict import report
    from testbed.verdict.report import ScenarioResult

    paths = [str(resolve_scenario(s)) for s in args.scenarios] or [str(p) for p in library()]
    if not paths:
        raise CliError("no scenarios to run")
    loaded = {}
    refused: dict[str, ScenarioResult] = {}
    for path in paths:  # bad input is refused before any lab is built
        try:
            loaded[path] = load_both(path, args.proxy_mode, args.kube_proxy)
            check_limits(loaded[path][1])
            check_upstream(loaded[path][1])
        except TestbedError as exc:
            if len(paths) == 1:
                raise
            # with several scenarios a bad one is an error row; the others still run
            sys.stderr.write(exits.message(exc, "run"))
            loaded.pop(path, None)
            error = "; ".join(exc.lines())
            mode = args.proxy_mode or "iptables"
            refused[path] = ScenarioResult(os.path.basename(path), path, mode, 0.0, (), error)
    for path in loaded:
        print_warnings(loaded[path][0])
    if args.plots:
        from testbed.verdict import plots

        if not plots.available():
            raise CliError(plots.MISSING)
    outputs = _open_outputs(args)  # a path that cannot be written fails now, not after the run
    progress = _progress(sys.stderr.isatty() and not args.quiet)
    width, quiet_table = output.width(args), output.wants_json(args)
    results = []
    from testbed.kernel import signals

    try:
        with signals.handled():
            for path in paths:
                if path in refused:
                    results.append(refused[path])
                    if not quiet_table:
                        print(report.table([refused[path]], False, width) + "\n", flush=True)
                    continue
                result, observed = runner.run_path(
                    path, args.proxy_mode, args.pcap, progress, loaded[path]
                )
                result = replace(result, warnings=loaded[path][0].warnings)
                results.append(result)
                if args.plots:
                    _plot(args.plots, loaded[path][0], result, observed)
                if progress:
                    sys.stderr.write("\r\x1b[K")
                if not quiet_table:
                    print(report.table([result], False, width) + "\n", flush=True)
    except signals.Interrupted as exc:  # cli/exits.py gives the exit code
        for handle in outputs.values():
            handle.close()
        print(f"{PROG}: interrupted by {exc}; the lab was torn down", file=sys.stderr)
        raise
    if quiet_table:
        output.print_json(report.to_json(results))
    else:
        print(report.summary_text(results, width))
    if "json" in outputs:
        with outputs["json"] as handle:
            handle.write(json.dumps(report.to_json(results), indent=1).encode())
    if "junit" in outputs:
        with outputs["junit"] as handle:
            handle.write(report.to_junit(results).encode())
    if "html" in outputs:
        from testbed.verdict import html

        with outputs["html"] as handle:
            handle.write(html.render(report.to_json(results)).encode())
    if refused and not loaded:
        return 2  # nothing could run: bad input, as with one scenario
    return 0 if all(r.passed for r in results) else 1


def _open_outputs(args: argparse.Namespace) -> dict:
    """Open --json/--junit and make --pcap/--plots directories before anything is built."""
    import os

    from testbed.core import outfiles

    opened = {}
    try:
        for key in ("json", "junit", "html"):
            if getattr(args, key, None):
                opened[key] = outfiles.open_file(getattr(args, key))
        for key in ("pcap", "plots"):
            if getattr(args, key, None):
                os.close(outfiles.directory(getattr(args, key)))
    except outfiles.OutputError:
        for handle in opened.values():
            handle.close()
        raise
    return opened


def _plot(directory: str, scenario, result, observed) -> None:
    from testbed.verdict import plots

    probes = [*scenario.lab.probes, *(s.probe for s in scenario.lab.steps if s.probe)]
    paced = {p.name for p in probes if p.measure_latency}
    for written in plots.write(directory, result, observed, paced):
        print(f"wrote {written}", file=sys.stderr)


def attach(found):
    """A handle on a running lab, from the copy of its scenario and plan it keeps."""
    from testbed.live.lab import Lab

    return Lab.attach(found)


def cmd_lb(args: argparse.Namespace) -> int:
    require_root()
    from testbed.kernel import lbview

    found = find_lab(lab_of(args))
    lab = attach(found)
    lab.close()
    hashing = lbview.read_hash(lbview.ns_name(found.id, lbview.EDGE))
    views = lbview.look(lab.plan, found.id)
    if output.wants_json(args):
        output.print_json(lbview.to_json(lab.plan, found.id, views, hashing))
        return 0
    print(lbview.describe(lab.plan, found.id, views, hashing))
    return 0


def count(text: str) -> int:
    """--count, checked as the scenario field `count` is."""
    from testbed.core.scenario import MAX_PROBE_COUNT

    if not text.isdigit() or not 1 <= int(text) <= MAX_PROBE_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 1-{MAX_PROBE_COUNT}")
    return int(text)


def port(text: str) -> int | str:
    """--port: a number 1-65535 or a port name (IANA_SVC_NAME), as in a Service."""
    if text.isdigit():
        if not 1 <= int(text) <= 65535:
            raise argparse.ArgumentTypeError(f"{text} is outside the port range 1-65535")
        return int(text)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", text) or text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a port number nor a port name")
    return text


def ipv4(text: str) -> str:
    """--address: a dotted IPv4 address (no name lookups)."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def went_down(found, wait: float = 5.0) -> bool:
    """Whether the lab was taken down under a command: its owner gone or a namespace missing.

    A probe sends from short-lived threads and never sits inside a lab namespace itself
    (netns.run_in), so `testbed down` leaves it be and the probe finds the namespaces gone.
    After a signal, a teardown still under way is given `wait` seconds to show.
    """
    import time

    from testbed.kernel import netns, state

    deadline = time.monotonic() + wait
    while True:
        if not state.owner_alive(found):
            return True
        if not all(os.path.lexists(netns.path(n)) for n in found.namespaces):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def cmd_probe(args: argparse.Namespace) -> int:
    require_root()
    import signal

    from testbed.kernel import signals
    from testbed.live.described import described_expectation
    from testbed.verdict import report

    found = find_lab(lab_of(args))
    outputs = _open_outputs(args)  # --pcap: a directory that cannot be made fails now
    lab = attach(found)
    verdicts = []
    try:
        nodes = [args.node]
        if args.node == "*":
            if args.via != "nodePort":
                raise CliError("--node '*' is for --via nodePort: one row per node")
            nodes = [n.name for n in lab.plan.nodes]
        expect = described_expectation(lab.plan, args.expect) if args.expect else None
        lab.keep_raw_frames = bool(args.pcap)
        for node in nodes:
            mark = time.time()
            with signals.handled():
                verdict = lab.probe(
                    source=args.source,
                    service=args.to,
                    via=args.via,
                    node=node,
                    port=args.port,
                    count=args.count,
                    protocol=args.protocol,
                    address=args.address,
                    expect=expect,
                    mode=args.mode,
                )
            if len(nodes) > 1:
                verdict = replace(verdict, name=f"{verdict.name}-via-{node}")
            if args.pcap:
                from testbed.live.runner import write_pcaps

                frames = lab.captures.frames(since=mark)
                write_pcaps(args.pcap, found.name, verdict.name, frames)
                print(f"wrote {args.pcap}/{found.name}/{verdict.name}/", file=sys.stderr)
            verdicts.append(verdict)
        if went_down(found, wait=0):  # the last batch may have run while it went
            raise LabError(f"lab {found.id} went down while it was being probed")
    except CliError:
        raise
    except (Exception, signals.Interrupted) as exc:
        asked = isinstance(exc, signals.Interrupted) and exc.signum == signal.SIGINT
        if not asked and went_down(found):  # a Ctrl-C is the user's; the rest may be `down`
            raise LabError(f"lab {found.id} went down while it was being probed") from None
        raise
    finally:
        with contextlib.suppress(OSError):  # captures in namespaces that may be gone
            lab.close()
        for handle in outputs.values():
            handle.close()
    result = report.ScenarioResult(found.name, found.file, found.proxy_mode, 0.0, tuple(verdicts))
    if output.wants_json(args):
        output.print_json(report.to_json([result]))
    else:
        print(report.table([result], width=output.width(args)))
    return 0 if result.passed else 1


def add_target_options(p: argparse.ArgumentParser, node_help: str) -> None:
    """The lab, the source and the target: the same words on `probe` and `trace`."""
    p.add_argument("lab", nargs="?", help="lab id or name (default: the only lab up)")
    add_lab_option(p)
    p.add_argument("--from", dest="source", required=True, help="client, pod or node name")
    p.add_argument("--to", help="service (name or namespace/name)")
    p.add_argument(
        "--via",
        default="clusterIP",
        choices=["clusterIP", "nodePort", "loadBalancer", "externalIP"],
    )
    p.add_argument("--node", help=node_help)
    p.add_argument("--port", type=port, help="service port number or name (default: the first)")
    p.add_argument("--address", type=ipv4, help="a raw target IPv4 address instead of a service")
    p.add_argument("--protocol", choices=["TCP", "UDP"], help="default: the service port's")


def add_commands(sub, modes: list[str]) -> None:
    p = sub.add_parser("run", help="build each scenario, probe it with real packets, judge")
    p.add_argument("scenarios", nargs="*", help="scenario files or names (default: the library)")
    p.add_argument("--proxy-mode", choices=modes, help="override each scenario's proxyMode")
    p.add_argument(
        "--kube-proxy",
        metavar="builtin|upstream[@VERSION]",
        help="who writes the rules: our renderer (builtin, the default) or the real kube-proxy",
    )
    p.add_argument("--json", metavar="FILE", help="write the JSON report here")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report here")
    p.add_argument("--html", metavar="FILE", help="draw every probe's paths on one HTML page")
    p.add_argument("--pcap", metavar="DIR", help="write one pcap per probe and hop here")
    p.add_argument("--plots", metavar="DIR", help="draw shares and latency as PNG files here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    output.add_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("lb", help="show the edge load balancer of a lab left up: routes, checks")
    p.add_argument("lab", nargs="?", help="lab id or name (default: the only lab up)")
    add_lab_option(p)
    output.add_option(p)
    p.set_defaults(func=cmd_lb)

    p = sub.add_parser("probe", help="probe a lab left up by `testbed up`")
    add_target_options(p, node_help="for --via nodePort: whose address ('*': every node)")
    p.add_argument(
        "--count",
        type=count,
        default=DEFAULT_PROBE_COUNT,
        help=f"attempts (1-100000, default {DEFAULT_PROBE_COUNT}, as in YAML and Python)",
    )
    p.add_argument(
        "--mode",
        choices=["connection", "packet"],
        default="connection",
        help="connection: real sockets (default); packet: Scapy-built SYNs or datagrams",
    )
    p.add_argument(
        "--expect",
        metavar="EXPECT",
        help="e.g. dropped, or outcome=delivered,sourceIP=client,pods=web-0+web-1,"
        "completed=50%%,returnPath=correct (default: the oracle's prediction)",
    )
    p.add_argument("--pcap", metavar="DIR", help="write one pcap per capture point here")
    output.add_option(p)
    p.set_defaults(func=cmd_probe)

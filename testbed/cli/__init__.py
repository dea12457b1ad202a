"""The `testbed` command: a thin layer over scenario loading, planning and Lab.

Heavy imports (pyroute2, Scapy) happen inside the commands that need them so
`testbed --help` and `testbed plan` start fast and work without root.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from testbed.cli import output
from testbed.cli.common import (
    PROG,
    CliError,
    Parser,
    add_lab_option,
    check_limits,
    check_upstream,
    find_lab,
    lab_namespace,
    lab_of,
    load_both,
    print_warnings,
    require_root,
)

# -- commands ------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from testbed.core import limits
    from testbed.core.describe import describe

    scenario, planned = load_both(args.scenario, args.proxy_mode)
    print_warnings(scenario)
    if output.wants_json(args):
        output.print_json(plan_json(scenario, planned))
        return 0
    print(describe(planned))
    text = limits.message(planned)
    if text is not None:
        print(f"warning: {text}")
    return 0


def plan_json(scenario, planned) -> dict:
    """`plan -o json`: the report's `topology` of the planned lab, with its name and mode."""
    from testbed.verdict import layout

    return {
        "name": planned.name,
        "proxyMode": planned.proxy.mode,
        "topology": layout.topology(planned, scenario.lab.steps),
    }


def summary(lab) -> str:
    plan = lab.plan
    kp = f"upstream kube-proxy {plan.proxy.version}" if lab.upstream else "built-in rules"
    lines = [f"lab {lab.id} is up ({plan.name}, proxy mode {plan.proxy.mode}, {kp})"]
    for node in plan.nodes:
        pods = [p for p in plan.pods if p.node == node.name]
        listed = ", ".join(f"{p.name} {p.ip}" for p in pods) or "no pods"
        lines.append(f"  {node.name:<10} {node.ip:<15} pods: {listed}")
    for client in plan.clients:
        lines.append(f"  {client.name:<10} {client.ip:<15} (external client)")
    for svc in plan.services:
        ports = ", ".join(
            f"{p.port}/{p.protocol}" + (f" nodePort {p.node_port}" if p.node_port else "")
            for p in svc.ports
        )
        extra = f" LB {', '.join(svc.lb_ips)}" if svc.lb_ips else ""
        lines.append(
            f"  service {svc.key} {svc.type} {svc.cluster_ip} {ports}{extra}"
            f" externalTrafficPolicy={svc.external_policy}"
        )
    first = plan.clients[0].name if plan.clients else plan.nodes[0].name
    lines.append(f"try: sudo testbed exec {first} -- ping -c1 {plan.nodes[-1].ip}")
    if lab.upstream:
        lines.append(f"     sudo testbed kubectl --lab {lab.id} -- get svc,endpointslices -A")
        lines.append(
            f"     sudo testbed kubectl --lab {lab.id} -- patch svc NAME"
            """ -p '{"spec":{"externalTrafficPolicy":"Local"}}'"""
        )
    lines.append(f"stop: sudo testbed down {lab.id}")
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    require_root()
    scenario, plan = load_both(args.scenario, args.proxy_mode, args.kube_proxy)
    check_limits(plan)
    check_upstream(plan)
    print_warnings(scenario)
    from testbed.live import daemon

    return daemon.up(plan, scenario, foreground=args.foreground, print_summary=summary)


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the lab's owner and make sure it went; then remove whatever it left."""
    require_root()
    from testbed.kernel import state

    found = find_lab(lab_of(args))
    with state.locked():
        how = state.stop_owner(found)
        try:
            current = state.load(found.id)
        except (OSError, ValueError, TypeError):
            current = None
        removed, ended = [], []
        if current is None or (current.pid, current.start) == (found.pid, found.start):
            removed, ended = state.remove_lab(found)
    owner = {
        "stopped": f"its owner (pid {found.pid}) tore it down",
        "killed": f"its owner (pid {found.pid}) did not stop in time and was killed",
        "gone": "its owner was not running",
    }[how]
    left = [r for r in removed if r.startswith("namespace ")]
    extra = f"; removed {len(left)} leftover namespaces" if left else ""
    if ended:
        extra += f"; ended {len(ended)} processes left inside it: " + ", ".join(
            f"{p.pid} ({p.name})" for p in ended
        )
    print(f"lab {found.id} is down: {owner}{extra}")
    return 0


LS_COLUMNS = ("LAB", "NAME", "PROXY MODE", "KUBE-PROXY", "NAMESPACES", "STATUS")


def cmd_ls(args: argparse.Namespace) -> int:
    from testbed.kernel import state
    from testbed.verdict import tablefit

    labs = state.all_states()
    items = []
    for lab in labs:
        alive = (
            (lab.status if lab.status == "building" else "up")
            if state.owner_alive(lab)
            else "orphaned (testbed clean removes it)"
        )
        items.append((lab, alive))
    if output.wants_json(args):
        output.print_json(
            [
                {
                    "id": lab.id,
                    "name": lab.name,
                    "file": lab.file,
                    "proxyMode": lab.proxy_mode,
                    "kubeProxy": lab.kube_proxy,
                    "namespaces": len(lab.namespaces),
                    "pid": lab.pid,
                    "status": alive.split(" ")[0],
                }
                for lab, alive in items
            ]
        )
        return 0
    if not labs:
        print("no labs")
        return 0
    columns = [tablefit.Column(t, t.lower(), keep=9 - k) for k, t in enumerate(LS_COLUMNS)]
    rows = [
        (lab.id, lab.name, lab.proxy_mode, lab.kube_proxy, str(len(lab.namespaces)), alive)
        for lab, alive in items
    ]
    fitted = tablefit.fit(columns, rows, output.width(args))
    for line in [*fitted.header, *(line for row in fitted.rows for line in row)]:
        print(line[tablefit.INDENT :])
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    require_root()
    found = find_lab(lab_of(args))
    ns = lab_namespace(found, args.name)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise CliError("exec needs a command after --, e.g. testbed exec client -- ping -c1 ...")
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", ns, *argv])
    return 0  # not reached


def cmd_kubectl(args: argparse.Namespace) -> int:
    """The lab's own kubectl, run inside its control plane's namespace (upstream mode)."""
    require_root()
    found = find_lab(args.lab)
    from testbed.core.topology import ns_name
    from testbed.kernel import state, upstreambin
    from testbed.kubeproxy.objects import CONTROL_PLANE_NS

    impl, _, version = found.kube_proxy.partition("@")
    if impl != "upstream":
        raise CliError(
            f"lab {found.id} runs the built-in rules and has no API server"
            " (testbed up --kube-proxy upstream SCENARIO starts one)",
            2,
        )
    ns = ns_name(found.id, CONTROL_PLANE_NS)
    admin = os.path.join(state.data_dir(found.id), "admin.kubeconfig")
    if ns not in found.namespaces or not os.path.exists(admin):
        raise CliError(f"lab {found.id} has no control plane yet (is it still building?)", 2)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise CliError("kubectl needs arguments after --, e.g. testbed kubectl -- get svc -A", 2)
    try:
        kubectl = upstreambin.find(version).path("kubectl")
    except Exception as exc:
        raise CliError(str(exc), 2) from None
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", ns, kubectl, f"--kubeconfig={admin}", *argv])
    return 0  # not reached


def cmd_rules(args: argparse.Namespace) -> int:
    require_root()
    refs = args.refs
    lab_ref, node = (None, refs[0]) if len(refs) == 1 else (refs[0], refs[1])
    args.lab = lab_ref
    found = find_lab(lab_of(args))
    from testbed.core.topology import ns_name
    from testbed.kernel import rules as sync

    ns = ns_name(found.id, node)
    if ns not in found.namespaces:
        raise CliError(f"no node {node!r} in lab {found.id}")
    if args.diff:
        from testbed.cli.rulesdiff import node_diff

        text, same = node_diff(found, node, ns)
        sys.stdout.write(text)
        return 0 if same else 1
    sys.stdout.write(sync.dump(ns, found.proxy_mode))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    require_root()
    from testbed.kernel import state

    done = state.clean(everything=args.all)
    for line in done.stopped:
        print(f"stopped {line}")
    for line in done.removed:
        print(f"removed {line}")
    removed = done.removed
    print(f"clean: removed {len(removed)} leftovers" if removed else "clean: nothing to remove")
    for lab in done.kept:
        print(f"clean: kept lab {lab}, which is still running (testbed down {lab}, or clean --all)")
    if done.unrecorded:
        shown = ", ".join(done.unrecorded[:5]) + (" ..." if len(done.unrecorded) > 5 else "")
        print(
            f"clean: left alone {len(done.unrecorded)} namespaces no lab record owns"
            f" ({shown}); ip netns delete NAME removes one"
        )
    return 0


def add_kube_proxy_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kube-proxy",
        metavar="builtin|upstream[@VERSION]",
        help="who writes the rules: our renderer (builtin) or the real kube-proxy (upstream);"
        " overrides each scenario's spec.kubeProxy.implementation",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="A packet-level lab that shows how kube-proxy handles Service traffic.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modes = ["iptables", "nftables"]

    p = sub.add_parser("plan", help="print the planned lab of a scenario (no root needed)")
    p.add_argument("scenario", nargs="?", help="scenario file or built-in name (default: default)")
    p.add_argument("--proxy-mode", choices=modes)
    output.add_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("up", help="build a lab and leave it running")
    p.add_argument("scenario", nargs="?", help="scenario file or built-in name (default: default)")
    p.add_argument("--proxy-mode", choices=modes)
    p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C tears down")
    add_kube_proxy_option(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="tear down a lab")
    p.add_argument("lab", nargs="?", help="lab id or name (default: the only lab up)")
    add_lab_option(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("ls", help="list labs")
    output.add_option(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("exec", help="run a command in a node, pod or client namespace")
    add_lab_option(p, dest="lab")
    p.add_argument("name", help="node, pod or client name, or 'edge'")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("kubectl", help="run kubectl against a lab's API server (upstream mode)")
    p.add_argument("--lab", help="lab id or name (default: the only lab up)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- KUBECTL ARGS...")
    p.set_defaults(func=cmd_kubectl)

    p = sub.add_parser("rules", help="print the rules loaded on a node")
    p.add_argument("refs", nargs="+", metavar="[LAB] NODE")
    p.add_argument(
        "--diff",
        action="store_true",
        help="diff our rendering of the node with what its kernel holds, normalised"
        " (exit 1 when they differ)",
    )
    add_lab_option(p)
    p.set_defaults(func=cmd_rules)

    p = sub.add_parser("clean", help="remove what killed or crashed labs left behind")
    p.add_argument("--all", action="store_true", help="also stop and remove labs still running")
    p.set_defaults(func=cmd_clean)

    from testbed import bench, upstream
    from testbed.cli import live as livecli
    from testbed.cli import report as reportcli
    from testbed.cli import run as runcli
    from testbed.cli import trace as tracecli

    runcli.add_commands(sub, modes)
    reportcli.add_commands(sub)
    tracecli.add_commands(sub)
    livecli.add_commands(sub)
    bench.add_command(sub)
    upstream.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; how it ends is cli/exits.py's table (TESTBED_DEBUG=1: a bug's traceback)."""
    from testbed.cli import exits

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "rules" and len(args.refs) > 2:
        parser.error("rules takes [LAB] NODE")
    try:
        return args.func(args)
    except BaseException as exc:
        ended = exits.outcome(exc, args.command)
        if ended is None or (os.environ.get("TESTBED_DEBUG") and not ended.expected):
            raise
        if isinstance(exc, BrokenPipeError):  # nothing more reaches the reader, not even a flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.write(ended.text())
        return ended.code

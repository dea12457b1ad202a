"""`testbed trace`: one marked packet through a running lab, and the rules the kernel ran.

The real-kernel counterpart of kube-proxy's own unit-test tracer: per node, the chains
and rules the packet went through (KUBE-SERVICES -> KUBE-EXT-... -> KUBE-SEP-... DNAT,
or the rule that dropped it), from `nft monitor trace` or `xtables-monitor --trace`.
"""

from __future__ import annotations

import argparse
import json

from testbed.cli.common import CliError, find_lab, lab_of, require_root


def cmd_trace(args: argparse.Namespace) -> int:
    require_root()
    from testbed.core.errors import LabError
    from testbed.core.targets import aim
    from testbed.kernel import ruletrace
    from testbed.live.described import described_probe
    from testbed.live.lab import Lab

    found = find_lab(lab_of(args))
    try:
        lab = Lab.attach(found)
    except LabError as exc:
        raise CliError(str(exc), 2) from None
    try:
        probe = described_probe(
            lab.plan,
            lab.wiring,
            found.id,
            args.source,
            args.to,
            args.via,
            args.node,
            args.port,
            args.address,
            args.protocol,
            1,
        )
        traced = ruletrace.trace(found.id, lab.plan, probe.source, aim(lab.plan, probe))
    except (LabError, ruletrace.TraceError) as exc:
        raise CliError(str(exc), 2) from None
    finally:
        lab.close()
    if args.output == "json":
        print(json.dumps(traced.as_report(), indent=1))
    else:
        print("\n".join(ruletrace.lines(traced)))
    return 0


def add_commands(sub) -> None:
    from testbed.cli.run import add_target_options

    p = sub.add_parser("trace", help="send one marked packet; show the rules each node ran for it")
    add_target_options(p, node_help="for --via nodePort: whose address")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_trace)

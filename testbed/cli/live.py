"""`testbed shell`, `scale`, `delete pod`, `set-policy`: a running lab from the shell.

The verbs are kubectl's; each change is the one a scenario step makes (scale,
deletePod, setPolicy), applied by the lab's owner (live/control.py), so the pods'
servers and the edge's health checks follow as they do in a run.
"""

from __future__ import annotations

import argparse
import os
import sys

from testbed.cli.common import (
    CliError,
    add_lab_option,
    find_lab,
    lab_namespace,
    lab_of,
    require_root,
)


def cmd_shell(args: argparse.Namespace) -> int:
    """An interactive shell inside one namespace of the lab, like `docker exec -it`."""
    require_root()
    found = find_lab(lab_of(args))
    ns = lab_namespace(found, args.name)
    shell = os.environ.get("SHELL") or "/bin/bash"
    if not os.path.exists(shell):
        shell = "/bin/sh"
    prompt = f"[{found.id} {args.name}] \\w# "
    print(f"shell in {args.name} ({ns}); exit or Ctrl-D leaves it", file=sys.stderr)
    sys.stdout.flush()
    env = {**os.environ, "PS1": prompt, "TESTBED_LAB": found.id, "TESTBED_NS": ns}
    argv = [shell, "--norc", "-i"] if shell.endswith("bash") else [shell, "-i"]
    os.execvpe("ip", ["ip", "netns", "exec", ns, *argv], env)
    return 0  # not reached


def _change(args: argparse.Namespace, change: dict) -> int:
    require_root()
    from testbed.core.errors import LabError
    from testbed.kernel import state
    from testbed.live import control

    found = find_lab(lab_of(args))
    if not state.owner_alive(found):
        raise CliError(f"lab {found.id} has no running owner (testbed clean removes it)", 2)
    try:
        done = control.submit(found.id, change)
    except LabError as exc:
        raise CliError(str(exc), 2) from None
    print(f"lab {found.id}: {done}")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    name = args.deployment.removeprefix("deployment/").removeprefix("deployments/")
    if args.replicas < 0:
        raise CliError(f"--replicas {args.replicas}: must be 0 or more", 2)
    return _change(args, {"action": "scale", "deployment": name, "replicas": args.replicas})


def cmd_delete(args: argparse.Namespace) -> int:
    name = args.name.removeprefix("pod/")
    return _change(args, {"action": "deletePod", "pod": name})


def cmd_set_policy(args: argparse.Namespace) -> int:
    if args.external is None and args.internal is None:
        raise CliError("set-policy needs --external and/or --internal (Cluster or Local)", 2)
    name = args.service.removeprefix("service/")
    change = {"action": "setPolicy", "service": name}
    change.update({k: getattr(args, k) for k in ("external", "internal") if getattr(args, k)})
    return _change(args, change)


def add_commands(sub) -> None:
    p = sub.add_parser("shell", help="an interactive shell in a node, pod or client namespace")
    p.add_argument("name", help="node, pod or client name, or 'edge'")
    add_lab_option(p)
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("scale", help="scale a Deployment of a running lab (as a scale step)")
    p.add_argument("deployment", help="name, namespace/name or deployment/NAME")
    p.add_argument("--replicas", type=int, required=True)
    add_lab_option(p)
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("delete", help="delete a pod of a running lab (as a deletePod step)")
    p.add_argument("kind", choices=["pod"], help="pod")
    p.add_argument("name", help="pod name")
    add_lab_option(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "set-policy", help="set a Service's traffic policies on a running lab (as setPolicy)"
    )
    p.add_argument("service", help="name or namespace/name")
    p.add_argument("--external", choices=["Cluster", "Local"], help="externalTrafficPolicy")
    p.add_argument("--internal", choices=["Cluster", "Local"], help="internalTrafficPolicy")
    add_lab_option(p)
    p.set_defaults(func=cmd_set_policy)

"""What every command shares: the bad-input error, root check, loading, finding a lab.

Imports inside functions keep `testbed --help` from loading YAML, netaddr or netlink.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from testbed.core.errors import NeedsRoot, UsageError
from testbed.core.library import resolve

PROG = "testbed"
NEEDS_ROOT = str(NeedsRoot())


class CliError(UsageError):
    """A command asked for something it cannot do; cli/exits.py maps it (exit 2 by default)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but an argument error is one line (usage is what --help is for)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def require_root() -> None:
    if os.geteuid() != 0:
        raise NeedsRoot()


def resolve_scenario(arg: str | None) -> Path:
    """A path, or the name of a scenario in the built-in library (NotFound if neither)."""
    return resolve(arg)


def load_both(arg: str | None, proxy_mode: str | None = None, kube_proxy: str | None = None):
    """(scenario, plan) of a scenario file or built-in name; ScenarioError names each problem
    (a bad --kube-proxy: ChoiceError)."""
    from testbed.core import load

    return load.load_both(str(resolve_scenario(arg)), proxy_mode, kube_proxy)


def check_upstream(plan) -> None:
    """Upstream mode needs its binaries built and a plan the control plane can hold: exit 2."""
    if plan.proxy.implementation != "upstream":
        return
    from testbed.core.errors import LabError
    from testbed.kernel import upstreambin
    from testbed.kubeproxy import objects

    try:
        objects.check(plan)
        upstreambin.find(plan.proxy.version)
    except LabError as exc:
        raise CliError(f"{plan.name}: {exc}", 2) from None


def print_warnings(scenario) -> None:
    """What the scenario loads with but the user should know, on stderr."""
    for warning in scenario.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def check_limits(plan) -> None:
    """A lab larger than this machine can hold is bad input: exit 2 before building."""
    from testbed.core import limits

    text = limits.message(plan)
    if text is not None:
        raise CliError(text)


def find_lab(ref: str | None):
    from testbed.kernel import state

    labs = state.all_states()
    if ref is None:
        if len(labs) == 1:
            return labs[0]
        if not labs:
            raise CliError("no lab is up (start one with: testbed up SCENARIO)")
        ids = ", ".join(s.id for s in labs)
        raise CliError(f"several labs are up ({ids}): name one")
    exact = [s for s in labs if s.id == ref]
    named = exact or [s for s in labs if s.name == ref or s.id.startswith(ref)]
    if len(named) == 1:
        return named[0]
    if not named:
        raise CliError(f"no lab {ref!r} (testbed ls lists them)")
    raise CliError(f"{ref!r} matches several labs: {', '.join(s.id for s in named)}")


LAB_HELP = "lab id, name or id prefix (default: the only lab up)"


def add_lab_option(parser: argparse.ArgumentParser, dest: str = "lab_option") -> None:
    """`--lab LAB`: the one way every command that works on a running lab names it.

    down, probe, lb, trace and rules also take the lab as their first argument, as before.
    """
    parser.add_argument("--lab", dest=dest, metavar="LAB", help=LAB_HELP)


def lab_of(args: argparse.Namespace) -> str | None:
    """The lab the command names, by --lab or by its first argument (both: they must agree)."""
    flag, positional = getattr(args, "lab_option", None), getattr(args, "lab", None)
    if flag and positional and flag != positional:
        raise CliError(f"two labs named: {positional!r} and --lab {flag!r}; give one", 2)
    return flag or positional


def lab_namespace(found, name: str) -> str:
    """The namespace of node, pod or client `name` in a recorded lab (exec, shell)."""
    from testbed.core.topology import ns_name

    ns = ns_name(found.id, name)
    if ns not in found.namespaces:
        known = ", ".join(n.removeprefix(ns_name(found.id, "")) for n in found.namespaces)
        raise CliError(f"no namespace {name!r} in lab {found.id} (known: {known})")
    return ns

"""`testbed report JSON --html FILE`: draw a saved `testbed run --json` report again.

Needs no root and no lab: the JSON report carries the topology and every probe's flows.
"""

from __future__ import annotations

import argparse
import json

from testbed.cli.common import CliError


def read(path: str) -> dict:
    """The saved report, or one clear line naming the file and what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}", 2) from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a text file", 2) from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}", 2) from None
    scenarios = data.get("scenarios") if isinstance(data, dict) else None
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) for s in scenarios):
        raise CliError(f"{path}: not a `testbed run --json` report (no list of scenarios)", 2)
    return data


def page(path: str, data: dict) -> str:
    from testbed.verdict import html

    try:
        return html.render(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CliError(f"{path}: a report this version cannot draw ({what})", 2) from None


def write(path: str, text: str) -> None:
    """Through the safe output helper: never through a link someone planted."""
    from testbed.core import outfiles

    try:
        with outfiles.open_file(path) as handle:
            handle.write(text.encode())
    except outfiles.OutputError as exc:
        raise CliError(str(exc), 2) from None


def cmd_report(args: argparse.Namespace) -> int:
    data = read(args.report)
    text = page(args.report, data)
    write(args.html, text)
    print(f"wrote {args.html}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("report", help="draw a saved `run --json` report as one HTML page")
    p.add_argument("report", metavar="JSON", help="a report written by `testbed run --json`")
    p.add_argument("--html", metavar="FILE", required=True, help="write the page here")
    p.set_defaults(func=cmd_report)

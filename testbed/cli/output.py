"""`-o table|wide|json`: how a command prints, and how wide the terminal is.

The default table fits the terminal (COLUMNS, else the terminal's own width); output that
goes to a pipe or file without COLUMNS keeps one line per row, as `-o wide` does, so
grep and scripts see whole rows. `-o json` prints the same data `--json FILE` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

FORMATS = ("table", "wide", "json")
MIN_WIDTH = 40  # narrower terminals get this; the layout cannot say much in less


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="table",
        help="table: fit the terminal (default); wide: one line per row; json: the report data",
    )


def width(args: argparse.Namespace) -> int | None:
    """The width the table must fit, or None for full rows (`-o wide`, or not a terminal)."""
    if getattr(args, "output", "table") != "table":
        return None
    columns = os.environ.get("COLUMNS", "")
    if not columns.strip().isdigit() and not sys.stdout.isatty():
        return None
    return max(shutil.get_terminal_size().columns, MIN_WIDTH)


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def print_json(data) -> None:
    print(json.dumps(data, indent=1))

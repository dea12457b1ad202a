"""The built-in scenario library, and scenario names resolved to files.

Kept apart from loading (no YAML, no netaddr here) so `testbed --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from testbed.core.errors import NotFound

LIBRARY = (Path(__file__).resolve().parents[1] / "scenarios").resolve()


def library() -> list[Path]:
    """The built-in scenarios, by name."""
    return sorted(LIBRARY.glob("*.yaml"))


def resolve(arg: str | None) -> Path:
    """A path, or the name of a scenario in the built-in library (none: `default`)."""
    if arg is None:
        return LIBRARY / "default.yaml"
    path = Path(arg)
    if path.exists():
        return path
    named = LIBRARY / f"{arg.removesuffix('.yaml')}.yaml"
    if named.exists():
        return named
    raise NotFound(f"{arg}: no such scenario file (nor a built-in scenario of that name)")

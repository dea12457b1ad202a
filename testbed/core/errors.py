"""One family for the errors the testbed raises on purpose.

Each error keeps the built-in base it always had (ValueError, RuntimeError, OSError), so
callers that catch those still do; `TestbedError` is what catches them all.
"""

from __future__ import annotations

from collections.abc import Sequence


class TestbedError(Exception):
    """An error the testbed raises on purpose; its message is one line a user can act on."""

    __test__ = False  # not a pytest test class, whatever its name

    def lines(self) -> list[str]:
        """What a user should read, one entry per problem (a file's reader finds several)."""
        return [str(self)]


class NotFound(TestbedError, LookupError):
    """A named thing (scenario file, lab) that does not exist."""


class CommandFailed(TestbedError, RuntimeError):
    """A tool run inside a namespace exited non-zero: where, what, and what it said."""

    def __init__(self, ns: str, argv: Sequence[str], stderr: str) -> None:
        self.ns = ns
        self.argv = tuple(argv)
        self.stderr = stderr
        first = (stderr.strip().splitlines() or ["no message"])[0]
        super().__init__(f"{' '.join(self.argv)} failed in {ns}: {first}")


class LabError(TestbedError, RuntimeError):
    """The lab could not do what was asked; the message says why in one line."""


class NeedsRoot(TestbedError, PermissionError):
    """The command builds or reads namespaces, which only root (CAP_NET_ADMIN) may do."""

    def __init__(self, message: str = "needs root (CAP_NET_ADMIN): run with sudo") -> None:
        super().__init__(message)


class WorkFailed(TestbedError, RuntimeError):
    """The input was fine but the work failed (a build, a benchmark section): exit 1, not 2."""


class UsageError(TestbedError, ValueError):
    """A command was asked for something it cannot do (an argument, a name): exit 2."""

"""The console script's shutdown: a Ctrl-C leaves no traceback on a user's screen."""

from __future__ import annotations

import gc
import sys

from testbed import entry


class _Pending:
    def __await__(self):
        yield


async def _request(message: str) -> None:
    """Stands in for a netlink request a Ctrl-C left unfinished: collected later, its
    clean-up fails the way asyncio's does once the loop is closed."""
    try:
        await _Pending()
    finally:
        raise RuntimeError(message)


def _abandon(message: str) -> None:
    coroutine = _request(message)
    coroutine.send(None)  # suspended, then dropped: Python finalizes it
    del coroutine
    gc.collect()


def test_an_abandoned_coroutine_after_its_loop_closed_is_quiet(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "unraisablehook", entry._quiet_abandoned_coroutines)
    _abandon("Event loop is closed")
    assert capsys.readouterr().err == ""


def test_every_other_unraisable_error_is_still_printed(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "unraisablehook", entry._quiet_abandoned_coroutines)
    _abandon("something else")
    assert "RuntimeError: something else" in capsys.readouterr().err

"""The parts of lab ownership that need no root: identities, records, held-back signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from testbed.kernel import procs, signals, state


def test_a_process_is_its_pid_and_start_time():
    me = procs.me()
    assert me.pid == os.getpid() and me.start > 0
    assert procs.alive(me.pid, me.start)
    assert not procs.alive(me.pid, me.start + 1)  # same pid, another start: not us
    assert not procs.alive(me.pid, 0)


def test_a_signal_never_reaches_a_process_that_only_holds_the_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = procs.start_time(child.pid)
        assert not procs.send(child.pid, start - 1, signal.SIGTERM)
        assert child.poll() is None
        assert procs.stop(child.pid, start, timeout=10) == "stopped"
        assert child.wait(timeout=10) == -signal.SIGTERM
        assert procs.stop(child.pid, start) == "gone"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def record(lab_id: str, pid: int, start: int) -> state.LabState:
    return state.LabState(lab_id, "x", "", "iptables", [], pid=pid, start=start)


def test_a_record_is_created_once(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    me = procs.me()
    assert state.create(record("x-aaaa", me.pid, me.start))
    assert not state.create(record("x-aaaa", me.pid, me.start))  # taken: O_EXCL says no
    assert state.owner_alive(state.load("x-aaaa"))
    assert state.still_mine("x-aaaa", me)
    assert not state.still_mine("x-aaaa", procs.Proc(me.pid, me.start + 1))
    stale = record("x-bbbb", me.pid, me.start - 1)  # our pid, someone else's start
    assert state.create(stale) and not state.owner_alive(stale)
    assert sorted(os.path.basename(p) for p in state.forget("x-aaaa")) == ["x-aaaa.json"]
    assert state.forget("x-aaaa") == []


def test_a_planted_link_is_not_followed_by_a_record(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "x-cccc.json").symlink_to(victim)
    assert not state.create(record("x-cccc", 1, 1))
    assert victim.read_text() == "precious"


def test_a_copy_written_by_someone_else_is_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    state.save_copy("x-dddd", None, {"plan": 1}, frozenset())
    assert state.load_copy("x-dddd") == (None, {"plan": 1}, frozenset())
    os.chmod(state.copy_path("x-dddd"), 0o666)
    with pytest.raises(PermissionError):
        state.load_copy("x-dddd")


@pytest.fixture
def own_handlers():
    """handled() leaves SIGINT/SIGTERM ignored after an interruption: give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in signals.STOPS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_during_a_shielded_teardown_arrives_after_it(own_handlers):
    seen = []
    with pytest.raises(signals.Interrupted), signals.handled():
        with signals.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C: still held
            for _ in range(1000):
                seen.append(1)  # the teardown goes on to its end
        seen.append("not reached: the held signal is delivered as the shield ends")
    assert seen == [1] * 1000
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # on its way out: no more


def test_a_signal_inside_an_event_loop_callback_is_not_swallowed(own_handlers):
    import asyncio

    def callback() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, inside the loop's callback
            pass

    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(callback)
        loop.call_later(30, loop.stop)  # a swallowed signal fails the test, not hangs it
        with pytest.raises(signals.Interrupted), signals.handled():
            loop.run_forever()  # only the signal ends it
    finally:
        loop.close()


def test_a_signal_swallowed_by_a_finalizer_still_stops_the_work(own_handlers, capfd):
    """Python only reports an exception raised in __del__; the stop must not be lost."""

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs (and raises) in here
                pass

    steps = []
    with pytest.raises(signals.Interrupted), signals.handled():
        Finalized()  # dropped at once: __del__ runs, its exception is swallowed
        steps.append("went on")  # the work goes on after a swallowed raise ...
        signals.check()  # ... until the next check
        steps.append("not reached")
    assert steps == ["went on"]
    assert "Traceback" not in capfd.readouterr().err  # nothing reported either

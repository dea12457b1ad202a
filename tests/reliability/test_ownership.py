"""Who owns what: a lab is its owner's (pid and start time), and only its own record says so.

A lab built from Python or owned by pytest survives another terminal's `clean`; a dead
owner whose pid a stranger reuses is still dead (and the stranger is never signalled);
two labs that draw the same id never touch each other; an owner whose record is removed
tears down; `down` ends every process inside the lab and makes sure the owner went, even
a stopped (Ctrl-Z) one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.commands import ROOT
from tests.support.private import Private
from tests.support.waiting import wait_until
from tests.support.world import alive

pytestmark = [pytest.mark.reliability, pytest.mark.lab]

API_OWNER = """
import sys, time
import testbed
from testbed.kernel import signals
try:
    with signals.handled(), testbed.load("default") as lab:
        print(lab.id, flush=True)
        while True:
            time.sleep(0.2)
except signals.Interrupted as exc:
    sys.exit(exc.exit_code)
"""

PYTEST_OWNER = """
import os, time
from pathlib import Path

import pytest


@pytest.mark.lab
def test_owns_a_lab_through_a_clean(lab):
    built = lab("default")
    here = Path(os.environ["HANDSHAKE"])
    (here / "id").write_text(built.id)
    deadline = time.monotonic() + 120
    while not (here / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(v.passed for v in built.verdicts())
"""


def lab_line(private: Private, lab: str) -> str:
    listed = private.tb("ls").stdout
    return next((line for line in listed.splitlines() if line.startswith(lab)), "")


def probe_passes(private: Private, lab: str) -> None:
    done = private.tb(
        "probe", lab, "--from", "client", "--to", "web", "--via", "nodePort", "--node", "node-2"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_python_api_lab_survives_a_concurrent_clean_and_is_probed_from_the_cli(
    private: Private,
):
    owner = subprocess.Popen(
        [sys.executable, "-c", API_OWNER],
        cwd=ROOT,
        env=private.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    private.procs.append(owner)
    lab = owner.stdout.readline().strip()
    assert lab, owner.stderr.read()
    before = private.namespaces()
    assert len(before) == 9
    assert lab_line(private, lab).endswith(" up")
    for args in (["clean"], ["clean"]):
        done = private.tb(*args)
        assert done.returncode == 0, done.stderr
        assert f"kept lab {lab}" in done.stdout and "removed" not in done.stdout
    assert private.namespaces() == before
    probe_passes(private, lab)  # a lab built in Python, probed from its own copy of its plan
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=60) == 143
    assert private.namespaces() == set() and private.state_files() == set()


def pytest_owner(private: Private, tmp_path: Path) -> subprocess.Popen:
    """A pytest run whose test holds a lab (its id in tmp_path/id) until tmp_path/go."""
    test_file = tmp_path / "test_owner.py"
    test_file.write_text(PYTEST_OWNER)
    env = dict(private.env, HANDSHAKE=str(tmp_path))
    owner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    private.procs.append(owner)
    assert wait_until(lambda: (tmp_path / "id").exists() or owner.poll() is not None, 120)
    return owner


def test_a_pytest_owned_lab_survives_a_concurrent_clean(private: Private, tmp_path: Path):
    owner = pytest_owner(private, tmp_path)
    lab = (tmp_path / "id").read_text()
    assert lab_line(private, lab).endswith(" up")
    done = private.tb("clean")
    assert done.returncode == 0 and f"kept lab {lab}" in done.stdout, done.stdout
    assert len(private.namespaces()) == 9
    (tmp_path / "go").write_text("")
    out, _ = owner.communicate(timeout=180)
    assert owner.returncode == 0, out
    assert private.namespaces() == set() and private.state_files() == set()


def test_sigterm_to_pytest_tears_its_labs_down(private: Private, tmp_path: Path):
    """A cancelled CI job: SIGTERM stops pytest like Ctrl-C, and the lab fixture cleans up."""
    owner = pytest_owner(private, tmp_path)
    assert len(private.namespaces()) == 9
    owner.send_signal(signal.SIGTERM)
    out, _ = owner.communicate(timeout=120)
    assert owner.returncode == 2, out  # pytest's "interrupted"
    assert private.namespaces() == set() and private.state_files() == set(), out


def up(private: Private) -> str:
    done = private.tb("up", "default")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1]


def record(private: Private, lab: str) -> dict:
    return json.loads((private.state_dir / f"{lab}.json").read_text())


def test_a_dead_owner_whose_pid_is_reused_is_still_dead(private: Private):
    """The record points at a live stranger (named like us) with the dead owner's pid."""
    lab = up(private)
    owner = record(private, lab)
    os.kill(owner["pid"], signal.SIGKILL)  # the lab's own daemon, by the pid it recorded
    assert wait_until(lambda: not alive(owner["pid"]), 10)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "testbed"], cwd="/"
    )  # a command line that says 'testbed', as the real owner's did
    private.procs.append(stranger)
    stolen = dict(owner, pid=stranger.pid)  # start time stays the dead owner's
    (private.state_dir / f"{lab}.json").write_text(json.dumps(stolen))
    with open(f"/proc/{stranger.pid}/cmdline", "rb") as handle:
        assert b"testbed" in handle.read()  # a live process holds the recorded pid
    assert "orphaned" in lab_line(private, lab)
    done = private.tb("down", lab)
    assert done.returncode == 0, done.stderr
    assert "its owner was not running" in done.stdout, done.stdout
    assert alive(stranger.pid), "down must never signal a process that merely holds the pid"
    assert private.namespaces() == set() and private.state_files() == set()


def test_clean_keeps_nothing_for_a_stranger_on_a_reused_pid(private: Private):
    lab = up(private)
    owner = record(private, lab)
    os.kill(owner["pid"], signal.SIGKILL)
    assert wait_until(lambda: not alive(owner["pid"]), 10)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "testbed"], cwd="/"
    )
    private.procs.append(stranger)
    stolen = dict(owner, pid=stranger.pid)
    (private.state_dir / f"{lab}.json").write_text(json.dumps(stolen))
    done = private.tb("clean")
    assert done.returncode == 0, done.stderr
    assert f"kept lab {lab}" not in done.stdout
    assert private.namespaces() == set() and private.state_files() == set()
    assert alive(stranger.pid)


def test_two_labs_drawing_the_same_id_never_touch_each_other(private: Private):
    """Ids are claimed with O_EXCL: the second lab moves on; a fixed id that is taken fails."""
    code = textwrap.dedent(
        """
        import sys

        from testbed.live import lab as labmod
        from testbed.live.lab import Lab, LabError
        draws = iter(["aaaa", "aaaa", "bbbb"])
        labmod.secrets.token_hex = lambda n: next(draws)
        first = Lab.from_file("scenarios/default.yaml", serve=False).up()
        second = Lab.from_file("scenarios/default.yaml", serve=False).up()
        print(first.id, second.id)
        try:
            Lab.from_file("scenarios/default.yaml", lab_id=first.id, serve=False).up()
        except LabError as exc:
            print("refused:", exc)
        sys.stdout.flush()
        input()
        second.down()
        first.down()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=private.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    private.procs.append(proc)
    first, second = proc.stdout.readline().split()
    refused = proc.stdout.readline()
    assert first == "default-aaaa" and second == "default-bbbb"
    assert refused.startswith(f"refused: lab id {first} is taken"), refused
    # the refused build removed nothing of the lab holding that id
    mine = {n for n in private.namespaces() if n.startswith(f"{private.prefix}{first}-")}
    assert len(mine) == 9
    assert {Path(p).name for p in private.state_files()} == {
        f"{first}.json",
        f"{first}.lab",
        f"{second}.json",
        f"{second}.lab",
    }
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert private.namespaces() == set() and private.state_files() == set()


def test_an_owner_whose_record_is_removed_tears_down(private: Private):
    lab = up(private)
    daemon = record(private, lab)["pid"]
    assert len(private.namespaces()) == 9
    for path in private.state_files():
        os.unlink(path)
    assert wait_until(lambda: not alive(daemon), 30), "the daemon outlived its record"
    assert wait_until(lambda: not private.namespaces(), 10), private.namespaces()


def processes_inside(private: Private) -> list[int]:
    from testbed.kernel import netns, procs

    return [p.pid for p in procs.inside([netns.path(n) for n in private.namespaces()])]


def test_down_ends_what_testbed_exec_started_inside_the_lab(private: Private):
    lab = up(private)
    sleepers = [
        private.spawn("exec", "--lab", lab, name, "--", "sleep", "900")
        for name in ("client", "node-1", "web-0")
    ]
    assert wait_until(lambda: len(processes_inside(private)) >= 3, 20)
    inside = processes_inside(private)
    done = private.tb("down", lab)
    assert done.returncode == 0, done.stderr
    assert all(s.wait(timeout=20) is not None for s in sleepers)
    assert not any(alive(pid) for pid in inside), inside
    assert private.namespaces() == set() and private.state_files() == set()


def test_clean_all_says_what_it_stopped(private: Private):
    lab = up(private)
    daemon = record(private, lab)["pid"]
    private.spawn("exec", "--lab", lab, "client", "--", "sleep", "900")
    assert wait_until(lambda: processes_inside(private), 20)
    done = private.tb("clean", "--all")
    assert done.returncode == 0, done.stderr
    assert f"stopped lab {lab}: owner {daemon} stopped" in done.stdout, done.stdout
    assert private.namespaces() == set() and private.state_files() == set()
    assert not processes_inside(private)


def test_a_stopped_foreground_owner_is_woken_and_down_says_so_truly(private: Private):
    proc = subprocess.Popen(
        private.argv("up", "default", "--foreground"),
        cwd=ROOT,
        env=private.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    private.procs.append(proc)
    lab = proc.stdout.readline().split()[1]
    assert wait_until(lambda: " up" in lab_line(private, lab), 30)
    proc.send_signal(signal.SIGSTOP)  # Ctrl-Z
    done = private.tb("down", lab)
    assert done.returncode == 0, done.stderr
    assert f"lab {lab} is down: its owner (pid {proc.pid}) tore it down" in done.stdout
    assert proc.wait(timeout=10) == 143
    assert "Traceback" not in proc.stderr.read()
    assert private.namespaces() == set() and private.state_files() == set()


def test_sigint_anywhere_in_a_run_leaves_nothing_without_clean(private: Private):
    """20 Ctrl-Cs (each followed by a second one) at evenly spread moments of a whole run."""
    started = time.monotonic()
    whole = private.tb("run", "-q", "lb-cluster-vs-local-balance")
    length = time.monotonic() - started
    assert whole.returncode == 0, whole.stdout + whole.stderr
    outcomes = []
    starts = 0
    for k in range(20):
        at = length * (k + 0.5) / 20
        proc = subprocess.Popen(
            private.argv("run", "-q", "lb-cluster-vs-local-balance"),
            cwd=ROOT,
            env=private.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        private.procs.append(proc)
        time.sleep(at)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.03)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        # Python's own start-up (site packages, before any testbed code runs) answers a
        # Ctrl-C with its own error and exit code; nothing of a lab exists at that point
        in_python_start = err.startswith("Fatal Python error: init_import_site")
        starts += in_python_start
        assert in_python_start or "Traceback" not in err, err
        # 130, or -2: a Ctrl-C while Python itself was still starting (nothing built yet)
        assert in_python_start or proc.returncode in (0, 130, -signal.SIGINT), (
            at,
            proc.returncode,
            err,
        )
        if proc.returncode == 130:
            assert err.strip().endswith("the lab was torn down") or not err.strip(), err
        assert private.namespaces() == set(), (at, private.namespaces())
        assert private.state_files() == set(), (at, private.state_files())
        outcomes.append(proc.returncode)
    stopped = len(outcomes) - outcomes.count(0)
    print(
        f"\nSIGINT: a {length:.1f} s run interrupted at 20 moments: "
        f"{stopped} interrupted ({starts} while Python itself was starting),"
        f" {outcomes.count(0)} had finished; nothing left"
    )


def test_a_running_lab_is_probed_from_its_own_copy_not_the_file(private: Private, tmp_path):
    """Edit, then delete, the scenario file of a running lab: probe and lb describe the lab."""
    path = tmp_path / "mine.yaml"
    text = (ROOT / "scenarios" / "default.yaml").read_text()
    path.write_text(text)
    done = private.tb("up", str(path))
    assert done.returncode == 0, done.stderr
    lab = done.stdout.split()[1]
    path.write_text(text.replace("30080", "30999").replace("type: NodePort", "type: ClusterIP"))
    probe_passes(private, lab)  # the file now says ClusterIP on another port; the lab does not
    path.unlink()
    probe_passes(private, lab)
    shown = private.tb("lb", lab)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    down = private.tb("down", lab)
    assert down.returncode == 0, down.stderr
    assert private.namespaces() == set() and private.state_files() == set()


def test_a_labs_servers_remember_a_bounded_number_of_peers(private: Private):
    """What `testbed up` serves is remembered up to a bound (nothing reads it there)."""
    from testbed.live import daemon
    from testbed.live.lab import Lab

    lab = Lab.from_file(str(ROOT / "scenarios" / "default.yaml"))
    lab.seen_limit = 3
    with lab:
        lab.probe(source="client", service="web", via="nodePort", count=40)
        remembered = {p.name: len(lab.hub.seen(p.name)) for p in lab.plan.pods}
    assert max(remembered.values()) == 3 and all(n <= 3 for n in remembered.values())
    assert 0 < daemon.SEEN_LIMIT <= 10_000

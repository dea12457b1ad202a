"""Every command with bad arguments: one line on stderr, exit 2, no traceback, nothing made.

The table drives each command the way people get them wrong: unknown labs and
names, out-of-range and malformed numbers, ports, addresses and paths, a probe
path the Service does not have. Then the races: `down` while a probe runs.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.commands import ROOT
from tests.support.private import IS_ROOT, Private

pytestmark = pytest.mark.reliability

# (arguments, text the one line must contain); LAB stands for the running lab's id
NO_LAB = [
    ([], "required"),
    (["nosuch"], "invalid choice"),
    (["plan", "nosuch-scenario"], "no such scenario"),
    (["plan", "--proxy-mode", "ipvs"], "invalid choice"),
    (["up", "nosuch-scenario"], "no such scenario"),
    (["down", "nosuch"], "no lab 'nosuch'"),
    (["exec", "client", "--", "true"], "no lab is up"),
    (["rules", "a", "b", "c"], "rules takes"),
    (["rules", "node-1"], "no lab is up"),
    (["lb"], "no lab is up"),
    (["probe", "--from", "client", "--to", "web"], "no lab is up"),
    (["probe", "--to", "web"], "--from"),
    (["clean", "--bogus"], "unrecognized"),
    (["run", "--json", "/nonexistent/dir/x.json", "default"], "/nonexistent/dir"),
    (["run", "--junit", "/nonexistent/dir/x.xml", "default"], "/nonexistent/dir"),
    (["run", "--pcap", "/proc/version/x", "default"], "/proc/version"),
    (["run", "nosuch-scenario"], "no such scenario"),
    (["run", "--proxy-mode", "ipvs"], "invalid choice"),
    (["bench", "--nosuch"], "unrecognized"),
]
BAD_PROBES = [
    (["--port", "0"], "outside the port range"),
    (["--port", "99999"], "outside the port range"),
    (["--port", "-1"], "--port"),
    (["--port", "http2"], "has no port 'http2'"),
    (["--port", "Bad_Name!"], "neither a port number nor a port name"),
    (["--count", "0"], "outside 1-100000"),
    (["--count", "-1"], "--count"),
    (["--count", "100000000000000000000"], "outside 1-100000"),
    (["--count", "ten"], "outside 1-100000"),
    (["--via", "loadBalancer"], "has no load-balancer address"),
    (["--via", "externalIP"], "has no externalIPs"),
    (["--via", "nodePort", "--node", "node-9"], "no node named 'node-9'"),
    (["--via", "sideways"], "invalid choice"),
    (["--protocol", "UDP"], "is TCP"),
    (["--protocol", "SCTP"], "invalid choice"),
]
BAD_TARGETS = [
    (["--from", "client", "--to", "nosuch"], "no service default/nosuch"),
    (["--from", "nosuch", "--to", "web"], "no client, pod or node named 'nosuch'"),
    (["--from", "edge", "--to", "web"], "no client, pod or node named 'edge'"),
    (["--from", "client", "--address", "999.1.1.1", "--port", "80"], "not an IPv4 address"),
    (["--from", "client", "--address", "example.com", "--port", "80"], "not an IPv4 address"),
    (["--from", "client", "--address", "10.96.0.10"], "needs a port number"),
    (["--from", "client", "--to", "web", "--address", "10.96.0.10"], "not both"),
    (["--from", "client"], "a service or an address"),
]


def refused(private: Private, args: list[str], text: str) -> str | None:
    """None when `testbed ARGS` fails as it must; else what was wrong."""
    started = time.monotonic()
    done = private.tb(*args, timeout=120)
    problems = []
    if done.returncode != 2:
        problems.append(f"exit {done.returncode}")
    if "Traceback" in done.stderr or done.stderr.count("\n") != 1:
        problems.append(f"stderr {done.stderr[-600:]!r}")
    if text not in done.stderr:
        problems.append(f"{text!r} not in {done.stderr.strip()!r}")
    if args[:1] == ["run"] and time.monotonic() - started > 60:
        problems.append("refused only after running")  # a hang-sized bound, not a speed goal
    return f"testbed {' '.join(args)}: {'; '.join(problems)}" if problems else None


def check_all(private: Private, cases: list[tuple[list[str], str]]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(lambda c: refused(private, *c), cases) if f]
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not IS_ROOT, reason="the lab commands check for root first")
def test_every_command_refuses_bad_arguments_without_a_lab(private: Private):
    check_all(private, NO_LAB)
    assert private.namespaces() == set() and private.state_files() == set()


@pytest.mark.lab
def test_bad_arguments_on_a_running_lab(private: Private):
    up = private.tb("up", "default")
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    route = ["probe", lab, "--from", "client", "--to", "web"]
    cases = [([*route, *extra], text) for extra, text in BAD_PROBES]
    cases += [(["probe", lab, *extra], text) for extra, text in BAD_TARGETS]
    cases += [
        (["down", "nosuch"], "no lab 'nosuch'"),
        (["lb", "nosuch"], "no lab 'nosuch'"),
        (["exec", "--lab", lab, "nosuch", "--", "true"], "no namespace 'nosuch'"),
        (["exec", "--lab", lab, "client"], "needs a command"),
        (["rules", lab, "nosuch"], "no node 'nosuch'"),
        (["up", "--foreground", "nosuch-scenario"], "no such scenario"),
    ]
    check_all(private, cases)
    print(f"\nCLI: {len(NO_LAB) + len(cases)} bad invocations, each one line and exit 2")
    assert len(private.namespaces()) == 9  # the lab itself, and nothing else
    down = private.tb("down", lab)
    assert down.returncode == 0, down.stderr


@pytest.mark.lab
def test_down_while_a_probe_runs_ends_the_probe_in_one_line(private: Private):
    up = private.tb("up", "default")
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    probe = subprocess.Popen(
        private.argv("probe", lab, "--from", "client", "--to", "web", "--count", "100000"),
        cwd=ROOT,
        env=private.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    private.procs.append(probe)
    time.sleep(2)
    down = private.tb("down", lab)
    assert down.returncode == 0, down.stderr
    _out, err = probe.communicate(timeout=120)
    assert probe.returncode == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert f"lab {lab} went down" in err, err
    assert private.namespaces() == set() and private.state_files() == set()


@pytest.mark.lab
def test_pcap_never_writes_through_a_planted_link(private: Private, tmp_path):
    victim = tmp_path / "root-only"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    out = tmp_path / "shared"
    planted = out / "default" / "client-via-node-2"
    planted.mkdir(parents=True)
    for point in ("client_eth0", "node-2_eth0", "web-0_eth0", "web-1_eth0"):
        (planted / f"{point}.pcap").symlink_to(victim)
    done = private.tb("run", "-q", "--pcap", str(out), "default")
    assert victim.read_text() == "precious\n"
    assert "a link is refused" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    assert private.namespaces() == set() and private.state_files() == set()


@pytest.mark.lab
@pytest.mark.parametrize("how", [["up", "default", "--foreground"], ["up", "default"]])
def test_a_missing_rule_loader_is_one_line_and_leaves_nothing(private: Private, tmp_path, how):
    """No iptables-restore on PATH: the build fails in one line, exit 2, and tears down."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "nft"):  # the edge's own table needs nft in either proxy mode
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = private.tb(*how, PATH=str(bin_dir))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "iptables-restore" in done.stderr, done.stderr
    assert private.namespaces() == set() and private.state_files() == set()


TOKENS = [
    *("--from", "--to", "--via", "--node", "--port", "--address", "--protocol", "--count"),
    *("client", "web", "web-0", "node-1", "node-9", "edge", "nosuch", "LAB", "", "--", "-x"),
    *("nodePort", "loadBalancer", "externalIP", "clusterIP", "TCP", "UDP", "SCTP"),
    *("0", "-1", "3", "99999", "1e9", "100000000000000000000", "http", "http2", "Bad_Name"),
    *("999.1.1.1", "10.96.0.10", "172.18.0.12", "::1", "example.com", "--proxy-mode", "ipvs"),
]
FUZZ_COMMANDS = ["plan", "down", "ls", "rules", "lb", "probe", "clean"]
FUZZ_EXAMPLES = 150


@pytest.mark.lab
def test_fuzzed_arguments_never_give_a_traceback(private: Private):
    """Random argument lists for each command (on a running lab): 0, 1 or 2 and one line."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    up = private.tb("up", "default")
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    seen: list[tuple[str, int]] = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(FUZZ_COMMANDS), st.lists(st.sampled_from(TOKENS), max_size=6))
    def one(command: str, args: list[str]) -> None:
        if command in ("down", "clean"):  # keep the lab: these may only be refused
            args = [a for a in args if a != "LAB"] + ["--bogus"]
        argv = [command, *(lab if a == "LAB" else a for a in args)]
        done = private.tb(*argv, timeout=120)
        seen.append((command, done.returncode))
        assert done.returncode in (0, 1, 2), (argv, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr, (argv, done.stderr)
        assert done.stderr.count("\n") <= 1, (argv, done.stderr)

    one()
    assert len(private.namespaces()) == 9, "the lab is whole after the fuzzing"
    codes = sorted({code for _, code in seen})
    print(f"\nFUZZ: {len(seen)} random invocations of {len(FUZZ_COMMANDS)} commands, exits {codes}")
    down = private.tb("down", lab)
    assert down.returncode == 0, down.stderr

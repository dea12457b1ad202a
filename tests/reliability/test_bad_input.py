"""Bad input: every malformed or hostile file is refused in one line, fast, creating nothing.

The corpus is tests/bad (each file's first line says what its error must contain) plus
files made here that are too big or too odd to commit (hostile.py): huge counts,
billion laughs, deep nesting, broken encodings, 50 MB files, names over the limits.
Each is loaded in-process (timed: the loader must answer in under a second) and, as
root, given to the real `testbed run` and `testbed up`: exit 2, exactly one line on
stderr naming file:line (and the field, where the error is about one), nothing on
stdout, and no namespace or state file made.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.core import scenario
from testbed.core.load import replan
from testbed.core.scenario import ScenarioError
from tests.support.commands import LIBRARY, ROOT
from tests.support.hostile import HOSTILE
from tests.support.private import IS_ROOT, Private
from tests.support.world import netns_names

pytestmark = pytest.mark.reliability

BAD = sorted((ROOT / "tests" / "bad").glob("*.yaml"))
# Errors about the file as a whole (syntax, encoding, size, structure) have no field.
FILE_LEVEL = re.compile(
    r"^(invalid YAML|not UTF-8|nested deeper|more than \d+ (values|documents)|alias \*"
    r"|duplicate key|mapping key|unsupported YAML tag|no Lab object|a document must be|file is"
    r"|number '\d+' does not fit|input is)"
)
# Errors that are about one field but do not name it yet (the planner reports them by
# the pod's name). Listed so a new one fails here and a fixed one must be removed.
NO_FIELD_YET = {"pod-ip-outside-node-cidr"}
# A guard against blow-ups (an alias bomb, quadratic checks), not a speed goal: the
# loader's speed is the benchmark's ("start-up: testbed plan default"). CPU seconds of
# this process, so a machine busy with other work does not make it fail.
LOADER_SECONDS = 5.0

SELECTS_NOTHING = """apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: selects-nothing}
spec:
  nodes: 1
  clients: [{name: client, ip: 203.0.113.10}]
  probes:
    - {name: p, from: client, to: {service: web, via: nodePort, node: node-1}, count: 5,
       expect: {outcome: rejected}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: nobody-has-this-label}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
"""


def expected_text(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[Path, str]]]:
    """(path, text its error must contain) for every bad file, the 50 MB ones included."""
    made = tmp_path_factory.mktemp("hostile")
    files = [(path, expected_text(path)) for path in BAD]
    files += [(h.write(made), h.expect) for h in HOSTILE]
    files.append((Path("/dev/zero"), "refusing to load"))
    fifo = made / "fifo.yaml"  # opened without blocking: refused at once, not read forever
    os.mkfifo(fifo)
    files.append((fifo, "file is a FIFO (named pipe), not a regular file; refusing to load"))
    yield files
    shutil.rmtree(made, ignore_errors=True)


def load_error(path: Path) -> tuple[ScenarioError | None, float]:
    """The loader's error for `path` (what the CLI runs: load, then plan) and its seconds."""
    started = time.process_time()
    try:
        replan(scenario.load(path), None)
    except ScenarioError as exc:
        return exc, time.process_time() - started
    return None, time.process_time() - started


def test_the_loader_refuses_every_bad_file_in_one_line_without_blowing_up(corpus):
    assert len(corpus) >= 60
    messages: dict[str, str] = {}
    fields = 0
    no_field: set[str] = set()
    about_a_field: set[str] = set()
    slowest = (0.0, "")
    for path, expect in corpus:
        error, seconds = load_error(path)
        assert error is not None, f"{path} loaded"
        text = str(error)
        assert "\n" not in text and "\r" not in text and len(text) < 400, text
        assert re.match(re.escape(str(path)) + r":\d+: ", text), text
        assert expect in text, (path, text)
        assert seconds < LOADER_SECONDS, f"{path}: {seconds:.2f} s"
        slowest = max(slowest, (seconds, path.name))
        if error.path:
            fields += 1
        else:
            no_field.add(path.stem)
            if not FILE_LEVEL.match(error.reason):
                about_a_field.add(path.stem)
        messages[str(path)] = f"{error.path}: {error.reason}" if error.path else error.reason
    assert about_a_field == NO_FIELD_YET, "errors about one field must name it"
    counts = collections.Counter(messages.values())
    own = sum(1 for m in messages.values() if counts[m] == 1)
    shapes = {re.sub(r"'[^']*'|[\d,.]+", "#", m) for m in messages.values()}
    print(
        f"\nBAD INPUT: {len(corpus)} files ({len(BAD)} in tests/bad, {len(HOSTILE)} made here,"
        f" /dev/zero), each with the error it expects; {len(counts)} distinct messages,"
        f" {own} files with a message of their own, {len(shapes)} distinct message shapes;"
        f" {fields} name a field path, {len(no_field)} name none;"
        f" slowest {slowest[0] * 1000:.0f} ms ({slowest[1]})"
    )


FUZZ_EXAMPLES = 1000
SEEDS = [p.read_bytes() for p in [*sorted(LIBRARY.glob("*.yaml")), *BAD]]


@st.composite
def mutated(draw) -> bytes:
    """A library or bad file with a few byte-level edits: flips, cuts, copies, junk."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        size = draw(st.integers(1, 64))
        action = draw(st.sampled_from(["flip", "cut", "copy", "junk", "truncate"]))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at : at + size]
        elif action == "copy":
            data[at:at] = data[at : at + size] * draw(st.integers(1, 50))
        elif action == "junk":
            data[at:at] = draw(st.binary(min_size=1, max_size=size))
        else:
            del data[at:]
    return bytes(data)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_files_load_or_fail_in_one_line_quickly(data: bytes):
    started = time.process_time()
    try:
        replan(scenario.loads(data, "fuzz.yaml"), None)
    except ScenarioError as exc:
        text = str(exc)
        assert "\n" not in text and re.match(r"fuzz\.yaml:\d+: ", text), text
    assert time.process_time() - started < LOADER_SECONDS


def test_a_selector_matching_nothing_is_not_an_error(tmp_path: Path, private: Private):
    path = tmp_path / "selects-nothing.yaml"
    path.write_text(SELECTS_NOTHING)
    planned = replan(scenario.load(path), None)
    assert planned.services[0].ports[0].endpoints == ()
    shown = private.tb("plan", str(path))
    # no error, but said where the user looks: a selector typo must not pass in silence
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == (
        f"warning: {path}:16: spec.selector: Service default/web selects no pod, "
        "so it has no endpoints\n"
    )
    if IS_ROOT:
        run = private.tb("run", "-q", str(path))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "PASS" in run.stdout
        assert private.namespaces() == set()


def _refused(private: Private, index: int, command: str, path: Path) -> str | None:
    """Run one bad file through the CLI with a prefix and state dir of its own; None if ok."""
    prefix = f"{private.prefix}b{index}{command[0]}-"
    state = private.state_dir / f"{index}-{command}"
    env = dict(private.env, TESTBED_NS_PREFIX=prefix, TESTBED_STATE_DIR=str(state))
    done = subprocess.run(
        private.argv(command, str(path)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    problems = []
    if done.returncode != 2:
        problems.append(f"exit {done.returncode}")
    one_line = done.stderr.count("\n") == 1 and done.stderr.endswith("\n")
    if not one_line or not re.match(rf"testbed: {re.escape(str(path))}:\d+: ", done.stderr):
        problems.append(f"stderr {done.stderr[:300]!r}")
    if done.stdout:
        problems.append(f"stdout {done.stdout[:200]!r}")
    if any(n.startswith(prefix) for n in netns_names()):
        problems.append("made a namespace")
    if os.path.exists(state):
        problems.append("made a state directory")
    return f"{command} {path.name}: {'; '.join(problems)}" if problems else None


@pytest.mark.lab
def test_the_cli_refuses_every_bad_file_with_exit_2_and_creates_nothing(corpus, private):
    jobs = [(i, command, path) for i, (path, _) in enumerate(corpus) for command in ("run", "up")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(lambda job: _refused(private, *job), jobs) if f]
    assert not failures, "\n".join(failures)
    assert private.namespaces() == set()
    print(f"\nCLI: {len(jobs)} refusals (run and up), each exit 2 with one line, nothing made")

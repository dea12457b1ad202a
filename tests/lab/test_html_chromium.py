"""The HTML report of real runs, opened in headless Chromium with no network at all.

Chromium runs as root in a temporary directory, inside a network namespace of its own
(`unshare --net`: the page cannot fetch anything even if it tried), and never opens a
port (no remote debugging: `--screenshot` and `--dump-dom` only). The checks: the
screenshot is a picture (many colours, the report's green and red among them), the DOM
has one path drawing per probe, and the browser logged no console message (the page has
no script, so any message is a fault; a control page shows the capture works).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.support.commands import run_testbed

pytestmark = pytest.mark.lab

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-extensions",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":(INFO|WARNING|ERROR):CONSOLE[:(]")
INTERNAL = re.compile(r"source: (chrome|chrome-untrusted|devtools)://")
GREEN, RED, ORANGE = (0x1E, 0x84, 0x49), (0xC0, 0x39, 0x2B), (0xD3, 0x54, 0x00)


def chromium() -> str:
    """Debian's chromium, installed when missing (as scripts/setup does); else skip."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            capture_output=True,
            timeout=900,
            env=env,
            check=False,
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and `apt-get install chromium` did not install it")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing: chromium must run without a network")
    return found


def browse(tmp_path, page, *how: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(profile)}
    argv = ["unshare", "--net", chromium(), *FLAGS, f"--user-data-dir={profile}", *how]
    return subprocess.run(
        [*argv, f"file://{page}"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def console_lines(stderr: str) -> list[str]:
    """The console messages of pages we opened; the browser's own (chrome://) are not ours."""
    return [
        line for line in stderr.splitlines() if CONSOLE.search(line) and not INTERNAL.search(line)
    ]


def colours(png) -> dict[tuple[int, int, int], int]:
    from PIL import Image

    with Image.open(png) as image:
        counted = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return {rgb: n for n, rgb in counted}


def test_the_console_capture_sees_a_page_s_error(tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><script>console.error("testbed-control")</script>')
    done = browse(tmp_path, control, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert any("testbed-control" in line for line in console_lines(done.stderr))


@pytest.mark.parametrize(
    ("scenario", "must_see"),
    [
        ("cluster-to-local-outage", (GREEN, RED)),
        ("lb-cluster-vs-local-balance", (GREEN,)),
        ("no-snat-broken-return", (GREEN, ORANGE)),
    ],
)
def test_the_report_of_a_real_run_in_chromium(tmp_path, scenario, must_see):
    page, report = tmp_path / "report.html", tmp_path / "report.json"
    run = run_testbed("run", "-q", scenario, "--html", str(page), "--json", str(report))
    assert run.returncode == 0, run.stdout + run.stderr
    probes = [p["name"] for s in json.loads(report.read_text())["scenarios"] for p in s["probes"]]

    dom = browse(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = re.findall(r'<svg class="path" data-probe="([^"]*)"', dom.stdout)
    assert drawn == probes or sorted(drawn) == sorted(probes)
    assert len(drawn) == len(probes) > 0
    assert console_lines(dom.stderr) == []

    shot = tmp_path / "shot.png"
    done = browse(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,6000")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert console_lines(done.stderr) == []
    seen = colours(shot)
    assert len(seen) > 200, f"the screenshot has only {len(seen)} colours: blank?"
    for rgb in must_see:
        assert seen.get(rgb, 0) > 200, f"too little of {rgb} in the screenshot"
    if os.environ.get("TESTBED_KEEP_SCREENSHOTS"):
        keep = os.environ["TESTBED_KEEP_SCREENSHOTS"]
        shutil.copy(shot, os.path.join(keep, f"{scenario}.png"))
        shutil.copy(page, os.path.join(keep, f"{scenario}.html"))

"""Where the built upstream binaries are, for a lab that runs them (upstream mode).

`testbed upstream build` (testbed/upstream.py) fills the cache; a lab only reads it.
The cache's location follows the same rule as the build's, so both agree without the
lab importing the build tool (a front end).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from testbed.core.errors import LabError

CACHE_ENV = "TESTBED_UPSTREAM_CACHE"
SYSTEM_CACHE = Path("/var/cache/kubeproxy-testbed/upstream")
PINS = Path(__file__).resolve().parent.parent.parent / "upstream"  # the repo's pinned modules
BINARIES = ("kube-proxy", "kube-apiserver", "kubectl", "etcd")
_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")


def cache_root() -> Path:
    """TESTBED_UPSTREAM_CACHE, else /var/cache/... for root, else the user's cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubeproxy-testbed" / "upstream"


def _key(version: str) -> tuple[int, ...]:
    found = _VERSION.fullmatch(version)
    return tuple(map(int, found.groups())) if found else (-1,)


def pinned() -> list[str]:
    """The versions the checkout pins (empty when it ships without upstream/)."""
    found = [p.parent.name.removeprefix("k8s-") for p in PINS.glob("k8s-v*/go.mod")]
    return sorted((v for v in found if _VERSION.fullmatch(v)), key=_key)


def built(root: Path | None = None) -> list[str]:
    """The versions whose four binaries are in the cache, oldest first."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    found = [
        d.name
        for d in root.iterdir()
        if _VERSION.fullmatch(d.name) and all((d / "bin" / b).is_file() for b in BINARIES)
    ]
    return sorted(found, key=_key)


@dataclass(frozen=True)
class Binaries:
    version: str
    bin: Path

    def path(self, name: str) -> str:
        return str(self.bin / name)


def find(version: str | None) -> Binaries:
    """The binaries of `version` (None or "": the newest built); a LabError says how to build."""
    root = cache_root()
    have = built(root)
    if not version:
        if not have:
            raise LabError(
                "upstream mode needs built Kubernetes binaries: run `testbed upstream build`"
                f" (cache {root} holds none)"
            )
        version = have[-1]
    pins = pinned()
    if pins and version not in pins:
        raise LabError(
            f"Kubernetes {version} is not pinned (pinned: {', '.join(pins)});"
            " see docs/upstream.md to pin one"
        )
    if version not in have:
        raise LabError(
            f"Kubernetes {version} is not built: run `testbed upstream build {version}`"
            f" (`testbed upstream ls` lists what is built in {root})"
        )
    return Binaries(version, root / version / "bin")

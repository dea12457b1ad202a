"""Pinned upstream binaries: kube-proxy, kube-apiserver, kubectl and etcd, built from source.

k8s.io/kubernetes cannot be `go install`ed: its go.mod points every k8s.io/* staging
module at ./staging. So each pinned version is a small Go module of ours in
`upstream/k8s-vX.Y.Z/` that requires k8s.io/kubernetes vX.Y.Z, replaces each staging
module with its published k8s.io/<name> v0.Y.Z, copies the release's `go` and `godebug`
lines, and names the three commands as `tool`s so `go mod tidy` keeps their packages;
its committed go.sum is the pin. etcd is a few lines around etcd's embed package
(`upstream/etcd/main.go`), at the version the release's go.mod selects.

Builds go into a cache outside the checkout with their own GOMODCACHE and GOCACHE, so
they never touch the user's Go caches and a cold build can be measured honestly.
The pure parts (versions, go.mod text, ldflags, paths) need neither root nor Go.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.core.errors import TestbedError, WorkFailed

REPO = Path(__file__).resolve().parent.parent
PINS = REPO / "upstream"
COMMANDS = ("kube-proxy", "kube-apiserver", "kubectl")
BINARIES = (*COMMANDS, "etcd")
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
CACHE_ENV = "TESTBED_UPSTREAM_CACHE"
SYSTEM_CACHE = Path("/var/cache/kubeproxy-testbed/upstream")
STAMP = "build.json"


class UpstreamError(TestbedError):
    """Bad input or a missing tool: the command prints it on one line and exits 2."""


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def staging(self) -> str:
        """The tag of the published staging modules (k8s.io/api etc.) of this release."""
        return f"v0.{self.minor}.{self.patch}"


_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> Version:
    """'v1.34.4' or '1.34.4'; pre-releases are not pinned, so they are refused."""
    match = _VERSION.fullmatch(text.strip())
    if not match:
        raise UpstreamError(f"{text!r} is not a Kubernetes version (expected vMAJOR.MINOR.PATCH)")
    return Version(*(int(g) for g in match.groups()))


_GO = re.compile(r"go(\d+)\.(\d+)(?:\.(\d+))?")


def parse_go_version(text: str) -> tuple[int, int, int]:
    """(1, 26, 8) from `go version` output or a go.mod `go 1.24.0` directive."""
    match = _GO.search(text) or re.search(r"^go (\d+)\.(\d+)(?:\.(\d+))?", text, re.M)
    if not match:
        raise UpstreamError(f"cannot read a Go version from {text.strip()!r}")
    return (int(match[1]), int(match[2]), int(match[3] or 0))


# -- go.mod ------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """What our module copies from k8s.io/kubernetes' own go.mod."""

    go: str  # the `go` directive, e.g. "1.24.0"
    godebug: tuple[str, ...]  # e.g. ("default=go1.24",)
    staging: tuple[str, ...]  # module paths replaced by ./staging/src/...


def parse_release(go_mod: str) -> Release:
    """Read the go directive, godebug settings and staging modules of kubernetes' go.mod."""
    go = re.search(r"^go (\S+)", go_mod, re.M)
    if not go:
        raise UpstreamError("kubernetes go.mod has no go directive")
    godebug = re.findall(r"^godebug (\S+)", go_mod, re.M)
    block = re.search(r"^godebug \(\n(.*?)^\)", go_mod, re.M | re.S)
    if block:
        godebug += [line.strip() for line in block[1].splitlines() if line.strip()]
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/\1\s*$", go_mod, re.M)
    if not staging:
        raise UpstreamError("kubernetes go.mod replaces no staging modules")
    return Release(go[1], tuple(godebug), tuple(sorted(staging)))


def module_dir(version: Version) -> str:
    return f"k8s-{version}"


def render_go_mod(version: Version, release: Release) -> str:
    """Our module's go.mod before `go mod tidy` fills in the indirect requirements."""
    lines = [
        f"// Kubernetes {version} built by kubeproxy-testbed (python -m testbed.upstream pin).",
        f"module kubeproxy-testbed/upstream/{module_dir(version)}",
        "",
        f"go {release.go}",
        "",
    ]
    lines += [f"godebug {setting}" for setting in release.godebug]
    lines += ["", "tool ("]
    lines += [f"\tk8s.io/kubernetes/cmd/{command}" for command in COMMANDS]
    lines += [")", "", f"require k8s.io/kubernetes {version}", "", "replace ("]
    lines += [f"\t{module} => {module} {version.staging}" for module in release.staging]
    lines += [")", ""]
    return "\n".join(lines)


def ldflags(version: Version, build_date: str) -> str:
    """The -X flags of hack/lib/version.sh, so `--version` prints the real release."""
    values = {
        "gitVersion": str(version),
        "gitMajor": str(version.major),
        "gitMinor": str(version.minor),
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for package in VERSION_PACKAGES:
        flags += [f"-X {package}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


# -- where things are ---------------------------------------------------------------


def cache_root(env: dict[str, str] | None = None, euid: int | None = None) -> Path:
    """TESTBED_UPSTREAM_CACHE, else /var/cache/... for root, else the user's cache dir."""
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_CACHE
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "/tmp")) / ".cache")
    return Path(base) / "kubeproxy-testbed" / "upstream"


@dataclass(frozen=True)
class Paths:
    root: Path
    version: Version

    @property
    def dir(self) -> Path:
        return self.root / str(self.version)

    @property
    def src(self) -> Path:
        return self.dir / "src"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def stamp(self) -> Path:
        return self.dir / STAMP

    @property
    def gomodcache(self) -> Path:
        return self.root / "go" / "mod"

    @property
    def gocache(self) -> Path:
        return self.root / "go" / "build"

    def binary(self, name: str) -> Path:
        return self.bin / name


def pinned(pins: Path = PINS) -> list[Version]:
    """The versions with a committed module, oldest first."""
    found = []
    for go_mod in pins.glob("k8s-v*/go.mod"):
        try:
            found.append(parse_version(go_mod.parent.name.removeprefix("k8s-")))
        except UpstreamError:
            continue
    return sorted(found)


def required_go(version: Version, pins: Path = PINS) -> tuple[int, int, int]:
    return parse_go_version((pins / module_dir(version) / "go.mod").read_text())


def default_version(
    versions: list[Version], go: tuple[int, int, int], pins: Path = PINS
) -> Version:
    """The newest pinned version whose go directive this Go satisfies."""
    usable = [v for v in versions if required_go(v, pins) <= go]
    if not usable:
        raise UpstreamError(f"no pinned Kubernetes version builds with go{'.'.join(map(str, go))}")
    return max(usable)


def choose(text: str | None, go: tuple[int, int, int], pins: Path = PINS) -> Version:
    versions = pinned(pins)
    if text is None:
        return default_version(versions, go, pins)
    version = parse_version(text)
    if version not in versions:
        known = ", ".join(map(str, versions)) or "none"
        raise UpstreamError(f"Kubernetes {version} is not pinned (pinned: {known})")
    need = required_go(version, pins)
    if need > go:
        raise UpstreamError(
            f"Kubernetes {version} needs go{'.'.join(map(str, need))}, "
            f"this machine has go{'.'.join(map(str, go))}"
        )
    return version


def inputs_digest(version: Version, go_version: str, pins: Path = PINS) -> str:
    """What a build depends on: the pin's files, the etcd source and the Go release."""
    digest = hashlib.sha256(go_version.encode())
    for path in (
        pins / module_dir(version) / "go.mod",
        pins / module_dir(version) / "go.sum",
        pins / "etcd" / "main.go",
    ):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# -- Go ---------------------------------------------------------------------------


def find_go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )
    if go is None:
        raise UpstreamError(
            "go not found: install Go (1.24 or newer, https://go.dev/dl) or put it on PATH"
        )
    return go


def machine_go() -> tuple[str, str]:
    """(path of go, its `go version` line)."""
    go = find_go()
    done = subprocess.run([go, "version"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UpstreamError(f"{go} version failed: {done.stderr.strip()}")
    return go, done.stdout.strip()


def go_env(paths: Paths) -> dict[str, str]:
    """The caller's environment (GOFLAGS, GOMAXPROCS, proxies) with our own caches."""
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(paths.gomodcache),
        GOCACHE=str(paths.gocache),
        CGO_ENABLED="0",
        GOTOOLCHAIN="local",
        GOWORK="off",
        # a module cache of read-only files is hard to remove: keep it writable
        GOFLAGS=f"{env.get('GOFLAGS', '')} -modcacherw".strip(),
    )
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise WorkFailed(f"{' '.join(argv[:3])} failed in {cwd}:\n{tail}")
    return done.stdout


def _peak_mib() -> float:
    """Largest resident set of any finished child so far (the compiler or the linker)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def is_built(paths: Paths, digest: str) -> bool:
    try:
        stamp = json.loads(paths.stamp.read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("inputs") == digest and all(paths.binary(b).is_file() for b in BINARIES)


def build(text: str | None, out=sys.stdout) -> Version:
    """Build (or find cached) the four binaries of one pinned version; one line per step."""
    go, go_version = machine_go()
    version = choose(text, parse_go_version(go_version))
    paths = Paths(cache_root(), version)
    digest = inputs_digest(version, go_version)
    if is_built(paths, digest):
        print(f"Kubernetes {version}: cached in {paths.bin}", file=out)
        return version
    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
        lock = open(paths.dir / ".lock", "w")  # noqa: SIM115 (held until the build ends)
    except OSError as exc:
        raise UpstreamError(f"cannot write {paths.dir}: {exc.strerror} (set {CACHE_ENV})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Kubernetes {version}: another build is running, waiting for it", file=out)
            fcntl.flock(lock, fcntl.LOCK_EX)
            if is_built(paths, digest):
                print(f"Kubernetes {version}: cached in {paths.bin}", file=out)
                return version
        _build(go, go_version, version, paths, digest, out)
    return version


def _build(go: str, go_version: str, version: Version, paths: Paths, digest: str, out) -> None:
    pin = PINS / module_dir(version)
    shutil.rmtree(paths.src, ignore_errors=True)
    (paths.src / "etcd").mkdir(parents=True)
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(pin / name, paths.src / name)
    shutil.copyfile(PINS / "etcd" / "main.go", paths.src / "etcd" / "main.go")
    paths.bin.mkdir(parents=True, exist_ok=True)
    env = go_env(paths)
    print(f"Kubernetes {version} with {go_version.split()[2]} into {paths.bin}", file=out)
    started = time.monotonic()

    def step(label: str, argv: list[str]) -> None:
        print(f"  {label:<16}", end=" ", file=out, flush=True)
        begin = time.monotonic()
        _run(argv, paths.src, env)
        print(f"{time.monotonic() - begin:7.1f} s  peak {_peak_mib():6.0f} MiB", file=out)

    step("modules", [go, "mod", "download"])
    info = json.loads(_run([go, "list", "-m", "-json", "k8s.io/kubernetes"], paths.src, env))
    flags = ldflags(version, info.get("Time", ""))
    common = ["-mod=readonly", "-trimpath", "-buildvcs=false"]
    for command in COMMANDS:
        target = ["-o", str(paths.binary(command)), f"k8s.io/kubernetes/cmd/{command}"]
        step(command, [go, "build", *common, "-ldflags", flags, *target])
    step(
        "etcd",
        [go, "build", *common, "-ldflags", "-s -w", "-o", str(paths.binary("etcd")), "./etcd"],
    )
    paths.stamp.write_text(
        json.dumps({"version": str(version), "go": go_version, "inputs": digest}, indent=1) + "\n"
    )
    print(f"  {'total':<16} {time.monotonic() - started:7.1f} s", file=out)


# -- listing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    version: Version
    binaries: dict[str, int]  # name -> bytes
    complete: bool


def built(root: Path) -> list[Built]:
    found = []
    for directory in sorted(root.glob("v*")):
        try:
            version = parse_version(directory.name)
        except UpstreamError:
            continue
        sizes = {
            b: (directory / "bin" / b).stat().st_size
            for b in BINARIES
            if (directory / "bin" / b).is_file()
        }
        complete = (directory / STAMP).is_file() and len(sizes) == len(BINARIES)
        found.append(Built(version, sizes, complete))
    return sorted(found, key=lambda b: b.version)


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def describe(items: list[Built], root: Path) -> str:
    if not items:
        return f"nothing built in {root} (testbed upstream build)"
    lines = []
    for item in items:
        parts = ", ".join(f"{name} {mib(size)}" for name, size in item.binaries.items())
        state = "" if item.complete else "  (incomplete: being built, or interrupted)"
        total = mib(sum(item.binaries.values()))
        lines.append(f"{item.version}  {total:>8}  {parts}{state}")
    return "\n".join(lines)


# -- pinning a new version (maintainers) ---------------------------------------------


def pin(text: str, pins: Path = PINS) -> Path:
    """Write upstream/k8s-vX/{go.mod,go.sum} for a release: render, then `go mod tidy`."""
    version = parse_version(text)
    go = find_go()
    paths = Paths(cache_root(), version)
    env = go_env(paths)
    scratch = paths.root / "pin" / str(version)
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "etcd").mkdir(parents=True)
    found = json.loads(
        _run([go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], scratch, env)
    )
    release = parse_release(Path(found["GoMod"]).read_text())
    (scratch / "go.mod").write_text(render_go_mod(version, release))
    shutil.copyfile(pins / "etcd" / "main.go", scratch / "etcd" / "main.go")
    _run([go, "mod", "tidy"], scratch, env)
    target = pins / module_dir(version)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(scratch / name, target / name)
    shutil.rmtree(scratch, ignore_errors=True)
    return target


# -- command line -------------------------------------------------------------------


def cmd_upstream(args: argparse.Namespace) -> int:
    """Errors go to the CLI's exit-code table: UpstreamError exits 2, a failed `go` 1."""
    if args.action == "build":
        build(args.version)
    elif args.action == "ls":
        root = cache_root()
        print(describe(built(root), root))
    elif args.action == "pin":
        print(f"pinned {pin(args.version)}")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("upstream", help="build and list pinned upstream Kubernetes binaries")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="build kube-proxy, kube-apiserver, kubectl and etcd")
    b.add_argument("version", nargs="?", help="vX.Y.Z (default: the newest that builds here)")
    actions.add_parser("ls", help="list the versions built in the cache")
    b = actions.add_parser("pin", help="maintainers: pin a new release (needs network and Go)")
    b.add_argument("version", help="vX.Y.Z")
    p.set_defaults(func=cmd_upstream)


if __name__ == "__main__":
    # `python -m testbed.upstream pin VERSION` (the maintainers' spelling) is `testbed upstream
    # pin VERSION`, through the console script's entry and its exit-code table
    from testbed import entry

    sys.exit(entry.main(["upstream", *sys.argv[1:]]))

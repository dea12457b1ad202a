"""Pinned upstream binaries: the pure parts (versions, go.mod, ldflags, paths), no Go, no root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed import cli, upstream
from testbed.upstream import Paths, UpstreamError, Version

KUBERNETES_GO_MOD = """\
// This is a generated file. Do not edit directly.
module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
\tk8s.io/klog/v2 v2.130.1
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
)
"""


def test_versions_parse_with_or_without_v_and_order_numerically():
    assert upstream.parse_version("v1.34.4") == Version(1, 34, 4)
    assert upstream.parse_version("1.37.2") == Version(1, 37, 2)
    assert str(Version(1, 34, 4)) == "v1.34.4"
    assert Version(1, 34, 4).staging == "v0.34.4"
    assert Version(1, 9, 0) < Version(1, 10, 0)


@pytest.mark.parametrize("text", ["", "1.34", "v1.34.4-rc.0", "latest", "v1.34.x"])
def test_bad_versions_are_refused_in_one_line(text):
    with pytest.raises(UpstreamError, match="not a Kubernetes version"):
        upstream.parse_version(text)


def test_go_versions_from_go_version_output_and_go_mod():
    assert upstream.parse_go_version("go version go1.26.8 linux/amd64") == (1, 26, 8)
    assert upstream.parse_go_version("module x\n\ngo 1.24.0\n") == (1, 24, 0)
    assert upstream.parse_go_version("go 1.25\n") == (1, 25, 0)
    with pytest.raises(UpstreamError):
        upstream.parse_go_version("no version here")


def test_release_reads_go_godebug_and_staging_modules():
    release = upstream.parse_release(KUBERNETES_GO_MOD)
    assert release.go == "1.24.0"
    assert release.godebug == ("default=go1.24",)
    assert release.staging == ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go")


def test_release_without_staging_is_refused():
    with pytest.raises(UpstreamError, match="staging"):
        upstream.parse_release("module k8s.io/kubernetes\n\ngo 1.24.0\n")


def test_go_mod_requires_kubernetes_and_replaces_staging_with_published_modules():
    text = upstream.render_go_mod(Version(1, 34, 4), upstream.parse_release(KUBERNETES_GO_MOD))
    assert "module kubeproxy-testbed/upstream/k8s-v1.34.4" in text
    assert "\ngo 1.24.0\n" in text
    assert "\ngodebug default=go1.24\n" in text
    assert "require k8s.io/kubernetes v1.34.4" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.34.4" in text
    assert "./staging" not in text
    tools = re.findall(r"\tk8s\.io/kubernetes/cmd/(\S+)", text)
    assert sorted(tools) == sorted(upstream.COMMANDS)


def test_ldflags_set_the_version_in_both_version_packages():
    flags = upstream.ldflags(Version(1, 35, 4), "2026-01-01T00:00:00Z")
    for package in upstream.VERSION_PACKAGES:
        assert f"-X {package}.gitVersion=v1.35.4" in flags
        assert f"-X {package}.gitMinor=35" in flags
        assert f"-X {package}.buildDate=2026-01-01T00:00:00Z" in flags
    assert flags.startswith("-s -w ")


def test_cache_is_outside_the_checkout():
    assert upstream.cache_root({upstream.CACHE_ENV: "/x"}, euid=1000) == Path("/x")
    assert upstream.cache_root({}, euid=0) == upstream.SYSTEM_CACHE
    home = upstream.cache_root({"HOME": "/home/u"}, euid=1000)
    assert home == Path("/home/u/.cache/kubeproxy-testbed/upstream")
    xdg = upstream.cache_root({"XDG_CACHE_HOME": "/c"}, euid=1000)
    assert xdg == Path("/c/kubeproxy-testbed/upstream")
    paths = Paths(Path("/c"), Version(1, 34, 4))
    assert paths.binary("kube-proxy") == Path("/c/v1.34.4/bin/kube-proxy")
    assert paths.gomodcache == Path("/c/go/mod")
    assert paths.gocache == Path("/c/go/build")


def test_committed_pins_cover_two_minor_versions():
    versions = upstream.pinned()
    assert len({v.minor for v in versions}) >= 2


@pytest.mark.parametrize("version", upstream.pinned(), ids=str)
def test_each_committed_pin_is_the_rendered_module_tidied(version):
    """The go.mod is what render_go_mod wrote; `go mod tidy` only added requirements."""
    pin = upstream.PINS / upstream.module_dir(version)
    go_mod = (pin / "go.mod").read_text()
    go_sum = (pin / "go.sum").read_text()
    staging = re.findall(r"^\t(k8s\.io/\S+) => \1 (\S+)$", go_mod, re.M)
    release = upstream.Release(
        go=re.search(r"^go (\S+)", go_mod, re.M)[1],
        godebug=tuple(re.findall(r"^godebug (\S+)", go_mod, re.M)),
        staging=tuple(sorted(m for m, _ in staging)),
    )
    rendered = upstream.render_go_mod(version, release)
    for line in rendered.splitlines():
        if line.startswith(("module", "go ", "godebug", "\tk8s.io/")):
            assert line in go_mod.splitlines()
    assert {tag for _, tag in staging} == {version.staging}
    assert re.search(rf"^\tk8s\.io/kubernetes {version}( // indirect)?$", go_mod, re.M)
    assert f"k8s.io/kubernetes {version} h1:" in go_sum
    assert re.search(r"^\tgo\.etcd\.io/etcd/server/v3 v3\.", go_mod, re.M)


def test_default_is_the_newest_pin_this_go_can_build():
    versions = upstream.pinned()
    newest = upstream.default_version(versions, (1, 99, 0))
    assert newest == max(versions)
    old_go = upstream.required_go(min(versions))
    usable = [v for v in versions if upstream.required_go(v) <= old_go]
    assert upstream.default_version(versions, old_go) == max(usable)
    with pytest.raises(UpstreamError, match="no pinned"):
        upstream.default_version(versions, (1, 20, 0))


def test_unknown_version_names_the_pinned_ones():
    with pytest.raises(UpstreamError, match=r"v1\.30\.0 is not pinned \(pinned: v1\.3"):
        upstream.choose("v1.30.0", (1, 26, 8))


def test_a_version_too_new_for_this_go_is_refused():
    newest = max(upstream.pinned())
    with pytest.raises(UpstreamError, match="needs go"):
        upstream.choose(str(newest), (1, 20, 0))


def test_inputs_digest_follows_the_go_release():
    version = max(upstream.pinned())
    one = upstream.inputs_digest(version, "go version go1.26.8 linux/amd64")
    two = upstream.inputs_digest(version, "go version go1.26.9 linux/amd64")
    assert one != two


def test_ls_lists_versions_sizes_and_incomplete_builds(tmp_path):
    for name in upstream.BINARIES:
        (tmp_path / "v1.34.4" / "bin").mkdir(parents=True, exist_ok=True)
        (tmp_path / "v1.34.4" / "bin" / name).write_bytes(b"\0" * 2**20)
    (tmp_path / "v1.34.4" / upstream.STAMP).write_text("{}")
    (tmp_path / "v1.37.2" / "bin").mkdir(parents=True)
    (tmp_path / "v1.37.2" / "bin" / "kubectl").write_bytes(b"\0")
    (tmp_path / "go").mkdir()
    items = upstream.built(tmp_path)
    assert [str(i.version) for i in items] == ["v1.34.4", "v1.37.2"]
    assert items[0].complete and not items[1].complete
    text = upstream.describe(items, tmp_path)
    assert "v1.34.4" in text and "kube-proxy 1 MiB" in text and "4 MiB" in text
    assert "incomplete" in text.splitlines()[1]
    assert "nothing built" in upstream.describe([], tmp_path)


def test_cli_unknown_version_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(upstream, "machine_go", lambda: ("go", "go version go1.26.8 linux/amd64"))
    assert cli.main(["upstream", "build", "v1.30.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "v1.30.0 is not pinned" in err


def test_cli_missing_go_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(upstream.os, "access", lambda *_: False)
    assert cli.main(["upstream", "build"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "go not found" in err


def test_cli_ls_with_an_empty_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(upstream.CACHE_ENV, str(tmp_path))
    assert cli.main(["upstream", "ls"]) == 0
    assert "nothing built" in capsys.readouterr().out


def test_cli_unwritable_cache_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(upstream, "machine_go", lambda: ("go", "go version go1.26.8 linux/amd64"))
    monkeypatch.setenv(upstream.CACHE_ENV, "/proc/kubeproxy-testbed")
    assert cli.main(["upstream", "build"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write /proc/kubeproxy-testbed/v" in err


def test_go_runs_with_our_caches_and_keeps_the_callers_flags(monkeypatch):
    monkeypatch.setenv("GOFLAGS", "-p=1")
    env = upstream.go_env(Paths(Path("/c"), Version(1, 34, 4)))
    assert env["GOMODCACHE"] == "/c/go/mod" and env["GOCACHE"] == "/c/go/build"
    assert env["GOFLAGS"] == "-p=1 -modcacherw"
    assert env["CGO_ENABLED"] == "0" and env["GOTOOLCHAIN"] == "local"

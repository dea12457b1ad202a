"""Report files never go through a link planted in a shared output directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.core import outfiles


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def write(top: Path, *parts: str, name: str = "x.pcap") -> None:
    folder = outfiles.directory(str(top), *parts)
    try:
        with outfiles.create(folder, name, name) as handle:
            handle.write(b"pcap data")
    finally:
        os.close(folder)


def test_a_plain_tree_is_made_and_written(tmp_path: Path):
    write(tmp_path / "out", "scenario", "probe")
    assert (tmp_path / "out" / "scenario" / "probe" / "x.pcap").read_bytes() == b"pcap data"
    write(tmp_path / "out", "scenario", "probe")  # again: overwritten, still fine
    assert (tmp_path / "out" / "scenario" / "probe" / "x.pcap").read_bytes() == b"pcap data"


def test_a_planted_file_link_is_refused(tmp_path: Path, victim: Path):
    folder = tmp_path / "out" / "scenario" / "probe"
    folder.mkdir(parents=True)
    (folder / "x.pcap").symlink_to(victim)
    with pytest.raises(outfiles.OutputError, match="a link is refused"):
        write(tmp_path / "out", "scenario", "probe")
    assert victim.read_text() == "precious\n"


def test_a_planted_directory_link_is_refused(tmp_path: Path, victim: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scenario").symlink_to(victim.parent)
    with pytest.raises(outfiles.OutputError, match="not a directory"):
        write(tmp_path / "out", "scenario", name="victim")
    assert victim.read_text() == "precious\n"


def test_a_planted_hard_link_is_refused(tmp_path: Path, victim: Path):
    (tmp_path / "out").mkdir()
    os.link(victim, tmp_path / "out" / "x.pcap")
    with pytest.raises(outfiles.OutputError, match="hard links"):
        write(tmp_path / "out")
    assert victim.read_text() == "precious\n"


def test_a_named_file_that_is_a_link_is_refused(tmp_path: Path, victim: Path):
    (tmp_path / "report.json").symlink_to(victim)
    with pytest.raises(outfiles.OutputError, match="report.json"):
        outfiles.open_file(str(tmp_path / "report.json"))
    assert victim.read_text() == "precious\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant another user's file")
def test_another_users_file_is_refused(tmp_path: Path):
    (tmp_path / "out").mkdir()
    theirs = tmp_path / "out" / "x.pcap"
    theirs.write_text("theirs")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(outfiles.OutputError, match="belongs to another user"):
        write(tmp_path / "out")


def test_names_that_climb_out_are_refused(tmp_path: Path):
    for bad in ("..", ".", "", "a/b"):
        with pytest.raises(outfiles.OutputError, match="not a plain name"):
            write(tmp_path / "out", bad)

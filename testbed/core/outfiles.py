"""Report files written without following links: a shared directory cannot redirect them.

A root run writing into /tmp (pcaps, JSON, pictures) must not be turned, by a symlink or
a hard link someone planted there, into overwriting some other file. Below the
directory the user named, every directory is entered and every file opened with
O_NOFOLLOW relative to its parent's descriptor, and a file that already exists must
belong to this user and have no other links.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from testbed.core.errors import TestbedError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC  # truncated once checked


class OutputError(TestbedError, OSError):
    """An output path that is unsafe or impossible to write; the message names it."""


def _checked(fd: int, shown: str) -> int:
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        os.close(fd)
        raise OutputError(f"{shown}: belongs to another user; refusing to write there")
    return fd


def directory(top: str, *parts: str) -> int:
    """A descriptor of top/parts..., made as needed; links below `top` are refused."""
    try:
        os.makedirs(top, exist_ok=True)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OutputError(f"{top}: cannot write there: {exc.strerror}") from None
    shown = top
    for part in parts:
        shown = os.path.join(shown, part)
        if part in ("", ".", "..") or "/" in part:
            os.close(fd)
            raise OutputError(f"{shown}: not a plain name")
        try:
            os.mkdir(part, 0o755, dir_fd=fd)
        except FileExistsError:
            pass
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"{shown}: cannot create: {exc.strerror}") from None
        try:
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise OutputError(f"{shown}: not a directory (or a link); refusing") from None
        os.close(fd)
        fd = _checked(inner, shown)
    return fd


def create(dir_fd: int, name: str, shown: str) -> BinaryIO:
    """Open `name` in the directory `dir_fd` for writing, never through a link."""
    try:
        fd = os.open(name, FILE_FLAGS, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        raise OutputError(f"{shown}: cannot write: {exc.strerror} (a link is refused)") from None
    fd = _checked(fd, shown)
    if os.fstat(fd).st_nlink > 1:
        os.close(fd)
        raise OutputError(f"{shown}: has other hard links; refusing to write it")
    os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb")


def open_file(path: str) -> BinaryIO:
    """Open a file the user named (--json, --junit) for writing, not through a link."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there: {exc.strerror}") from None
    try:
        return create(fd, name, path)
    finally:
        os.close(fd)

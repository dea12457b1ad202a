"""YAML loading that remembers where every value came from and refuses hostile input.

Scenario errors must name `file:line`, so mappings and sequences come back as
`YMap` / `YList`: plain `dict` / `list` subclasses that also carry the line of
each key or item. The tree is built from the parser's event stream with an
explicit stack, never by recursion, so that nesting depth, the number of
values (after alias expansion) and the file size are all bounded before they
can cost memory or stack. Every failure is a `SourceError` whose text is one
line; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from testbed.core.errors import TestbedError

MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000  # parsing this many values takes about 0.5 s: the loader stays under 1 s
MAX_DEPTH = 64
MAX_DOCUMENTS = 10_000  # empty documents cost the parser most per value: cap them early
MAX_SHOWN = 60  # characters of a user-supplied value quoted in a message

_MERGE_TAG = "tag:yaml.org,2002:merge"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_resolver = Resolver()
_constructor = SafeConstructor()


def one_line(text: str) -> str:
    """Escape line breaks and control characters so a message stays on one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def show(value: Any) -> str:
    """A user value for a message: quoted when a string, shortened when long."""
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 3] + "..."
    return one_line(text)


class SourceError(TestbedError):
    """A problem at one place of one file; str() is `FILE:LINE: [PATH: ]reason`."""

    def __init__(self, file: str, line: int, reason: str, path: str = "") -> None:
        super().__init__(file, line, reason, path)
        self.file = file
        self.line = line
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        where = f"{one_line(self.file)}:{self.line}: "
        if self.path:
            where += f"{one_line(self.path)}: "
        return where + one_line(self.reason)


class YMap(dict):
    """A mapping that knows its own line and the line of each key."""

    __slots__ = ("line", "key_lines")

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YList(list):
    """A sequence that knows its own line and the line of each item."""

    __slots__ = ("line", "item_lines")

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


@dataclass
class _Frame:
    """A mapping or sequence under construction."""

    value: YMap | YList
    anchor: str | None
    height: int = 1  # container levels in the deepest path, this one included
    size: int = 1  # values in this subtree, aliases expanded
    key: str | None = None  # mapping: the key waiting for its value
    key_line: int = 0
    expect_merge: bool = False
    merges: list[tuple[YMap, int]] = field(default_factory=list)


class _Builder:
    """Turns parser events into YMap / YList trees with every limit enforced."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.docs: list[Any] = []
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # value, size, height
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.root: Any = None

    def fail(self, line: int, reason: str) -> SourceError:
        return SourceError(self.file, line, reason)

    def feed(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.DocumentStartEvent):
            if len(self.docs) >= MAX_DOCUMENTS:
                raise self.fail(line, f"more than {MAX_DOCUMENTS} documents; refusing to load")
            self.anchors = {}
            self.root = None
        elif isinstance(event, yaml.DocumentEndEvent):
            self.docs.append(self.root)
        elif isinstance(event, yaml.ScalarEvent):
            self._scalar(event, line)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event, line)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self._open(event, line)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            self._close()

    def _open(self, event: yaml.CollectionStartEvent, line: int) -> None:
        self._check_tag(event.tag, line, mapping=isinstance(event, yaml.MappingStartEvent))
        if self.stack and self._wants_key():
            raise self.fail(line, "a mapping key must be a string, not a mapping or a list")
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(line, f"nested deeper than {MAX_DEPTH} levels")
        value: YMap | YList = (
            YMap(line) if isinstance(event, yaml.MappingStartEvent) else YList(line)
        )
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self._count(1, line)
        self.stack.append(_Frame(value, event.anchor))

    def _close(self) -> None:
        frame = self.stack.pop()
        if isinstance(frame.value, YMap):
            self._apply_merges(frame)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.value, frame.size, frame.height)
        self._add(frame.value, frame.value.line, frame.size, frame.height, counted=True)

    def _scalar(self, event: yaml.ScalarEvent, line: int) -> None:
        self._count(1, line)
        if (
            self.stack
            and self._wants_key()
            and event.value == "<<"
            and event.tag in (None, "!", _MERGE_TAG)
            and (event.tag == _MERGE_TAG or event.implicit[0])
        ):
            self.stack[-1].expect_merge = True
            self.stack[-1].key_line = line
            return
        value = self._construct(event, line)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1, 0)  # scalars add no level
        self._add(value, line, 1, 0, counted=True)

    def _alias(self, event: yaml.AliasEvent, line: int) -> None:
        name = event.anchor
        if name in self.open_anchors:
            raise self.fail(line, f"alias *{show(name)} refers to a node that contains it")
        if name not in self.anchors:
            raise self.fail(line, f"alias *{show(name)} names no anchor defined before it")
        value, size, height = self.anchors[name]
        self._add(value, line, size, height, counted=False)

    def _count(self, size: int, line: int) -> None:
        self.nodes += size
        if self.nodes > MAX_NODES:
            raise self.fail(
                line, f"more than {MAX_NODES} values (after expanding aliases); refusing to load"
            )

    def _wants_key(self) -> bool:
        top = self.stack[-1]
        return isinstance(top.value, YMap) and top.key is None and not top.expect_merge

    def _add(self, value: Any, line: int, size: int, height: int, counted: bool) -> None:
        if not counted:
            self._count(size, line)
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if len(self.stack) + height > MAX_DEPTH:
            raise self.fail(line, f"nested deeper than {MAX_DEPTH} levels (through an alias)")
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.value, YList):
            top.value.append(value)
            top.value.item_lines.append(line)
        elif top.expect_merge:
            top.expect_merge = False
            self._collect_merge(top, value)
        elif top.key is None:
            if not isinstance(value, str):
                raise self.fail(
                    line, f"mapping key {show(value)} must be a string (quote it: '{value}')"
                )
            if value in top.value:
                first = top.value.key_lines[value]
                raise self.fail(line, f"duplicate key {show(value)} (first at line {first})")
            top.key, top.key_line = value, line
        else:
            top.value[top.key] = value
            top.value.key_lines[top.key] = top.key_line
            top.key = None

    def _collect_merge(self, frame: _Frame, value: Any) -> None:
        sources = value if isinstance(value, list) else [value]
        for source in sources:
            if not isinstance(source, YMap):
                raise self.fail(frame.key_line, "a merge key << needs mappings to merge")
            frame.merges.append((source, frame.key_line))

    @staticmethod
    def _apply_merges(frame: _Frame) -> None:
        target = frame.value
        assert isinstance(target, YMap)
        for source, line in frame.merges:
            for key, value in source.items():
                if key not in target:
                    target[key] = value
                    target.key_lines[key] = line

    def _check_tag(self, tag: str | None, line: int, mapping: bool) -> None:
        wanted = "tag:yaml.org,2002:map" if mapping else "tag:yaml.org,2002:seq"
        if tag not in (None, "!", wanted):
            raise self.fail(line, f"unsupported YAML tag {show(tag)}")

    def _construct(self, event: yaml.ScalarEvent, line: int) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        build = SafeConstructor.yaml_constructors.get(tag)
        if build is None or tag in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            raise self.fail(line, f"unsupported YAML tag {show(tag)}")
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = build(_constructor, node)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError) as exc:
            reason = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
            raise self.fail(line, f"cannot read value {show(event.value)}: {reason}") from None
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            # Kubernetes numbers are int64; a bigger one is a typo or an attack
            raise self.fail(line, f"number {show(event.value)} does not fit in 64 bits")
        return value


def decode(data: bytes, file: str) -> str:
    """UTF-8 only; a bad byte is reported with its line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SourceError(
            file, line, f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column}"
        ) from None
    return text.removeprefix("\ufeff")


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _pseudo_devices() -> set[int]:
    """Device numbers of /proc and /sys: their files look regular but reading may block
    or consume (/proc/kmsg)."""
    found = set()
    for mount in ("/proc", "/sys"):
        with contextlib.suppress(OSError):
            found.add(os.stat(mount).st_dev)
    return found


def read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, refusing anything over MAX_BYTES before reading it.

    Opened without blocking and checked with fstat on the open descriptor, so a FIFO,
    a device or /proc/kmsg is refused at once instead of hanging the reader.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SourceError(name, 1, f"cannot read file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        for test, what in _NOT_REGULAR:
            if test(info.st_mode):
                raise SourceError(name, 1, f"file is {what}, not a regular file; refusing to load")
        if info.st_dev in _pseudo_devices():
            raise SourceError(
                name,
                1,
                "file is a kernel interface (/proc or /sys), not a regular file; refusing to load",
            )
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(name, 1, "file is not a regular file; refusing to load")
        if info.st_size > MAX_BYTES:
            raise SourceError(
                name, 1, f"file is {info.st_size} bytes; the limit is {MAX_BYTES} (4 MiB)"
            )
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SourceError(name, 1, f"cannot read file: {exc.strerror or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_BYTES:
        raise SourceError(name, 1, f"file is over {MAX_BYTES} bytes (4 MiB); refusing to load")
    return data


def parse(source: str | bytes, file: str) -> list[Any]:
    """All documents of a YAML stream as YMap / YList / scalars (None for empty ones)."""
    if isinstance(source, bytes):
        if len(source) > MAX_BYTES:
            raise SourceError(file, 1, f"input is {len(source)} bytes; the limit is 4 MiB")
        source = decode(source, file)
    elif len(source) > MAX_BYTES:
        raise SourceError(file, 1, f"input is {len(source)} characters; the limit is 4 MiB")
    else:
        source = source.removeprefix("\ufeff")
    builder = _Builder(file)
    try:
        for event in yaml.parse(source, Loader=_Loader):
            builder.feed(event)
    except SourceError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        last = source.count("\n") + (0 if source.endswith("\n") else 1)
        line = min(mark.line + 1, max(last, 1)) if mark is not None else 1  # not past the end
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "broken YAML"
        raise SourceError(file, line, f"invalid YAML: {reason}") from None
    except yaml.reader.ReaderError as exc:
        line = source.count("\n", 0, max(0, exc.position)) + 1
        raise SourceError(file, line, f"invalid YAML: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, 1, f"invalid YAML: {exc}") from None
    except Exception as exc:  # the contract is one error type, whatever the parser does
        raise SourceError(file, 1, f"cannot load YAML: {type(exc).__name__}: {exc}") from None
    return builder.docs


def from_plain(value: Any, file: str, line: int = 1) -> Any:
    """Wrap plain Python data (dicts, lists, scalars) like parsed YAML, all at `line`.

    Used for documents given inline; the same limits apply, so a cyclic or
    enormous structure is refused rather than walked forever.
    """
    budget = [MAX_NODES]

    def wrap(item: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise SourceError(file, line, f"more than {MAX_NODES} values; refusing to load")
        if isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise SourceError(file, line, f"nested deeper than {MAX_DEPTH} levels")
            out = YMap(line)
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise SourceError(file, line, f"mapping key {show(key)} must be a string")
                out[key] = wrap(sub, depth + 1)
                out.key_lines[key] = line
            return out
        if isinstance(item, (list, tuple)):
            if depth >= MAX_DEPTH:
                raise SourceError(file, line, f"nested deeper than {MAX_DEPTH} levels")
            seq = YList(line)
            for sub in item:
                seq.append(wrap(sub, depth + 1))
                seq.item_lines.append(line)
            return seq
        return item

    return wrap(value, 0)

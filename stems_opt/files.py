"""Reading and writing files safely: bounded input parsing and atomic output.

Every input file goes through :func:`read_document`: only regular files of at
most :data:`MAX_FILE_BYTES`, nesting and YAML alias expansion bounded,
duplicate keys refused. Every output file goes through
:func:`write_text_safely`: atomically, only onto regular files, with the
usual permissions. The formats themselves are read in :mod:`stems_opt.io`.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

from stems_opt.errors import Issue, StemsInputError, excerpt


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping gives the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys instead of keeping the last one.

    PyYAML silently lets a later ``network:`` line win over an earlier one,
    so a copy-paste slip would go unnoticed.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                # Keys brought in by a merge (<<) may legitimately be overridden.
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:  # unhashable: the base class reports it
                    continue
                if seen:
                    raise DuplicateKeyError(f"first given at line {first_line[key] + 1}", None,
                                            f"duplicate key {excerpt(key)}", key_node.start_mark)
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _DuplicateJsonKeyError(Exception):
    """A JSON object gives the same key twice."""


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateJsonKeyError(key)
        out[key] = value
    return out


MAX_FILE_BYTES = 16 * 2**20
"""Largest input file read (16 MiB; the bundled SEW-ResNet-152 network is 60 kB)."""
MAX_NESTING = 64
"""Deepest nesting of lists and mappings in an input file (the formats need 5)."""
MAX_NODES = 1_000_000
"""Most values a file may hold once its YAML aliases are expanded: every alias
counts its whole target again, so an alias bomb (a few hundred bytes that
expand to gigabytes) is refused before anything walks it."""


class _InputTooComplexError(Exception):
    """A document nests too deeply or expands to too many values."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _BoundedLoader(_UniqueKeyLoader):
    """The duplicate-refusing safe loader, with the nesting depth and the size of
    the alias-expanded document bounded (:data:`MAX_NESTING`, :data:`MAX_NODES`)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # The composer recurses once per level: bound it before Python's stack does.
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise _InputTooComplexError(f"nested deeper than {MAX_NESTING} levels",
                                            mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a node graph whose alias-expanded tree exceeds :data:`MAX_NODES` values,
    or that contains itself. Shared nodes (aliases) are sized once, iteratively."""
    size: dict[int, int] = {}
    busy: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in size:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            busy.discard(key)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_NODES:
                raise _InputTooComplexError(f"expands to more than {MAX_NODES:,} values "
                                            "(YAML aliases are counted once per use)",
                                            node.start_mark.line + 1)
            size[key] = total
            continue
        if key in busy:
            raise _InputTooComplexError("an alias refers to a value that contains it",
                                        node.start_mark.line + 1)
        busy.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in busy:
                raise _InputTooComplexError("an alias refers to a value that contains it",
                                            c.start_mark.line + 1)
            if id(c) not in size:
                stack.append((c, False))


def _nesting(doc: Any) -> int:
    """Depth of lists and mappings in a parsed document (iteratively)."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items = list(value.values())
        elif isinstance(value, list):
            items = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((v, depth + 1) for v in items)
    return deepest


def read_text_bounded(path: str | Path) -> str:
    """The text of a regular file of at most :data:`MAX_FILE_BYTES`, as UTF-8.

    Devices, FIFOs and sockets are refused before they are opened (reading
    ``/dev/zero`` never ends, a FIFO without a writer blocks forever).
    """
    path = Path(path)

    def fail(message: str) -> StemsInputError:
        return StemsInputError(Issue(message, file=str(path)))

    try:
        info = path.stat()
    except FileNotFoundError:
        raise fail("file not found") from None
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise fail("is not a regular file (a device, FIFO or socket); give a file")
    if info.st_size > MAX_FILE_BYTES:
        raise fail(f"is {info.st_size:,} bytes; input files are limited to "
                   f"{MAX_FILE_BYTES:,} bytes")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:  # it grew after the stat
        raise fail(f"is larger than the {MAX_FILE_BYTES:,}-byte limit for input files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"cannot be read: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None


def read_document(path: str | Path) -> Any:
    """Parse a YAML or JSON file, turning every failure into one clear issue.

    Duplicate keys are an error (with their line in YAML), not a silent
    overwrite. The file must be a regular file of at most
    :data:`MAX_FILE_BYTES`; nesting is bounded by :data:`MAX_NESTING` and the
    alias-expanded size of a YAML document by :data:`MAX_NODES`.
    """
    path = Path(path)
    text = read_text_bounded(path)

    def fail(message: str) -> StemsInputError:
        return StemsInputError(Issue(message, file=str(path)))

    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text, object_pairs_hook=_unique_json_object)
            if _nesting(doc) > MAX_NESTING:
                raise _InputTooComplexError(f"nested deeper than {MAX_NESTING} levels")
            return doc
        return yaml.load(text, Loader=_BoundedLoader)
    except _InputTooComplexError as exc:
        where = f" at line {exc.line}" if exc.line else ""
        raise fail(f"too complex{where}: {exc}") from None
    except RecursionError:
        raise fail(f"too complex: nested deeper than {MAX_NESTING} levels") from None
    except _DuplicateJsonKeyError as exc:
        raise fail(f"duplicate key {excerpt(exc.args[0])} in a JSON object") from None
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise fail(f"{exc.problem} at line {line} ({exc.context})") from None
    except json.JSONDecodeError as exc:
        raise fail(f"malformed JSON at line {exc.lineno}, column {exc.colno}: "
                   f"{exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise fail(f"malformed YAML{where}: {what}") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's 4300 digits
        raise fail(f"malformed: {str(exc).split(';')[0]}") from None


def _out_target(path: str | Path, field: str | None = None) -> Path:
    """The file ``--out`` really writes: ``path``, or the file its symlinks end at.

    Raises
    ------
    StemsInputError
        If ``path`` is empty, or names (or its links end at) something other
        than a regular file: a directory, a device, a FIFO or a socket.
    """
    if not str(path):
        raise StemsInputError(Issue("is empty; give the path of a file to write", field=field))
    # A symlink is followed: the file it points to is replaced, the link stays a link.
    target = Path(os.path.realpath(path))

    def fail(message: str) -> StemsInputError:
        return StemsInputError(Issue(message, file=str(path), field=field))

    try:
        info = target.stat()
    except (FileNotFoundError, NotADirectoryError):  # the directory is checked by the caller
        return target
    except OSError as exc:
        raise fail(f"cannot be written: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("cannot be written: it is a directory; give the path of a file")
    if not stat.S_ISREG(info.st_mode):
        raise fail("cannot be written: not a regular file (a device, FIFO or socket); only "
                   "regular files are written")
    return target


def check_writable(path: str | Path, field: str | None = None) -> None:
    """Fail early if a file cannot be written at ``path``.

    Meant to run before a long computation whose result goes to ``path``, so
    that a typo in the destination does not throw away minutes of solving.
    ``path`` must be a regular file or not exist (a symlink counts as the file
    it points to), and its directory must exist and be writable.

    Parameters
    ----------
    path
        The file to be written (it may exist; it will be replaced).
    field
        The option or field that gave ``path``, named in the message.

    Raises
    ------
    StemsInputError
        Naming ``path`` and what is wrong with it.
    """
    target = _out_target(path, field)
    parent = target.parent

    def fail(message: str) -> StemsInputError:
        return StemsInputError(Issue(message, file=str(path), field=field))

    if not parent.exists():
        raise fail(f"cannot be written: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise fail(f"cannot be written: {str(parent)!r} is not a directory")
    # The file is replaced by renaming a temporary file, so the directory must be writable.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(f"cannot be written: directory {str(parent)!r} is not writable")


def _new_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_safely(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (:func:`write_bytes_safely`)."""
    write_bytes_safely(path, text.encode("utf-8"))


def write_bytes_safely(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically: a failure never leaves a half-written file behind.

    The bytes go to a temporary file in the target's directory, are flushed
    to disk and renamed over the target (``os.replace``), so the file holds
    either its old content or the whole new one. Only regular files are
    written; a symlink's target is replaced, not the link. A new file gets
    the usual mode (``0o666`` less the umask); a replaced one keeps its mode.

    Raises
    ------
    StemsInputError
        If the file cannot be written (missing directory, ``path`` is a
        directory, a device or a FIFO, no permission, disk full), naming ``path``.
    """
    target = _out_target(path)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = _new_file_mode()
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StemsInputError(Issue(f"cannot be written: {reason}", file=str(path))) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)

"""Errors raised for bad input, each naming the file, the layer and the field."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, replace

MAX_MESSAGE_CHARS = 400
"""Longest message an :class:`Issue` keeps; longer ones are cut (a value quoted whole
could be megabytes long)."""
MAX_NAME_CHARS = 80
"""Longest file, layer or field name an :class:`Issue` keeps."""

_EXCERPT = reprlib.Repr()
_EXCERPT.maxstring = 60
_EXCERPT.maxother = 60
_EXCERPT.maxlong = 40
_EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxdict = _EXCERPT.maxset = 4
_EXCERPT.maxlevel = 2


def excerpt(value: object) -> str:
    """A short ``repr`` of ``value`` for messages: long strings, numbers and nested
    lists or mappings are cut with ``...`` without rendering them whole."""
    try:
        return _EXCERPT.repr(value)
    except ValueError:  # an integer too long to print (Python's 4300-digit limit)
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) \
            else "<a value too long to print>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class Issue:
    """One problem found in an input.

    Parameters
    ----------
    message
        What is wrong, in the user's terms.
    file
        The file the problem was found in, if any.
    layer
        The layer (or segment, or hardware level) concerned, if any.
    field
        The offending field, if any.
    segment
        The mapping segment concerned, if any.

    Rendered as ``file, segment 0, layer 'c1', field 'weights': message``,
    leaving out the parts that are not set.
    """

    message: str
    file: str | None = None
    layer: str | None = None
    field: str | None = None
    segment: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", _cut(str(self.message), MAX_MESSAGE_CHARS))
        for name, limit in (("file", MAX_MESSAGE_CHARS), ("layer", MAX_NAME_CHARS),
                            ("field", MAX_NAME_CHARS)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _cut(str(value), limit))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.segment is not None:
            where.append(f"segment {self.segment}")
        if self.layer:
            where.append(f"layer {self.layer!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def with_file(self, file: str) -> Issue:
        """Return a copy that names ``file`` (kept if already set)."""
        return replace(self, file=self.file or file)


class StemsInputError(ValueError):
    """Raised with every problem found in an input, not only the first."""

    def __init__(self, issues: list[Issue] | Issue):
        self.issues = [issues] if isinstance(issues, Issue) else list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    def with_file(self, file: str) -> StemsInputError:
        """Return the same error with ``file`` named in every issue."""
        return StemsInputError([i.with_file(file) for i in self.issues])


def raise_if(issues: list[Issue]) -> None:
    """Raise :class:`StemsInputError` if ``issues`` is not empty."""
    if issues:
        raise StemsInputError(issues)

"""Checks of parsed YAML/JSON fields shared by the file formats, each problem an :class:`Issue`."""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from typing import Any

from stems_opt.errors import Issue, StemsInputError, excerpt
from stems_opt.limits import MAX_COUNT, MAX_MEMORY_BITS


def expect_mapping(doc: Any, what: str, file: str) -> dict[str, Any]:
    """``doc`` as a dict, or an error naming ``file`` (an empty file parses as ``None``)."""
    article = "an" if what[0] in "aeiou" else "a"
    expected = f"expected {article} {what} (a YAML mapping at the top level)"
    if doc is None:
        # An empty file, or one holding only comments, parses as null.
        raise StemsInputError(Issue(f"is empty: {expected}", file=file))
    if not isinstance(doc, AbcMapping):
        raise StemsInputError(Issue(f"{expected}, got {type(doc).__name__}", file=file))
    return dict(doc)


def unknown_fields(d: AbcMapping[str, Any], known: set[str], layer: str | None,
                   prefix: str = "") -> list[Issue]:
    """One issue per key of ``d`` not in ``known``."""
    return [Issue(f"unknown field (known: {', '.join(sorted(known))})", layer=layer,
                  field=prefix + str(k)) for k in d if k not in known]


def int_field(d: AbcMapping[str, Any], key: str, layer: str | None, issues: list[Issue],
              default: Any = None, minimum: int = 1, prefix: str = "",
              maximum: int = MAX_COUNT) -> Any:
    """``d[key]`` as an integer in ``minimum..maximum`` (see :mod:`stems_opt.limits`),
    else ``None`` and an issue for ``prefix + key``.

    Floats are refused even when integral (``16.0``), as loop bounds are.
    """
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not minimum <= v <= maximum:
        top = "2^53" if maximum == MAX_MEMORY_BITS else f"{maximum}"
        issues.append(Issue(f"must be an integer in {minimum}..{top}, got {excerpt(v)}",
                            layer=layer, field=prefix + key))
        return None
    return v


def enum_field(enum: Any, value: Any, layer: str | None, fname: str, issues: list[Issue]) -> Any:
    """``enum(value)``, else ``None`` and an issue listing the values."""
    try:
        return enum(value)
    except (ValueError, TypeError):
        issues.append(Issue(f"unknown value {excerpt(value)} (one of "
                            f"{', '.join(e.value for e in enum)})", layer=layer, field=fname))
        return None


__all__ = ["enum_field", "expect_mapping", "int_field", "unknown_fields"]

"""Reading and writing files: networks, hardware, instances and mappings (YAML/JSON).

This is the only module that touches the file system. Every loader collects
all the problems it finds and raises them together as
:class:`~stems_opt.errors.StemsInputError`, each naming the file, the layer
(or level, or segment) and the field. The formats are documented in
``docs/formats.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping as AbcMapping
from pathlib import Path
from typing import Any

import yaml

from stems_opt.checks import enum_field as _enum
from stems_opt.checks import expect_mapping as _expect_mapping
from stems_opt.checks import int_field as _int
from stems_opt.checks import unknown_fields as _unknown
from stems_opt.errors import Issue, StemsInputError
from stems_opt.hardware import ComputeArray, Hardware, MemoryLevel, check_clock, is_number
from stems_opt.mapping import (
    Mapping,
    mapping_from_dict,
    mapping_to_dict,
)
from stems_opt.network import (
    NETWORK_INPUT,
    Block,
    InputTensor,
    Network,
    NetworkDefaults,
    NeuronKind,
    StatePersistence,
    build_network,
)
from stems_opt.problem import KnownOptimum, Objective, Problem

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

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
                    raise DuplicateKeyError(f"first given at line {first_line[key] + 1}",
                                            None, f"duplicate key {key!r}", key_node.start_mark)
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


def read_document(path: str | Path) -> Any:
    """Parse a YAML or JSON file, turning every failure into one clear issue.

    Duplicate keys are an error (with their line in YAML), not a silent
    overwrite.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StemsInputError(Issue("file not found", file=str(path))) from None
    except IsADirectoryError:
        raise StemsInputError(Issue("is a directory, not a file", file=str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StemsInputError(Issue(f"cannot be read: {exc}", file=str(path))) from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_unique_json_object)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateJsonKeyError as exc:
        raise StemsInputError(Issue(f"duplicate key {exc.args[0]!r} in a JSON object",
                                    file=str(path))) from None
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise StemsInputError(Issue(f"{exc.problem} at line {line} ({exc.context})",
                                    file=str(path))) from None
    except json.JSONDecodeError as exc:
        raise StemsInputError(Issue(f"malformed JSON at line {exc.lineno}, column {exc.colno}: "
                                    f"{exc.msg}", file=str(path))) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StemsInputError(Issue(f"malformed YAML{where}: {what}", file=str(path))) from None


def _num(d: AbcMapping[str, Any], key: str, layer: str | None, issues: list[Issue],
         default: Any = None, prefix: str = "") -> Any:
    """``d[key]`` as a finite float >= 0, else ``None`` and an issue for ``prefix + key``."""
    v = d.get(key, default)
    if not is_number(v) or v < 0:
        issues.append(Issue(f"must be a finite non-negative number, got {v!r}", layer=layer,
                            field=prefix + key))
        return None
    return float(v)


def _rethrow(exc: StemsInputError, file: str) -> StemsInputError:
    return exc.with_file(file)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

NETWORK_FIELDS = {"name", "timesteps", "state_persistence", "defaults", "input", "layers",
                  "blocks", "outputs", "comment"}
DEFAULT_FIELDS = {"weight_bits", "spike_bits", "activation_bits", "state_bits", "psum_bits",
                  "neuron", "add_output_bits"}
INPUT_FIELDS = {"name", "channels", "height", "width", "bits"}


def network_from_dict(doc: Any, file: str = "<network>") -> Network:
    """Build a :class:`Network` from its YAML form (see ``docs/formats.md``)."""
    d = _expect_mapping(doc, "network", file)
    issues = _unknown(d, NETWORK_FIELDS, None)
    T = _int(d, "timesteps", None, issues)
    sp = _enum(StatePersistence, d.get("state_persistence", "streaming"), None,
               "state_persistence", issues)
    dd = d.get("defaults", {}) or {}
    defaults = NetworkDefaults()
    if not isinstance(dd, AbcMapping):
        issues.append(Issue("must be a mapping", field="defaults"))
    else:
        issues += _unknown(dd, DEFAULT_FIELDS, None, "defaults.")
        kw: dict[str, Any] = {}
        for key in ("weight_bits", "spike_bits", "activation_bits", "state_bits", "psum_bits"):
            if key in dd:
                kw[key] = _int(dd, key, None, issues, prefix="defaults.")
        if "neuron" in dd:
            kw["neuron"] = _enum(NeuronKind, dd["neuron"], None, "defaults.neuron", issues)
        if "add_output_bits" in dd:
            if dd["add_output_bits"] not in ("widest", "exact"):
                issues.append(Issue("must be 'widest' or 'exact'",
                                    field="defaults.add_output_bits"))
            kw["add_output_bits"] = dd["add_output_bits"]
        if not issues:
            defaults = NetworkDefaults(**kw)
    inp = d.get("input")
    input_tensor = None
    if not isinstance(inp, AbcMapping):
        issues.append(Issue("is required: {channels, height, width, bits}", field="input"))
    else:
        issues += _unknown(inp, INPUT_FIELDS, "input", "")
        iname = inp.get("name", NETWORK_INPUT)
        vals = [_int(inp, k, iname, issues) for k in ("channels", "height", "width")]
        bits = _int(inp, "bits", iname, issues, default=1)
        if None not in vals and bits is not None:
            input_tensor = InputTensor(str(iname), vals[0], vals[1], vals[2], bits)
    layers = d.get("layers")
    if not isinstance(layers, list) or not layers:
        issues.append(Issue("must be a non-empty list of layers", field="layers"))
        layers = []
    blocks: list[Block] = []
    raw_blocks = d.get("blocks", []) or []
    if not isinstance(raw_blocks, list):
        issues.append(Issue("must be a list of {name, layers}", field="blocks"))
        raw_blocks = []
    for i, b in enumerate(raw_blocks):
        if isinstance(b, AbcMapping) and isinstance(b.get("layers"), list):
            issues += _unknown(b, {"name", "layers"}, None, f"blocks[{i}].")
            blocks.append(Block(str(b.get("name", f"block{i}")), tuple(map(str, b["layers"]))))
        elif isinstance(b, list):
            blocks.append(Block(f"block{i}", tuple(map(str, b))))
        else:
            issues.append(Issue("must be {name, layers: [...]} or a list of layer names",
                                field=f"blocks[{i}]"))
    outputs = d.get("outputs", []) or []
    if not isinstance(outputs, list):
        issues.append(Issue("must be a list of layer names", field="outputs"))
        outputs = []
    if issues or input_tensor is None:
        raise StemsInputError(issues).with_file(file)
    try:
        return build_network(str(d.get("name", Path(file).stem)), T, input_tensor, layers,
                             defaults, sp, blocks, [str(o) for o in outputs])
    except StemsInputError as exc:
        raise _rethrow(exc, file) from None


def load_network(path: str | Path) -> Network:
    """Read a network YAML file."""
    return network_from_dict(read_document(path), str(path))


# ---------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------

HARDWARE_FIELDS = {"name", "dram", "global_buffer", "inner_levels", "operational_array",
                   "clock_hz", "comment"}
LEVEL_FIELDS = {"name", "size", "read_pj_per_bit", "write_pj_per_bit",
                "bandwidth_bits_per_cycle", "operands"}
ARRAY_FIELDS = {"sizes", "accumulate_pj", "mac_pj", "neuron_update_pj"}


def _level(d: Any, name: str, issues: list[Issue], sized: bool) -> MemoryLevel | None:
    if not isinstance(d, AbcMapping):
        issues.append(Issue("must be a mapping", layer=name))
        return None
    known = LEVEL_FIELDS if sized else LEVEL_FIELDS - {"size"}
    local: list[Issue] = _unknown(d, known, name)
    size = _int(d, "size", name, local) if sized else None
    r = _num(d, "read_pj_per_bit", name, local)
    w = _num(d, "write_pj_per_bit", name, local)
    bw = d.get("bandwidth_bits_per_cycle")
    ops = d.get("operands", ["W", "I", "O", "V"])
    if not isinstance(ops, list):
        local.append(Issue("must be a list such as [W, I, O, V]", layer=name, field="operands"))
    issues += local
    if local:
        return None
    try:
        return MemoryLevel(str(d.get("name", name)), size, r, w, bw, tuple(map(str, ops)))
    except StemsInputError as exc:
        issues += exc.issues
        return None


def hardware_from_dict(doc: Any, file: str = "<hardware>") -> Hardware:
    """Build a :class:`Hardware` from its YAML form (see ``docs/formats.md``)."""
    d = _expect_mapping(doc, "hardware description", file)
    issues = _unknown(d, HARDWARE_FIELDS, None)
    dram = _level(d.get("dram"), "dram", issues, sized=False)
    gb = _level(d.get("global_buffer"), "global_buffer", issues, sized=True)
    inner = []
    raw_inner = d.get("inner_levels", []) or []
    if not isinstance(raw_inner, list):
        issues.append(Issue("must be a list of memory levels", field="inner_levels"))
        raw_inner = []
    for i, lvl in enumerate(raw_inner):
        name = lvl.get("name", f"inner_levels[{i}]") if isinstance(lvl, AbcMapping) else \
            f"inner_levels[{i}]"
        inner.append(_level(lvl, str(name), issues, sized=True))
    arr_d = d.get("operational_array")
    array = None
    if not isinstance(arr_d, AbcMapping):
        issues.append(Issue("is required: {sizes, accumulate_pj, mac_pj}",
                            field="operational_array"))
    else:
        issues += _unknown(arr_d, ARRAY_FIELDS, "operational_array")
        sizes = arr_d.get("sizes", {})
        if not isinstance(sizes, AbcMapping):
            issues.append(Issue("must be a mapping such as {K: 32, C: 2}",
                                layer="operational_array", field="sizes"))
        else:
            energies = [_num(arr_d, key, "operational_array", issues, 0.0)
                        for key in ("accumulate_pj", "mac_pj", "neuron_update_pj")]
            if None not in energies:
                try:
                    array = ComputeArray(dict(sizes), *energies)
                except StemsInputError as exc:
                    issues += exc.issues
    clock = d.get("clock_hz")
    issues += check_clock(clock)
    if issues or dram is None or gb is None or array is None or None in inner:
        raise StemsInputError(issues or [Issue("invalid hardware")]).with_file(file)
    try:
        return Hardware(str(d.get("name", Path(file).stem)), dram, gb, array, tuple(inner), clock)
    except StemsInputError as exc:
        raise _rethrow(exc, file) from None


def load_hardware(path: str | Path) -> Hardware:
    """Read a hardware YAML file."""
    return hardware_from_dict(read_document(path), str(path))


# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

INSTANCE_FIELDS = {"name", "network", "hardware", "objective", "options", "known_optima",
                   "comment"}
OPTION_FIELDS = {"max_segment_layers"}


def load_instance(path: str | Path, objective: str | None = None) -> Problem:
    """Read an instance file: network + hardware (paths relative to it, or inline)."""
    path = Path(path)
    file = str(path)
    d = _expect_mapping(read_document(path), "instance", file)
    issues = _unknown(d, INSTANCE_FIELDS, None)
    base = path.parent

    def part(key: str, loader: Any, from_dict: Any) -> Any:
        v = d.get(key)
        if isinstance(v, str):
            # A missing file is a problem of the instance's field, so name both.
            target = base / v
            if not target.exists():
                raise StemsInputError(Issue(f"file not found: {target}", file=file, field=key))
            if target.is_dir():
                raise StemsInputError(Issue(f"is a directory, not a file: {target}", file=file,
                                            field=key))
            return loader(target)
        if isinstance(v, AbcMapping):
            return from_dict(v, f"{file} ({key})")
        raise StemsInputError(Issue("must be a file path or an inline mapping", file=file,
                                    field=key))

    obj = _enum(Objective, objective or d.get("objective", "traffic"), None, "objective", issues)
    opts = d.get("options", {}) or {}
    max_seg = None
    if not isinstance(opts, AbcMapping):
        issues.append(Issue("must be a mapping", field="options"))
    else:
        issues += _unknown(opts, OPTION_FIELDS, None, "options.")
        if "max_segment_layers" in opts:
            max_seg = _int(opts, "max_segment_layers", None, issues, prefix="options.")
    known = []
    raw_known = d.get("known_optima", []) or []
    if not isinstance(raw_known, list):
        issues.append(Issue(f"must be a list of {{objective, value, provenance}}, got "
                            f"{type(raw_known).__name__}", field="known_optima"))
        raw_known = []
    for i, k in enumerate(raw_known):
        if not isinstance(k, AbcMapping):
            issues.append(Issue("must be {objective, value, provenance}",
                                field=f"known_optima[{i}]"))
            continue
        issues += _unknown(k, {"objective", "value", "provenance"}, None, f"known_optima[{i}].")
        o = _enum(Objective, k.get("objective", "traffic"), None, f"known_optima[{i}].objective",
                  issues)
        val = _num(k, "value", None, issues, prefix=f"known_optima[{i}].")
        if o is not None and val is not None:
            known.append(KnownOptimum(o, val, str(k.get("provenance", ""))))
    if issues:
        raise StemsInputError(issues).with_file(file)
    errors: list[Issue] = []
    network = hardware = None
    try:
        network = part("network", load_network, network_from_dict)
    except StemsInputError as exc:
        errors += exc.with_file(file).issues
    try:
        hardware = part("hardware", load_hardware, hardware_from_dict)
    except StemsInputError as exc:
        errors += exc.with_file(file).issues
    if errors:
        raise StemsInputError(errors)
    return Problem(network, hardware, obj, str(d.get("name", path.stem)), tuple(known), max_seg)


# ---------------------------------------------------------------------------
# Mappings
# ---------------------------------------------------------------------------

def load_mapping(path: str | Path) -> Mapping:
    """Read a mapping YAML or JSON file."""
    return mapping_from_dict(read_document(path), str(path))


def check_writable(path: str | Path, field: str | None = None) -> None:
    """Fail early if a file cannot be written at ``path``.

    Meant to run before a long computation whose result goes to ``path``, so
    that a typo in the destination does not throw away minutes of solving.
    The parent directory must exist, be a directory and be writable, and
    ``path`` itself must not be a directory.

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
    path = Path(path)
    parent = path.parent

    def fail(message: str) -> StemsInputError:
        return StemsInputError(Issue(message, file=str(path), field=field))

    if path.is_dir():
        raise fail("is a directory; give the path of a file to write")
    if not parent.exists():
        raise fail(f"cannot be written: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise fail(f"cannot be written: {str(parent)!r} is not a directory")
    # The file is replaced by renaming a temporary file, so the directory must be writable.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(f"cannot be written: directory {str(parent)!r} is not writable")


def write_text_safely(path: str | Path, text: str) -> None:
    """Write ``text`` atomically: a failure never leaves a half-written file behind.

    The text goes to a temporary file next to ``path`` that is then renamed
    over it; the temporary file is removed whatever happens.

    Raises
    ------
    StemsInputError
        If the file cannot be written (missing directory, ``path`` is a
        directory, no permission, disk full), naming ``path``.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StemsInputError(Issue(f"cannot be written: {reason}", file=str(path))) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def dump_mapping(mapping: Mapping, path: str | Path,
                 about: AbcMapping[str, Any] | None = None) -> None:
    """Write ``mapping`` as YAML (or JSON for a ``.json`` path).

    ``about`` goes before the ``mapping`` key: what the mapping was solved
    for (schema and stems_opt versions, instance, objective, solver, value;
    see :func:`stems_opt.report.mapping_provenance`). Readers ignore it.
    """
    doc = {**(about or {}), **mapping_to_dict(mapping)}
    if str(path).lower().endswith(".json"):
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    write_text_safely(path, text)



__all__ = ["check_writable", "dump_mapping", "hardware_from_dict", "load_hardware",
           "load_instance", "load_mapping", "load_network", "mapping_from_dict",
           "mapping_to_dict", "network_from_dict", "read_document", "write_text_safely"]

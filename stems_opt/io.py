"""Reading and writing files: networks, hardware, instances and mappings (YAML/JSON).

The file system itself is reached through :mod:`stems_opt.files` (bounded
parsing, atomic writes); this module reads and writes the formats. Every loader collects
all the problems it finds and raises them together as
:class:`~stems_opt.errors.StemsInputError`, each naming the file, the layer
(or level, or segment) and the field. The formats are documented in
``docs/formats.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping as AbcMapping
from pathlib import Path
from typing import Any

import yaml

from stems_opt.checks import enum_field as _enum
from stems_opt.checks import expect_mapping as _expect_mapping
from stems_opt.checks import int_field as _int
from stems_opt.checks import unknown_fields as _unknown
from stems_opt.errors import Issue, StemsInputError, excerpt
from stems_opt.files import check_writable as check_writable
from stems_opt.files import read_document, read_text_bounded, write_text_safely
from stems_opt.hardware import (
    ARRAY_DIMS,
    OPERANDS,
    ComputeArray,
    Hardware,
    MemoryLevel,
    check_clock,
    is_number,
)
from stems_opt.layer_specs import NetworkDefaults, build_network, layer_spec_issues
from stems_opt.limits import (
    MAX_BANDWIDTH,
    MAX_EXTENT,
    MAX_MEMORY_BITS,
    MAX_OBJECTIVE,
    MAX_PJ,
    MIN_BANDWIDTH,
)
from stems_opt.magnitude import magnitude_issues
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
    NeuronKind,
    StatePersistence,
)
from stems_opt.problem import KnownOptimum, Objective, Problem

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------



def _num(d: AbcMapping[str, Any], key: str, layer: str | None, issues: list[Issue],
         default: Any = None, prefix: str = "", maximum: float = MAX_PJ) -> Any:
    """``d[key]`` as a finite float in ``0..maximum``, else ``None`` and an issue for
    ``prefix + key``."""
    v = d.get(key, default)
    if not is_number(v) or not 0 <= v <= maximum:
        issues.append(Issue(f"must be a finite number in 0..{maximum:g}, got {excerpt(v)}",
                            layer=layer, field=prefix + key))
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
        vals = [_int(inp, "channels", iname, issues)]
        vals += [_int(inp, k, iname, issues, maximum=MAX_EXTENT) for k in ("height", "width")]
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
        # The layers' own mistakes come out too, though their shapes cannot be resolved.
        issues += layer_spec_issues(layers, str(inp.get("name", NETWORK_INPUT)) if
                                    isinstance(inp, AbcMapping) else NETWORK_INPUT,
                                    defaults, T)
        raise StemsInputError(issues or [Issue("invalid network")]).with_file(file)
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
                   "clock_hz", "comment", "loop_nests"}
LEVEL_FIELDS = {"name", "size", "read_pj_per_bit", "write_pj_per_bit",
                "bandwidth_bits_per_cycle", "operands"}
ARRAY_FIELDS = {"sizes", "accumulate_pj", "mac_pj", "neuron_update_pj"}


def _level(d: Any, name: str, issues: list[Issue], sized: bool) -> MemoryLevel | None:
    """One memory level, or ``None`` with every problem of it added to ``issues``."""
    if not isinstance(d, AbcMapping):
        issues.append(Issue("must be a mapping", layer=name))
        return None
    known = LEVEL_FIELDS if sized else LEVEL_FIELDS - {"size"}
    local: list[Issue] = _unknown(d, known, name)
    size = _int(d, "size", name, local, maximum=MAX_MEMORY_BITS) if sized else None
    r = _num(d, "read_pj_per_bit", name, local)
    w = _num(d, "write_pj_per_bit", name, local)
    bw = d.get("bandwidth_bits_per_cycle")
    if bw is not None and not (is_number(bw) and MIN_BANDWIDTH <= bw <= MAX_BANDWIDTH):
        local.append(Issue(f"must be a finite number in {MIN_BANDWIDTH:g}..2^53, got "
                           f"{excerpt(bw)}", layer=name, field="bandwidth_bits_per_cycle"))
    ops = d.get("operands", list(OPERANDS))
    if not isinstance(ops, list):
        local.append(Issue("must be a list such as [W, I, O, V]", layer=name, field="operands"))
    else:
        for op in ops:
            if op not in OPERANDS:
                local.append(Issue(f"unknown operand {excerpt(op)} (one of "
                                   f"{', '.join(OPERANDS)})", layer=name, field="operands"))
    issues += local
    if local:
        return None
    try:
        return MemoryLevel(str(d.get("name", name)), size, r, w, bw, tuple(map(str, ops)))
    except StemsInputError as exc:
        issues += exc.issues
        return None


def _array(arr_d: Any, issues: list[Issue]) -> ComputeArray | None:
    """The compute array, or ``None`` with every problem of it added to ``issues``."""
    if not isinstance(arr_d, AbcMapping):
        issues.append(Issue("is required: {sizes, accumulate_pj, mac_pj}",
                            field="operational_array"))
        return None
    where = "operational_array"
    local = _unknown(arr_d, ARRAY_FIELDS, where)
    sizes = arr_d.get("sizes", {})
    if not isinstance(sizes, AbcMapping):
        local.append(Issue("must be a mapping such as {K: 32, C: 2}", layer=where,
                           field="sizes"))
    else:
        for dim in sizes:
            if dim not in ARRAY_DIMS:
                local.append(Issue(f"unknown dimension (one of {', '.join(ARRAY_DIMS)})",
                                   layer=where, field=f"sizes.{dim}"))
            else:
                _int(sizes, dim, where, local, prefix="sizes.")
    energies = [_num(arr_d, key, where, local, 0.0)
                for key in ("accumulate_pj", "mac_pj", "neuron_update_pj")]
    issues += local
    if local:
        return None
    try:
        return ComputeArray(dict(sizes), *energies)
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
    array = _array(d.get("operational_array"), issues)
    clock = d.get("clock_hz")
    issues += check_clock(clock)
    nests = d.get("loop_nests", False)
    if not isinstance(nests, bool):
        issues.append(Issue(f"must be true or false, got {nests!r}", field="loop_nests"))
    if issues or dram is None or gb is None or array is None or None in inner:
        raise StemsInputError(issues or [Issue("invalid hardware")]).with_file(file)
    try:
        return Hardware(str(d.get("name", Path(file).stem)), dram, gb, array, tuple(inner), clock,
                        loop_nests=nests)
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

    def part(key: str, loader: Any, from_dict: Any) -> tuple[Any, str]:
        """The network or hardware and the file its messages name."""
        v = d.get(key)
        if isinstance(v, str):
            # A missing or unreadable file is a problem of the instance's field: name both.
            target = base / v
            try:
                read_text_bounded(target)
            except StemsInputError as exc:
                raise StemsInputError([Issue(f"{i.message}: {target}", file=file, field=key)
                                       for i in exc.issues]) from None
            return loader(target), str(target)
        if isinstance(v, AbcMapping):
            where = f"{file} ({key})"
            return from_dict(v, where), where
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
        val = _num(k, "value", None, issues, prefix=f"known_optima[{i}].",
                   maximum=float(MAX_OBJECTIVE))
        if o is not None and val is not None:
            known.append(KnownOptimum(o, val, str(k.get("provenance", ""))))
    # The instance's own problems, then the network's and the hardware's: all at once.
    errors = StemsInputError(issues).with_file(file).issues
    network = hardware = None
    net_file = file
    try:
        network, net_file = part("network", load_network, network_from_dict)
    except StemsInputError as exc:
        errors += exc.with_file(file).issues
    try:
        hardware, _ = part("hardware", load_hardware, hardware_from_dict)
    except StemsInputError as exc:
        errors += exc.with_file(file).issues
    if network is not None and hardware is not None:
        errors += magnitude_issues(network, hardware, net_file)
    if errors:
        raise StemsInputError(errors)
    return Problem(network, hardware, obj, str(d.get("name", path.stem)), tuple(known), max_seg)


# ---------------------------------------------------------------------------
# Mappings
# ---------------------------------------------------------------------------

def load_mapping(path: str | Path, problem: Problem | None = None) -> Mapping:
    """Read a mapping YAML or JSON file; with ``problem``, a file that does not parse
    also reports the structural problems of its other segments."""
    return mapping_from_dict(read_document(path), str(path), problem)


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

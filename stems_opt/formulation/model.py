r"""The joint mapping MIP, stated once and handed to every backend.

Sets: layers :math:`l = 0..L-1`; frames :math:`f` (candidate segments over
layers :math:`first_f..last_f`); options :math:`o \in O_{f,l}` of layer
:math:`l` in frame :math:`f`; capacity rows :math:`r` of frame :math:`f`
(one per tile and layer position); tensors :math:`X` that may stay whole
on chip across segments, produced by layer :math:`p_X` and last read by
:math:`q_X`.

Variables (all binary):
:math:`y_f` frame chosen; :math:`x_{f,l,o}` option chosen;
:math:`a_{f,X}` tensor :math:`X` on chip inside frame :math:`f`;
:math:`h_{f,X}` its DRAM halo kept; :math:`c_k` a segment starts at layer
:math:`k`; :math:`w_{X,k}` tensor :math:`X` whole on chip while layer
:math:`k` runs (:math:`p_X < k \le q_X`); :math:`u_{f,X}` tensor :math:`X`
occupies the buffer during frame :math:`f`.

Objective: :math:`\min \sum_{f,l,o} cost_o\, x_{f,l,o}` (traffic bits, or
energy in fJ plus a constant).

Constraints:

1. ``cover[l]``: :math:`\sum_{f \ni l} y_f = 1` (segments partition the layers).
2. ``cut[k]``: :math:`c_k = \sum_{f: first_f = k} y_f`.
3. ``choose[f,l]``: :math:`\sum_o x_{f,l,o} = y_f`.
4. ``place[f,X,l]``: for :math:`X` made and read in :math:`f`, the options of its
   producer with :math:`X` on chip and, for each in-frame consumer, the
   options reading :math:`X` on chip, each sum to :math:`a_{f,X}`.
5. ``halo[f,X,l]``: for each consumer of a DRAM-read :math:`X`, its options
   keeping the halo sum to :math:`h_{f,X}` (one rule per tensor and segment).
6. ``cross_in[f,X,l]``: an option reading :math:`X` (made before
   :math:`first_f`) on chip needs :math:`w_{X,first_f} = 1`; from DRAM, :math:`0`.
7. ``cross_out[f,X]``: the producer's option keeps :math:`X` whole iff
   :math:`w_{X,last_f+1} = 1`, and writes it for a later DRAM reader iff
   :math:`w_{X,q_X} = 0`.
8. ``whole_span[X,k]``: :math:`w_{X,k} \le w_{X,k-1}` and
   :math:`w_{X,k-1} - w_{X,k} \le c_k` (a tensor stays whole over a run
   of whole segments).
9. ``whole_in[f,X]``: :math:`u_{f,X} \ge w_{X,first_f} + y_f - 1` for
   :math:`p_X < first_f \le q_X`.
10. ``capacity[f,r]``: :math:`\sum_{l,o} g_{o,r}\, x_{f,l,o} + \sum_X |X|\, u_{f,X}
    + \sum_X k_{f,X}\, h_{f,X} \le C\, y_f`, with :math:`g_{o,r}` the option's
    persistent plus local bits on row :math:`r` (identical rows are merged) and
    :math:`k_{f,X}` the rows of :math:`X` its readers keep across tile
    boundaries, counted once for all of them.

Every coefficient is an integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stems_opt.formulation.data import CHIP, KEEP, Frame, LayerOption, ModelData
from stems_opt.mapping import Halo, Mapping, Placement, Segment


@dataclass
class LinearModel:
    """A pure-binary linear model: named rows over named columns."""

    names: list[str] = field(default_factory=list)
    objective: list[int] = field(default_factory=list)
    rows: list[tuple[str, list[int], list[int], float, float]] = field(default_factory=list)

    def var(self, name: str, cost: int = 0) -> int:
        """Add a binary variable; returns its index."""
        self.names.append(name)
        self.objective.append(cost)
        return len(self.names) - 1

    def row(self, name: str, idx: Sequence[int], coef: Sequence[int], lo: float,
            hi: float) -> None:
        """Add ``lo <= sum coef * x[idx] <= hi``."""
        self.rows.append((name, list(idx), [int(c) for c in coef], lo, hi))

    def families(self) -> dict[str, int]:
        """Row count per constraint family (the name before ``[``)."""
        out: dict[str, int] = {}
        for name, *_ in self.rows:
            fam = name.split("[", 1)[0]
            out[fam] = out.get(fam, 0) + 1
        return out


INF = float("inf")


class Variables:
    """Indices of the model's variables, with query methods."""

    def __init__(self) -> None:
        self.frame: dict[int, int] = {}
        self.option: dict[tuple[int, str], list[int]] = {}
        self.on_chip: dict[tuple[int, str], int] = {}
        self.keep: dict[tuple[int, str], int] = {}
        self.cut: dict[int, int] = {}
        self.whole: dict[tuple[str, int], int] = {}
        self.occupies: dict[tuple[int, str], int] = {}

    def options(self, frame: int, layer: str) -> list[int]:
        """Option variables of ``layer`` in ``frame``."""
        return self.option[(frame, layer)]


def build_linear_model(data: ModelData) -> tuple[LinearModel, Variables]:
    """State the MIP of the module docstring over ``data``."""
    net = data.problem.network
    L = len(net.layers)
    lm = LinearModel()
    v = Variables()
    for k in range(1, L):
        v.cut[k] = lm.var(f"c[{k}]")
    for X in data.whole_candidates:
        p, q = data.producer[X], data.last_consumer[X]
        for k in range(p + 1, q + 1):
            v.whole[(X, k)] = lm.var(f"w[{X},{k}]")
    for f in data.frames:
        v.frame[f.index] = lm.var(f"y[{f.index}]")
        for name, opts in f.options.items():
            v.option[(f.index, name)] = [lm.var(f"x[{f.index},{name},{i}]", o.cost)
                                         for i, o in enumerate(opts)]
        for X in f.frame_tensors:
            v.on_chip[(f.index, X)] = lm.var(f"a[{f.index},{X}]")
        readers = _dram_readers(f)
        for X in readers:
            v.keep[(f.index, X)] = lm.var(f"h[{f.index},{X}]")
        for X in data.whole_candidates:
            if data.producer[X] < f.first <= data.last_consumer[X]:
                v.occupies[(f.index, X)] = lm.var(f"u[{f.index},{X}]")
    _add_cover(lm, v, data)
    _add_cut(lm, v, data)
    for f in data.frames:
        _add_choose(lm, v, f)
        _add_place(lm, v, f)
        _add_halo(lm, v, f)
        _add_cross_in(lm, v, data, f)
        _add_cross_out(lm, v, data, f)
        _add_whole_in(lm, v, data, f)
        occ = [(data.whole_candidates[X], u) for (fi, X), u in v.occupies.items()
               if fi == f.index] + _kept_halos(v, f)
        _add_capacity(lm, v, f, data.capacity_bits, occ)
    _add_whole_span(lm, v, data)
    return lm, v


def _dram_readers(f: Frame) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, opts in f.options.items():
        for o in opts:
            for ic in o.inputs:
                if ic.source == KEEP and name not in out.get(ic.tensor, []):
                    out.setdefault(ic.tensor, []).append(name)
    return out


def _kept_halos(v: Variables, f: Frame) -> list[tuple[int, int]]:
    """(bits, halo variable) of the rows each DRAM-read tensor keeps across tiles."""
    return [(f.halo_bits[X], h) for (fi, X), h in v.keep.items()
            if fi == f.index and f.halo_bits.get(X, 0) > 0]


def _add_cover(lm: LinearModel, v: Variables, data: ModelData) -> None:
    """(1) every layer in exactly one chosen frame."""
    L = len(data.problem.network.layers)
    by_layer: list[list[int]] = [[] for _ in range(L)]
    for f in data.frames:
        for i in range(f.first, f.last + 1):
            by_layer[i].append(v.frame[f.index])
    for i, idx in enumerate(by_layer):
        lm.row(f"cover[{data.problem.network.layers[i].name}]", idx, [1] * len(idx), 1, 1)


def _add_cut(lm: LinearModel, v: Variables, data: ModelData) -> None:
    """(2) c_k counts the chosen frames starting at k."""
    starts: dict[int, list[int]] = {}
    for f in data.frames:
        if f.first > 0:
            starts.setdefault(f.first, []).append(v.frame[f.index])
    for k, c in v.cut.items():
        idx = starts.get(k, [])
        lm.row(f"cut[{k}]", [c, *idx], [1] + [-1] * len(idx), 0, 0)


def _add_choose(lm: LinearModel, v: Variables, f: Frame) -> None:
    """(3) one option per layer of a chosen frame."""
    y = v.frame[f.index]
    for name in f.layers:
        idx = v.options(f.index, name)
        lm.row(f"choose[{f.index},{name}]", [*idx, y], [1] * len(idx) + [-1], 0, 0)


def _sum_eq(lm: LinearModel, name: str, idx: list[int], var: int) -> None:
    lm.row(name, [*idx, var], [1] * len(idx) + [-1], 0, 0)


def _readers(v: Variables, f: Frame, X: str, source: str
             ) -> list[tuple[str, list[int], list[int]]]:
    """Per layer of ``f`` reading ``X``: its option variables, and those reading
    ``X`` from ``source``."""
    out = []
    for name in f.layers:
        opts = f.options[name]
        if not any(ic.tensor == X for ic in opts[0].inputs):
            continue
        idx = v.options(f.index, name)
        match = [i for i, o in zip(idx, opts, strict=True)
                 if any(ic.tensor == X and ic.source == source for ic in o.inputs)]
        out.append((name, idx, match))
    return out


def _add_place(lm: LinearModel, v: Variables, f: Frame) -> None:
    """(4) producer and in-frame consumers agree on the in-segment placement."""
    for X in f.frame_tensors:
        a = v.on_chip[(f.index, X)]
        prod = [i for i, o in zip(v.options(f.index, X), f.options[X], strict=True)
                if o.output.on_chip]
        _sum_eq(lm, f"place[{f.index},{X},{X}]", prod, a)
        for name, _, chip in _readers(v, f, X, CHIP):
            _sum_eq(lm, f"place[{f.index},{X},{name}]", chip, a)


def _add_halo(lm: LinearModel, v: Variables, f: Frame) -> None:
    """(5) one halo rule per DRAM-read tensor and segment."""
    for X in _dram_readers(f):
        h = v.keep[(f.index, X)]
        for name, _, keep in _readers(v, f, X, KEEP):
            _sum_eq(lm, f"halo[{f.index},{X},{name}]", keep, h)


def _add_cross_in(lm: LinearModel, v: Variables, data: ModelData, f: Frame) -> None:
    """(6) reading an earlier tensor on chip needs it whole at the frame's start."""
    for X in f.in_tensors:
        w = v.whole.get((X, f.first))
        for name, idx, chip in _readers(v, f, X, CHIP):
            dram = [i for i in idx if i not in set(chip)]
            if w is None:
                if chip:
                    lm.row(f"cross_in[{f.index},{X},{name}]", chip, [1] * len(chip), 0, 0)
                continue
            lm.row(f"cross_in[{f.index},{X},{name}]", [*chip, w], [1] * len(chip) + [-1], -INF, 0)
            lm.row(f"cross_in[{f.index},{X},{name},dram]", [*dram, w], [1] * len(dram) + [1],
                   -INF, 1)


def _add_cross_out(lm: LinearModel, v: Variables, data: ModelData, f: Frame) -> None:
    """(7) keeping whole and writing for later readers follow w."""
    for X in f.out_tensors:
        if X not in data.whole_candidates:
            continue
        idx = v.options(f.index, X)
        opts = f.options[X]
        w_next = v.whole[(X, f.last + 1)]
        w_last = v.whole[(X, data.last_consumer[X])]
        whole = [i for i, o in zip(idx, opts, strict=True) if o.output.whole]
        part = [i for i, o in zip(idx, opts, strict=True) if not o.output.whole]
        cw = [i for i, o in zip(idx, opts, strict=True) if o.output.cross_write]
        ncw = [i for i, o in zip(idx, opts, strict=True) if not o.output.cross_write]
        lm.row(f"cross_out[{f.index},{X},whole]", [*whole, w_next], [1] * len(whole) + [-1],
               -INF, 0)
        lm.row(f"cross_out[{f.index},{X},part]", [*part, w_next], [1] * len(part) + [1], -INF, 1)
        lm.row(f"cross_out[{f.index},{X},write]", [*cw, w_last], [1] * len(cw) + [1], -INF, 1)
        lm.row(f"cross_out[{f.index},{X},nowrite]", [*ncw, w_last], [1] * len(ncw) + [-1],
               -INF, 0)


def _add_whole_span(lm: LinearModel, v: Variables, data: ModelData) -> None:
    """(8) w is non-increasing along the layers and drops only at a cut."""
    for X in data.whole_candidates:
        p, q = data.producer[X], data.last_consumer[X]
        for k in range(p + 2, q + 1):
            lm.row(f"whole_span[{X},{k}]", [v.whole[(X, k)], v.whole[(X, k - 1)]], [1, -1],
                   -INF, 0)
            lm.row(f"whole_span[{X},{k},cut]", [v.whole[(X, k - 1)], v.whole[(X, k)],
                                                v.cut[k]], [1, -1, -1], -INF, 0)


def _add_whole_in(lm: LinearModel, v: Variables, data: ModelData, f: Frame) -> None:
    """(9) a tensor whole at a chosen frame's start occupies its buffer."""
    y = v.frame[f.index]
    for X in data.whole_candidates:
        u = v.occupies.get((f.index, X))
        if u is None:
            continue
        lm.row(f"whole_in[{f.index},{X}]", [v.whole[(X, f.first)], y, u], [1, 1, -1], -INF, 1)


def _add_capacity(lm: LinearModel, v: Variables, f: Frame, capacity_bits: int,
                  occupancy: list[tuple[int, int]]) -> None:
    """(10) every (tile, position) row of a chosen frame fits the buffer.

    ``occupancy`` lists (bits, variable) of tensors that may sit whole in the buffer.
    """
    cols: list[int] = []
    mats: list[np.ndarray] = []
    for name in f.layers:
        for i, o in zip(v.options(f.index, name), f.options[name], strict=True):
            cols.append(i)
            mats.append(o.coeff)
    mat = np.stack(mats, axis=1)  # rows x options
    mat = np.unique(mat, axis=0)
    # A row dominated by another (every coefficient no larger) is implied by it.
    order = np.argsort(-mat.sum(axis=1))
    kept: list[np.ndarray] = []
    for r in order:
        row = mat[r]
        if any(np.all(row <= k) for k in kept):
            continue
        kept.append(row)
    y = v.frame[f.index]
    for r, row in enumerate(kept):
        nz = np.nonzero(row)[0]
        idx = [cols[j] for j in nz] + [u for _, u in occupancy] + [y]
        coef = [int(row[j]) for j in nz] + [bits for bits, _ in occupancy] + [-capacity_bits]
        lm.row(f"capacity[{f.index},{r}]", idx, coef, -INF, 0)


def build_frame_model(f: Frame, capacity_bits: int) -> tuple[LinearModel, Variables]:
    """The MIP of one frame alone (families 3, 4, 5 and 10, the frame chosen):
    its least-cost options that fit ``capacity_bits``."""
    lm = LinearModel()
    v = Variables()
    v.frame[f.index] = lm.var(f"y[{f.index}]")
    lm.row(f"chosen[{f.index}]", [v.frame[f.index]], [1], 1, 1)
    for name, opts in f.options.items():
        v.option[(f.index, name)] = [lm.var(f"x[{f.index},{name},{i}]", o.cost)
                                     for i, o in enumerate(opts)]
    for X in f.frame_tensors:
        v.on_chip[(f.index, X)] = lm.var(f"a[{f.index},{X}]")
    for X in _dram_readers(f):
        v.keep[(f.index, X)] = lm.var(f"h[{f.index},{X}]")
    _add_choose(lm, v, f)
    _add_place(lm, v, f)
    _add_halo(lm, v, f)
    _add_capacity(lm, v, f, capacity_bits, _kept_halos(v, f))
    return lm, v


def decode(data: ModelData, v: Variables, values: Sequence[float]) -> Mapping:
    """The mapping of a solution vector."""
    segs = []
    for f in sorted(data.frames, key=lambda fr: fr.first):
        if values[v.frame[f.index]] < 0.5:
            continue
        chosen: dict[str, LayerOption] = {}
        for name in f.layers:
            for i, o in zip(v.options(f.index, name), f.options[name], strict=True):
                if values[i] > 0.5:
                    chosen[name] = o
        segs.append(segment_of(f, chosen))
    return Mapping(tuple(segs))


def segment_of(f: Frame, chosen: dict[str, LayerOption]) -> Segment:
    """The segment a frame and one option per layer describe."""
    acts, ins, halos = {}, {}, {}
    for name, o in chosen.items():
        if o.output.on_chip is not None:
            acts[name] = Placement.ON_CHIP if o.output.on_chip else Placement.DRAM
        for ic in o.inputs:
            if not ic.in_frame:
                ins[ic.tensor] = Placement.ON_CHIP if ic.source == CHIP else Placement.DRAM
            if ic.source != CHIP:
                halos[ic.tensor] = Halo.KEEP if ic.source == KEEP else Halo.REREAD
    return Segment(
        layers=f.layers, time_batch=f.time_batch, tiles=f.tiles, axis=f.axis, order=f.order,
        sub_tiles={n: o.m for n, o in chosen.items()},
        weights={n: o.weight for n, o in chosen.items() if o.weight is not None},
        states={n: o.state for n, o in chosen.items() if o.state is not None},
        activations=acts, inputs=ins, halos=halos)


def encode_hint(data: ModelData, v: Variables, mapping: Mapping) -> dict[int, int] | None:
    """Variable values (the ones set to 1) of ``mapping``, or ``None`` when a piece of it
    is not in the model (pruned as dominated or out of the search space)."""
    from stems_opt.cost.traffic import mapping_contexts

    net = data.problem.network
    index = {lay.name: i for i, lay in enumerate(net.layers)}
    frames = {(f.first, f.last, f.time_batch, f.axis, f.tiles, f.order): f for f in data.frames}
    contexts = mapping_contexts(net, mapping)
    where = {name: i for i, seg in enumerate(mapping.segments) for name in seg.layers}
    hint: dict[int, int] = {}
    chosen: dict[int, Frame] = {}
    for si, seg in enumerate(mapping.segments):
        f = frames.get((index[seg.layers[0]], index[seg.layers[-1]], seg.time_batch, seg.axis,
                        seg.tiles, seg.order))
        if f is None:
            return None
        chosen[si] = f
        hint[v.frame[f.index]] = 1
        if f.first > 0:
            hint[v.cut[f.first]] = 1
        for name in f.layers:
            later = [where[c] for c in net.consumers(name) if where[c] > si]
            cross_write = any(mapping.segments[s].input(name) is Placement.DRAM for s in later)
            whole = name in contexts[si].whole
            match = [i for i, o in zip(v.options(f.index, name), f.options[name], strict=True)
                     if _option_matches(o, seg, whole, cross_write)]
            if not match:
                return None
            hint[match[0]] = 1
            o = f.options[name][v.options(f.index, name).index(match[0])]
            if o.output.on_chip and (f.index, name) in v.on_chip:
                hint[v.on_chip[(f.index, name)]] = 1
            for ic in o.inputs:
                if ic.source == KEEP:
                    hint[v.keep[(f.index, ic.tensor)]] = 1
    for (X, k), var in v.whole.items():
        if X in contexts[where[net.layers[k].name]].whole:
            hint[var] = 1
    for (fi, X), var in v.occupies.items():
        f = data.frames[fi]
        if v.frame[fi] in hint and hint.get(v.whole[(X, f.first)], 0):
            hint[var] = 1
    return hint


def _option_matches(o: LayerOption, seg: Segment, whole: bool, cross_write: bool) -> bool:
    name = o.layer
    if o.m != seg.sub_tile(name) or o.output.whole != whole or \
            o.output.cross_write != cross_write:
        return False
    if o.weight is not None and o.weight != seg.weight(name):
        return False
    if o.state is not None and o.state != seg.state(name):
        return False
    if o.output.on_chip is not None and o.output.on_chip != (
            seg.activation(name) is Placement.ON_CHIP):
        return False
    for ic in o.inputs:
        place = seg.activation(ic.tensor) if ic.in_frame else seg.input(ic.tensor)
        if (ic.source == CHIP) != (place is Placement.ON_CHIP):
            return False
        if ic.source != CHIP and (ic.source == KEEP) != (seg.halo(ic.tensor) is Halo.KEEP):
            return False
    return True

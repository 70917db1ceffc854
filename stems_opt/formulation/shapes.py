"""Shape keys: intervals whose layers are equal up to names share their columns' work.

A deep network repeats its blocks (SEW-ResNet-152 has 36 identical bottleneck
blocks in its third stage), and an interval of layers inside one of them has
translates in the others: the same layers in the same order, reading each
other the same way, and meeting the rest of the network through tensors of
the same sizes in the same relation to the interval. Everything a column of
the interval depends on (its frames, their bounds, its exact value, its
segments) is then the same up to the names of layers and tensors.

:class:`ShapeIndex` gives each interval a *shape*: an interned key of
everything the column's frames, bounds and cost read, and a map of the
interval's tensor names to canonical ids (layer ``i`` of the interval is
``i``, the ``k``-th tensor from outside is ``-(k + 1)``). Two intervals with
equal keys have columns that correspond signature by signature
(:meth:`ShapeIndex.signature`), and a segment of one translates to the
other (:meth:`ShapeIndex.translate`). The key errs on the fine side: a
relation it records that no cost reads only costs sharing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from stems_opt.mapping import Segment
from stems_opt.network import Axis, Network

#: Fields of a layer that are names, not shape: the key replaces them by canonical ids.
NAME_FIELDS = frozenset({"name", "inputs"})


@dataclass(frozen=True)
class IntervalShape:
    """The shape of one interval.

    ``key`` is the interned shape key (equal keys: translated intervals);
    ``canon`` maps the names of the interval's tensors (its layers' outputs and
    every tensor from outside it reads or that crosses its start) to canonical
    ids, ``names`` back.
    """

    key: Hashable
    canon: dict[str, int]
    names: dict[int, str]


def _fields(obj: object) -> tuple:
    """Every field of a dataclass but its names (a new field joins the key by itself)."""
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj)
                 if f.name not in NAME_FIELDS)


class ShapeIndex:
    """Shapes of the intervals of one problem (one network, buffer and objective).

    ``whole_candidates``, ``outputs``: the problem's tensors that may stay
    whole across segments (with their sizes) and its network outputs;
    ``producer``/``last_consumer``: layer index of each tensor's producer
    (-1: the network input) and last reader; ``crossing_in(first)``: the
    whole candidates crossing the start of an interval, in signature order.
    With ``share`` false every interval has a shape of its own (no sharing).
    """

    def __init__(self, network: Network, whole_candidates: dict[str, int],
                 outputs: Iterable[str], producer: dict[str, int],
                 last_consumer: dict[str, int], crossing_in, share: bool = True):
        self.net = network
        self.whole = whole_candidates
        self.outputs = frozenset(outputs)
        self.producer = producer
        self.last_consumer = last_consumer
        self.crossing_in = crossing_in
        self.share = share
        self.index = {lay.name: i for i, lay in enumerate(network.layers)}
        self._layer_ids: dict[tuple, int] = {}
        self._layer_of = [self._intern_layer(_fields(lay)) for lay in network.layers]
        self._input = ("input", _fields(network.input))
        self._keys: dict[tuple, int] = {}
        self._shapes: dict[tuple[int, int], IntervalShape] = {}

    def _intern_layer(self, fields: tuple) -> int:
        return self._layer_ids.setdefault(fields, len(self._layer_ids))

    def _tensor(self, name: str, first: int) -> tuple:
        """What the key records of a tensor: its producer (the network input's
        description, or the producer's offset from ``first`` and its layer
        fields), size, row sizes, whether it may stay whole (and its size
        then), whether it is a network output, and its readers' offsets from
        ``first``."""
        net = self.net
        p = self.producer[name]
        made = self._input if p < 0 else ("layer", p - first, self._layer_of[p])
        return (made, net.tensor_size_bits(name), net.tensor_row_bits(name, Axis.OY),
                net.tensor_row_bits(name, Axis.OX), self.whole.get(name),
                name in self.outputs,
                tuple(self.index[c] - first for c in net.consumers(name)))

    def shape(self, first: int, last: int) -> IntervalShape:
        """The shape of ``first..last`` (computed once)."""
        got = self._shapes.get((first, last))
        if got is not None:
            return got
        layers = self.net.layers[first:last + 1]
        canon: dict[str, int] = {lay.name: i for i, lay in enumerate(layers)}
        # Tensors from outside: the whole candidates crossing the start (the
        # signature's order), then the others the interval reads, as first read.
        outside: list[str] = list(self.crossing_in(first))
        for lay in layers:
            for src in lay.inputs:
                if src not in canon and src not in outside:
                    outside.append(src)
        for k, name in enumerate(outside):
            canon[name] = -(k + 1)
        names = {cid: name for name, cid in canon.items()}
        if not self.share:
            key: Hashable = ("interval", first, last)
        else:
            body = (
                tuple((self._layer_of[first + i], tuple(canon[s] for s in lay.inputs),
                       self._tensor(lay.name, first)) for i, lay in enumerate(layers)),
                tuple(self._tensor(name, first) for name in outside),
                # Whether each tensor is read after the interval (a signature's outputs)
                # and whether each crossing tensor passes the interval's end.
                tuple(self.last_consumer.get(lay.name, -1) > last for lay in layers),
                tuple(self.last_consumer.get(name, -1) > last for name in outside),
            )
            key = self._keys.setdefault(body, len(self._keys))
        got = self._shapes[(first, last)] = IntervalShape(key, canon, names)
        return got

    @staticmethod
    def signature(shape: IntervalShape, sig) -> tuple:
        """The canonical form of a :class:`~stems_opt.formulation.column_base.Signature`
        of the interval."""
        c = shape.canon
        return (tuple((c[X], w) for X, w in sig.whole_in),
                tuple((c[X], w, cw) for X, w, cw in sig.outputs))

    @staticmethod
    def tensors(shape: IntervalShape, names: Iterable[str]) -> frozenset[int]:
        """The canonical ids of a set of the interval's tensor names."""
        c = shape.canon
        return frozenset(c[X] for X in names)

    @staticmethod
    def translate(seg: Segment, src: IntervalShape, dst: IntervalShape) -> Segment | None:
        """``seg`` (a segment of the interval of shape ``src``) with the names of the
        interval of shape ``dst`` (same key), or ``None`` when it names a tensor
        the shape does not know."""
        rename: dict[str, str] = {}
        for name, cid in src.canon.items():
            other = dst.names.get(cid)
            if other is None:
                return None
            rename[name] = other
        changes: dict[str, object] = {}
        for f in dataclasses.fields(seg):
            value = getattr(seg, f.name)
            if f.name == "layers":
                if any(n not in rename for n in value):
                    return None
                changes[f.name] = tuple(rename[n] for n in value)
            elif isinstance(value, dict):
                if any(n not in rename for n in value):
                    return None
                changes[f.name] = {rename[n]: v for n, v in value.items()}
        return dataclasses.replace(seg, **changes)

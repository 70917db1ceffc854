"""Tensors that pass a weighted layer on chip: a floor per (tensor, layer) pair
(``docs/solver.md``, "Tensors held past a chunked layer").

Take a layer ``c`` that reads a tensor ``X`` and the output of a layer ``l``
with weights, where ``c`` is ``l``'s only reader, ``X`` is made by a layer
``p`` before ``l`` and is not one of ``l``'s inputs (SEW-ResNet's ``add``:
``X`` the block's input, ``l`` its last conv). In any segment containing
``p``, ``l`` and ``c``, ``X`` either goes through DRAM (``c`` reads it, and
it is written unless a later segment's reader forces that write anyway) or
stays on chip, and then every step of ``l`` holds rows of it:

* ``l`` is no segment output (its only reader is inside), so its rows in a
  tile are what ``c`` needs for its own rows of that tile: a tile where
  ``l`` runs is one where ``c`` runs, on ``r >= 1`` rows, and ``l``'s
  ``R`` rows there span at most ``(r - 1) s + max(s, f)`` of ``c``'s input
  rows (``s``, ``f`` its stride and window; an ``add`` is ``s = f = 1``);
* ``c``'s window over ``X`` for those rows is then held at ``l``'s position
  in that tile: rows made in the tile are live from ``p`` to ``c``, rows
  made before it are carried (kept whole: all of ``X``), each times at
  least ``Tb``.

``l``'s largest tile has at least ``ceil(E / a)`` rows (``a`` tiles where it
runs) and its largest sub-tile there ``ceil(E / q)`` (``q = a m``), so that
step holds what :mod:`~stems_opt.formulation.chunk_floor` counts (a chunk,
the sub-tile's output, state and input rows) plus ``X``'s window of the
fewest ``c`` rows ``ceil(E / q)`` rows of ``l`` need. The least
``(S q - 1) |W|`` over the time batches and ``q`` where that fits, less the
layer's chunk floor, is what keeping ``X`` on chip costs at least beyond the
floor; the item is the less of it and ``X``'s DRAM traffic. Items with
distinct tensors and distinct layers are distinct decisions, so their sum
adds to every column containing all of theirs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stems_opt.cost.traffic import min_read_bits
from stems_opt.formulation.step_floor import (
    least_window_rows,
    smallest_chunk_bits,
    step_bits,
)
from stems_opt.network import Axis, Layer, LayerKind, Network, divisors


@dataclass(frozen=True)
class BypassItem:
    """One tensor held past one weighted layer (bits; indices into the layers).

    ``on_chip_bits`` is what holding the tensor on chip adds at least to the
    layer's weight reads over its chunk floor; ``read_bits`` the least reads of
    the tensor by its reader from DRAM; ``write_bits`` its write, charged only
    where no later segment can force it (every reader inside, not an output).
    """

    tensor: str
    producer: int
    layer: int
    reader: int
    last_reader: int
    network_output: bool
    on_chip_bits: float
    read_bits: int
    write_bits: int

    def bits(self, last: int) -> float:
        """The item in an interval ending at ``last`` (it contains the three layers)."""
        write = self.write_bits if self.last_reader <= last and not self.network_output \
            else 0
        return min(self.on_chip_bits, self.read_bits + write)


def _reader_rows(reader: Layer, axis: Axis, rows: int) -> int:
    """The fewest rows of ``reader`` whose window spans ``rows`` rows of an input."""
    if reader.kind in (LayerKind.FLATTEN, LayerKind.LINEAR):
        return 1  # (one row reads the whole input)
    if reader.kind is LayerKind.ADD:
        s, f = 1, 1
    elif axis is Axis.OY:
        s, f = reader.stride_y, reader.fy
    else:
        s, f = reader.stride_x, reader.fx
    return max(1, -(-(rows - max(s, f)) // s) + 1)


def _held_bits(network: Network, lay: Layer, reader: Layer, tensor: str, axis: Axis,
               rows: int, tb: int) -> int:
    """Least bits ``lay``'s step of ``rows`` rows holds beside its weights, with
    ``tensor``'s rows that ``reader`` needs in the same tile."""
    need = least_window_rows(reader, axis, _reader_rows(reader, axis, rows))
    return step_bits(network, lay, axis, rows, tb) + \
        need * network.tensor_row_bits(tensor, axis) * tb


def _on_chip_floor(network: Network, lay: Layer, reader: Layer, tensor: str,
                   axis: Axis, capacity_bits: int, k_unroll: int) -> float:
    """Least extra reads (bits) of ``lay``'s weights with ``tensor`` on chip past it."""
    w, T, extent = lay.weight_size_bits, network.timesteps, lay.extent(axis)
    if w + _held_bits(network, lay, reader, tensor, axis, 1, 1) <= capacity_bits:
        return 0  # whole weights beside the finest step: read once
    chunk = smallest_chunk_bits(lay, k_unroll)
    if chunk is None:
        return math.inf  # (the layer cannot run beside the tensor at all)
    best = math.inf
    for tb in divisors(T):
        for q in range(1, extent + 1):
            if chunk + _held_bits(network, lay, reader, tensor, axis, -(-extent // q), tb) \
                    <= capacity_bits:
                best = min(best, (T // tb * q - 1) * w)
                break  # (more steps only read the weights more often)
    return best


def bypass_items(network: Network, capacity_bits: int, k_unroll: int, axes: Iterable[Axis],
                 chunk_floors: Sequence[int]) -> tuple[BypassItem, ...]:
    """The items worth something, each tensor and each layer in one item at most.

    Parameters
    ----------
    network, capacity_bits, k_unroll, axes
        As :func:`~stems_opt.formulation.chunk_floor.layer_chunk_floors`.
    chunk_floors
        Its per-layer floors (bits): an item counts beyond them.
    """
    axes = tuple(axes)
    index = {lay.name: i for i, lay in enumerate(network.layers)}
    outputs = set(network.output_names)
    used_tensors: set[str] = set()
    items = []
    for c, reader in enumerate(network.layers):
        best: BypassItem | None = None
        for src in dict.fromkeys(reader.inputs):
            at = index.get(src)
            if at is None or src in outputs or network.consumers(src) != (reader.name,):
                continue
            lay = network.layers[at]
            if not lay.has_weights:
                continue
            for tensor in dict.fromkeys(reader.inputs):
                p = index.get(tensor, -1)
                if not 0 <= p < at or tensor in lay.inputs or tensor in used_tensors:
                    continue
                held = min(_on_chip_floor(network, lay, reader, tensor, a, capacity_bits,
                                          k_unroll) for a in axes)
                gain = held - chunk_floors[at]
                if gain <= 0:
                    continue
                item = BypassItem(
                    tensor, p, at, c, max(index[r] for r in network.consumers(tensor)),
                    tensor in outputs, gain,
                    min(min_read_bits(network, tensor, reader.name, a) for a in axes),
                    network.tensor_size_bits(tensor))
                if best is None or item.bits(len(network.layers)) > \
                        best.bits(len(network.layers)):
                    best = item
        if best is not None:  # (each layer has one reader, so one item per layer)
            items.append(best)
            used_tensors.add(best.tensor)
    return tuple(items)


class BypassFloors:
    """The items of :func:`bypass_items` in model units, summed over intervals.

    Parameters
    ----------
    items
        The items.
    read_rate, write_rate
        Model units per DRAM read and write bit (traffic: 1 and 1).
    """

    def __init__(self, items: Sequence[BypassItem], read_rate: float, write_rate: float):
        self.items = tuple(items)
        self._rates = (read_rate, write_rate)
        self._by_first: dict[int, list[BypassItem]] = {}
        for it in self.items:
            self._by_first.setdefault(it.producer, []).append(it)

    def item_value(self, item: BypassItem, last: int) -> float:
        """One item in model units, in an interval ending at ``last``."""
        r, w = self._rates
        write = item.write_bits if item.last_reader <= last and not item.network_output \
            else 0
        return min(item.on_chip_bits * r, item.read_bits * r + write * w)

    def between(self, first: int, last: int) -> float:
        """What every segment over layers ``first..last`` pays for its items."""
        if not self.items:
            return 0.0
        total = 0.0
        for p in range(first, last + 1):
            for it in self._by_first.get(p, ()):
                if it.reader <= last:
                    total += self.item_value(it, last)
        return total

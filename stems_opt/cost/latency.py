"""Cycles of a layer on the array (spatial unrolling, ceiling per tile)."""

from __future__ import annotations

import math

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.hardware import Hardware
from stems_opt.network import Axis, Layer


def layer_compute_cycles(geo: SegmentGeometry, layer: Layer, hw: Hardware) -> int:
    """Cycles of ``layer`` on the array: spatial unrolling with ceil per tile."""
    arr = hw.array
    T = geo.T
    if not layer.has_weights:
        return math.ceil(layer.operations(T) / arr.pe_count) if layer.operations(T) else 0
    axis = geo.seg.axis
    along, across = ("OY", "OX") if axis is Axis.OY else ("OX", "OY")
    rows = sum(math.ceil(r / arr.factor(along)) for r in geo.tile_rows(layer.name))
    return (T * math.ceil(layer.k / arr.factor("K")) * math.ceil(layer.c / arr.factor("C"))
            * math.ceil(layer.fy / arr.factor("FY")) * math.ceil(layer.fx / arr.factor("FX"))
            * rows * math.ceil(layer.cross_extent(axis) / arr.factor(across)))

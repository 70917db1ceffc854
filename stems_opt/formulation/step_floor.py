"""The least a layer holds at its own position while it computes some output rows
(shared by the per-layer floors of ``chunk_floor.py``, ``energy_floor.py`` and
``bypass_floor.py``)."""

from __future__ import annotations

from stems_opt.network import Axis, Layer, LayerKind, Network, most_chunks


def smallest_chunk_bits(lay: Layer, k_unroll: int) -> int | None:
    """Bits of the smallest legal weight chunk (``None`` when chunking is not legal)."""
    chunks = most_chunks(lay.k, k_unroll)
    return lay.weight_size_bits // chunks if chunks > 1 else None


def least_window_rows(lay: Layer, axis: Axis, rows: int) -> int:
    """The fewest input rows the window of ``rows`` consecutive output rows spans.

    The window's length is concave in its start (a clip at either end), so the
    least is at the first or the last position."""
    extent = lay.extent(axis)
    return min(hi - lo for lo, hi in (lay.window(axis, 0, rows),
                                      lay.window(axis, extent - rows, extent)))


def shared_rows(lay: Layer, axis: Axis) -> int:
    """The most input rows two consecutive windows share (``F - s`` when positive)."""
    if lay.kind not in (LayerKind.CONV, LayerKind.POOL):
        return 0
    f, s = (lay.fy, lay.stride_y) if axis is Axis.OY else (lay.fx, lay.stride_x)
    return max(0, f - s)


def step_bits(network: Network, lay: Layer, axis: Axis, rows: int, tb: int) -> int:
    """Least bits the layer holds at its own position while computing ``rows`` output
    rows of ``tb`` timesteps, besides its weights."""
    held = rows * (lay.output_row_bits(axis) * tb + lay.state_row_bits(axis))
    window = max(0, least_window_rows(lay, axis, rows) - shared_rows(lay, axis))
    for src in dict.fromkeys(lay.inputs):
        held += window * network.tensor_row_bits(src, axis) * tb
    return held

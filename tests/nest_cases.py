"""Small loop-nest cases shared by the nest tests: a hardware with both inner buffers
and step shapes that share one nest grid (one batch of ``solve_nests``)."""

from __future__ import annotations

from stems_opt.cost.loops import Buffer, NestHardware, StepShape

BATCH_HW = NestHardware((2, 1, 2, 1, 1, 1), 1, 2, None, Buffer("weight_buffer", 24, 3, 5, None),
                        Buffer("input_buffer", 12, 7, 11, None))


def batch_shapes(last: tuple[int, int, int, int, int]) -> list[StepShape]:
    """Five shapes of one grid (same temporal extents) that differ in rows, windows,
    strides, input bits and state; ``last`` is the fifth's ``(oy, stride_y, iy,
    input_bits, state_bits)``."""
    return [StepShape(k=4, c=2, oy=oy, ox=2, fy=3, fx=1, tb=2, iy=iy, ix=2, stride_y=sy,
                      input_bits=ib, state_bits=sb)
            for oy, sy, iy, ib, sb in [(4, 1, 6, 1, 8), (3, 1, 5, 1, 12), (4, 2, 7, 1, 8),
                                       (3, 2, 5, 4, 8), last]]

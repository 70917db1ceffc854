"""Heuristic schedules scored by the same cost model as the optimiser."""

from stems_opt.heuristics.named import NAMED, Frame, greedy_mapping, named_schedule, parse_schedule

__all__ = ["NAMED", "Frame", "greedy_mapping", "named_schedule", "parse_schedule"]

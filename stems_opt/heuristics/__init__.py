"""Heuristic schedules scored by the same cost model as the optimiser."""

from stems_opt.heuristics.greedy import greedy_fusion
from stems_opt.heuristics.local_search import local_search
from stems_opt.heuristics.named import NAMED, Frame, greedy_mapping, named_schedule, parse_schedule

__all__ = ["NAMED", "Frame", "greedy_fusion", "greedy_mapping", "local_search", "named_schedule",
           "parse_schedule"]

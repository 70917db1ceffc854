"""stems_opt: provably optimal mappings of spiking neural networks onto accelerators.

The public API re-exports the pieces a compiler flow needs::

    from stems_opt import load_instance, solve, evaluate, named_schedule

    problem = load_instance("instances/sew_resnet18_1mb.yaml")
    result = solve(problem, solver="cpsat")
    print(result.status, result.cost.traffic_bits)
"""

from stems_opt.cost_model import Cost, compulsory_traffic_bits, evaluate
from stems_opt.errors import Issue, StemsInputError
from stems_opt.hardware import ComputeArray, Hardware, MemoryLevel
from stems_opt.heuristics import named_schedule
from stems_opt.io import dump_mapping, load_hardware, load_instance, load_mapping, load_network
from stems_opt.mapping import (
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    Violation,
    WeightChoice,
    check,
)
from stems_opt.network import Axis, Layer, LayerKind, Network, NeuronKind, StatePersistence
from stems_opt.problem import Objective, Problem
from stems_opt.result import Result, SolveStatus


def solve(problem: Problem, solver: str = "cpsat", **options: object) -> Result:
    """Find the optimal mapping of ``problem`` (see :func:`stems_opt.solvers.solve`)."""
    from stems_opt.solvers import solve as _solve

    return _solve(problem, solver=solver, **options)  # type: ignore[arg-type]


__version__ = "0.1.0"

__all__ = [
    "Axis", "ComputeArray", "Cost", "Halo", "Hardware", "Issue", "Layer", "LayerKind", "Mapping",
    "MemoryLevel", "Network", "NeuronKind", "Objective", "Order", "Placement", "Problem",
    "Result", "Segment", "SolveStatus", "StateMode", "StatePersistence", "StemsInputError",
    "Violation", "WeightChoice", "__version__", "check", "compulsory_traffic_bits", "dump_mapping",
    "evaluate", "load_hardware", "load_instance", "load_mapping", "load_network",
    "named_schedule", "solve",
]

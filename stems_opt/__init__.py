"""stems_opt: provably optimal mappings of spiking neural networks onto accelerators.

The public API re-exports the pieces a compiler flow needs (``docs/api.md``)::

    from stems_opt import load_problem, solve

    problem = load_problem("instances/sew_resnet18_1mb.yaml")
    result = solve(problem, objective="traffic", solver="cpsat")
    print(result.status, result.cost.traffic_bits)
"""

from stems_opt.cost.evaluation import Cost, evaluate
from stems_opt.cost.nest_store import kept_nests
from stems_opt.cost.traffic import compulsory_traffic_bits
from stems_opt.errors import Issue, StemsInputError
from stems_opt.feasibility import check
from stems_opt.hardware import ComputeArray, Hardware, MemoryLevel
from stems_opt.heuristics import named_schedule
from stems_opt.io import (
    dump_mapping,
    hardware_from_dict,
    load_hardware,
    load_instance,
    load_mapping,
    load_network,
    network_from_dict,
)
from stems_opt.layer_specs import NetworkDefaults, build_network
from stems_opt.mapping import (
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    Violation,
    WeightChoice,
)
from stems_opt.network import (
    Axis,
    Block,
    InputTensor,
    Layer,
    LayerKind,
    Network,
    NeuronKind,
    StatePersistence,
)
from stems_opt.nir_import import NirOptions, load_nir
from stems_opt.problem import Objective, Problem
from stems_opt.report import result_to_dict
from stems_opt.result import Result, SolveStatus
from stems_opt.sources import load_problem
from stems_opt.version import SCHEMA_VERSION, __version__


def solve(problem: Problem, *, objective: Objective | str | None = None, solver: str = "cpsat",
          time_limit_s: float | None = None, threads: int | None = None, seed: int = 0,
          method: str = "columns") -> Result:
    """Find the optimal mapping of ``problem``, with a proof (see ``docs/api.md``).

    Parameters
    ----------
    problem
        What to map: from :func:`load_problem`, :func:`load_instance` or built in code.
    objective
        ``"traffic"`` (DRAM bits), ``"energy"`` (pJ), ``"latency"`` (cycles) or ``"edp"``
        (pJ x cycles, by weighted sums: ``docs/solver.md``); ``None`` keeps ``problem.objective``.
    solver
        ``"cpsat"`` (OR-Tools CP-SAT) or ``"highs"``.
    time_limit_s
        Wall-clock limit in seconds; ``None`` runs to the proof.
    threads
        Solver threads; ``None`` lets the solver choose.
    seed
        Solver random seed.
    method
        ``"columns"`` (default) or ``"monolithic"``; both exact.

    Returns
    -------
    Result
        ``status`` is ``optimal`` only with a proof; ``cost`` is the cost
        model's score of ``mapping``, equal to the solver's objective.
    """
    from stems_opt.solvers import solve as _solve

    if objective is not None:
        problem = problem.with_objective(Objective(objective))
    return _solve(problem, solver=solver, time_limit_s=time_limit_s, threads=threads, seed=seed,
                  method=method)

__all__ = [
    "SCHEMA_VERSION", "Axis", "Block", "ComputeArray", "Cost", "Halo", "Hardware", "InputTensor",
    "Issue", "Layer", "LayerKind", "Mapping", "MemoryLevel", "Network", "NetworkDefaults",
    "NeuronKind", "NirOptions", "Objective", "Order", "Placement", "Problem", "Result", "Segment",
    "SolveStatus", "StateMode", "StatePersistence", "StemsInputError", "Violation",
    "WeightChoice", "__version__", "build_network", "check", "compulsory_traffic_bits",
    "dump_mapping", "evaluate", "hardware_from_dict", "kept_nests", "load_hardware",
    "load_instance", "load_mapping", "load_network", "load_nir", "load_problem",
    "named_schedule", "network_from_dict", "result_to_dict", "solve",
]

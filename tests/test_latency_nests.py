"""Latency with loop nests: least-cycles nests (exact, brute force), the
latency search seeded from the energy optimum."""

from __future__ import annotations

import functools
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from stems_opt.cost.evaluation import evaluate
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.io import hardware_from_dict, load_instance, network_from_dict
from stems_opt.mapping import Mapping
from stems_opt.problem import Objective, Problem
from stems_opt.result import SolveStatus
from stems_opt.solvers import METHODS, solve

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_optimizer import CASES, hardware_dict

ROOT = Path(__file__).resolve().parent.parent


def ported_hardware(size: int, k_unroll: int) -> Any:
    """The tiny accelerator with loop nests, narrow GB and inner-buffer ports and
    rates under which the least-energy nests stall: the cheap weight buffer (1 fJ
    per bit) with a 2-bit port invites weight reuse from it that its port cannot
    carry."""
    d = hardware_dict(size, k_unroll)
    d["global_buffer"].update(read_pj_per_bit=0.01, write_pj_per_bit=0.01,
                              bandwidth_bits_per_cycle=8)
    d["inner_levels"] = [
        {"name": "weight_buffer", "size": 16, "operands": ["W"], "read_pj_per_bit": 0.001,
         "write_pj_per_bit": 0.001, "bandwidth_bits_per_cycle": 2},
        {"name": "input_buffer", "size": 32, "operands": ["I"], "read_pj_per_bit": 0.1,
         "write_pj_per_bit": 0.1, "bandwidth_bits_per_cycle": 2}]
    d["loop_nests"] = True
    return hardware_from_dict(d)


@functools.cache
def ported_problem(objective: Objective) -> Problem:
    network, ku, size = CASES["conv_pool_T2_chunks"]
    return Problem(network_from_dict(network), ported_hardware(size, ku), objective)


@functools.cache
def brute(objective: Objective) -> tuple[float, Mapping]:
    value, mapping, _ = bf.brute_force_optimum(ported_problem(objective), fast=True)
    assert value is not None and mapping is not None
    return value, mapping


def test_latency_with_least_cycles_nests_equals_brute_force() -> None:
    """Both backends, both methods prove the enumerated least latency, every step
    running its least-cycles nest; and on this hardware the least-energy nests
    would make the same mapping slower (so the nest choice is exercised).

    Mutation: building the latency options with least-energy nests
    (``fewest_cycles=False`` in the frame data) makes the solver's objective
    disagree with the cost model (asserted in solve)."""
    p = ported_problem(Objective.LATENCY)
    value, mapping = brute(Objective.LATENCY)
    assert evaluate(p.with_objective(Objective.ENERGY), mapping).latency_cycles > value
    for solver, method in itertools.product(("cpsat", "highs"), METHODS):
        r = solve(p, solver, method=method)
        assert r.status is SolveStatus.OPTIMAL, (solver, method, r.message)
        assert r.objective_value == value, (solver, method)


def test_edp_on_ported_hardware_equals_brute_force() -> None:
    """EDP runs least-energy nests (its documented domain): both backends reach
    the enumerated least product over that domain."""
    p = ported_problem(Objective.EDP)
    value, _ = brute(Objective.EDP)
    for solver in ("cpsat", "highs"):
        r = solve(p, solver)
        assert r.status is SolveStatus.OPTIMAL, (solver, r.message)
        assert r.objective_value == pytest.approx(value, rel=1e-12)


def test_show_loops_shows_the_least_cycles_nest(capsys: pytest.CaptureFixture[str]) -> None:
    from stems_opt.nest_report import show_loops

    p = ported_problem(Objective.LATENCY)
    _, mapping = brute(Objective.LATENCY)
    text, doc = show_loops(p, mapping, "c1")
    assert "least-cycles nest" in text
    lat = evaluate(p, mapping)
    energy_text, energy_doc = show_loops(p.with_objective(Objective.ENERGY), mapping, "c1")
    assert "least-energy nest" in energy_text
    # The least-cycles nests take fewer cycles in all, the least-energy ones less energy.
    assert sum(s["cycles"] * s["count"] for s in doc["steps"]) < \
        sum(s["cycles"] * s["count"] for s in energy_doc["steps"])
    assert sum(s["energy_pj"] * s["count"] for s in doc["steps"]) >= \
        sum(s["energy_pj"] * s["count"] for s in energy_doc["steps"])
    assert lat.latency_cycles == brute(Objective.LATENCY)[0]


@pytest.mark.parametrize("name", ["tiny_chain", "tiny_linear", "tiny_residual"])
def test_latency_is_never_above_the_energy_optimum_latency(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The latency search stopped at once still answers with at most the energy
    optimum's latency: the energy optimum seeds it (and is kept if still
    better). Without the energy solve (``energy_seed=False``) the stopped
    search has no mapping and this fails."""
    problem = load_instance(ROOT / "instances" / f"{name}.yaml", "latency")
    energy = solve(problem.with_objective(Objective.ENERGY), warm_start=False)
    assert energy.cost is not None
    original = ColumnSolver.solve

    def stopped_at_once(self: ColumnSolver, time_limit_s: float | None = None,
                        lower_bound: float = 0.0) -> tuple[Mapping | None, float, float]:
        if self.problem.objective is not Objective.LATENCY:
            return original(self, time_limit_s, lower_bound)
        found = self.incumbent()
        return (None, math.inf, 0.0) if found is None else \
            (self.mapping_of(found[0]), found[1], 0.0)

    monkeypatch.setattr(ColumnSolver, "solve", stopped_at_once)
    r = solve(problem, warm_start=False)
    assert r.cost is not None and r.objective_value is not None
    assert r.objective_value <= evaluate(problem, energy.mapping).latency_cycles
    assert r.objective_value <= energy.cost.latency_cycles

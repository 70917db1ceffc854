"""The traffic seed of the energy search (:func:`stems_opt.incumbents.traffic_seed`).

Under a time limit the second process also runs a short traffic search and
sends its mapping scored in energy; its segments seed the energy search. What
must hold: the seed is the traffic search's mapping worth exactly what the
cost model says in energy, it arrives after the cheapest named schedule and
before the others, only the energy objective gets one, and the energy search
under a limit starts it (and leaves every named schedule to that process).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from stems_opt.cost.evaluation import evaluate
from stems_opt.feasibility import check
from stems_opt.incumbents import (
    SCORING_ORDER,
    SEED_MAX_S,
    TRAFFIC_SEED,
    BackgroundNamed,
    traffic_seed,
    traffic_seed_s,
)
from stems_opt.problem import Objective
from stems_opt.solvers import solve

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_optimizer import CASES, make_problem  # noqa: E402


def energy_case(name: str = "chain_T4"):
    network, ku, size = CASES[name]
    return make_problem(network, size, ku, Objective.ENERGY)


def test_only_energy_gets_a_seed_for_a_share_of_the_limit() -> None:
    """A quarter of the limit, at most 10 s (and 10 s without a limit); no seed for
    traffic (it is the search itself), latency, or the EDP search's weighted solves."""
    p = energy_case()
    assert traffic_seed_s(p, 8.0) == pytest.approx(2.0)  # 0.25 x 8
    assert traffic_seed_s(p, 100.0) == SEED_MAX_S == 10.0  # min(10, 25)
    assert traffic_seed_s(p, None) == SEED_MAX_S
    for objective in (Objective.TRAFFIC, Objective.LATENCY):
        assert traffic_seed_s(p.with_objective(objective), 8.0) is None
    assert traffic_seed_s(p.weighted(1, 1), 8.0) is None


@pytest.mark.parametrize("case", ["chain_T4", "conv_pool_T2_chunks"])
def test_the_seed_is_the_traffic_optimum_scored_in_energy(case: str) -> None:
    """On a tiny network the traffic search proves its optimum within the seed's
    seconds: the seed's mapping moves exactly the least traffic, fits, and its value
    is the cost model's energy of that mapping (pJ), not its traffic."""
    p = energy_case(case)
    least_bits = solve(p.with_objective(Objective.TRAFFIC), time_limit_s=30.0)
    assert least_bits.gap == 0.0
    seed = traffic_seed(p, 5.0)
    assert seed.feasible and seed.solver == TRAFFIC_SEED and seed.objective == "energy"
    assert not check(p, seed.mapping)
    cost = evaluate(p, seed.mapping)
    assert cost.traffic_bits == least_bits.objective_value
    assert seed.objective_value == cost.objective_value("energy")
    assert seed.objective_value == cost.total_energy_pj != cost.traffic_bits


def test_the_second_process_sends_the_seed_after_the_cheapest_named() -> None:
    """Results arrive in the order they are run: TB-LBL (the cheapest), the seed, then
    ST-F and TB-F; the child counts the seed among what it must deliver."""
    p = energy_case()
    with BackgroundNamed(p, SCORING_ORDER, seed_s=3.0) as background:
        assert background.names == (*SCORING_ORDER, TRAFFIC_SEED)
        end = time.perf_counter() + 60.0
        while not background.done() and time.perf_counter() < end:
            time.sleep(0.05)
        assert background.done(), background.errors
        arrived = [*background.results, *background.errors]
    assert arrived == [SCORING_ORDER[0], TRAFFIC_SEED, *SCORING_ORDER[1:]]
    assert background.results[TRAFFIC_SEED].feasible


@pytest.mark.parametrize("objective", [Objective.ENERGY, Objective.TRAFFIC],
                         ids=lambda o: o.value)
def test_the_energy_search_starts_the_seed(objective: Objective,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a limit the energy search hands every named schedule and the seed (for a
    quarter of the limit) to the second process; traffic scores the named schedules
    first here, where that is cheap (tiny networks: milliseconds), and has no seed.

    Mutation that fails it: ``solve_columns`` without the seed (``seed_s`` left
    ``None``), or with the named schedules still scored here for energy."""
    import stems_opt.incumbents as incumbents

    started: list[tuple[tuple[str, ...], float | None]] = []

    class Spy(BackgroundNamed):
        def __init__(self, problem, names=SCORING_ORDER, seed_s=None) -> None:
            started.append((names, seed_s))
            super().__init__(problem, names, seed_s)

    monkeypatch.setattr(incumbents, "BackgroundNamed", Spy)
    p = energy_case().with_objective(objective)
    r = solve(p, time_limit_s=20.0)
    assert r.mapping is not None
    if objective is Objective.ENERGY:
        assert started == [(SCORING_ORDER, 5.0)]  # 0.25 x 20 s
    else:
        assert started == []  # (every named schedule scored here: nothing left over)

"""The helper process that solves loop nests beside the search (``nest_helper.py``):
the table it helps fill is the one solved alone, a stopped call keeps what was
solved, a helper that dies leaves nothing missing, and a solve with it finds the
same optimum."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from stems_opt.cost import loops
from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.nest_helper import helping
from stems_opt.io import load_hardware, load_instance
from stems_opt.network import Axis
from stems_opt.stopping import TIME_LIMIT, SearchStoppedError

ROOT = Path(__file__).resolve().parent.parent


def red_lif_steps() -> tuple[list[loops.StepShape], loops.NestHardware]:
    """Every step ``[a, z)`` of two of RED-LIF's smaller conv layers along ``OY`` over
    its 12 timesteps, on the 128 KB accelerator (the partition floor's steps,
    :func:`~stems_opt.cost.loops.layer_partition_floor_fj`): 78 + 276 ranges, 66
    distinct shapes of 3 grids."""
    p = load_instance(ROOT / "instances" / "red_lif_1mb.yaml", objective="energy")
    hw = nest_hardware(load_hardware(ROOT / "models" / "hardware" / "edge_128kb.yaml"))
    layers = {lay.name: lay for lay in p.network.layers}
    shapes = []
    for name in ("lif14", "lif13"):
        lay = loops.shape_twin(layers[name])
        extent = lay.extent(Axis.OY)
        shapes += [loops.step_shape(lay, Axis.OY, a, z, p.network.timesteps)
                   for a in range(extent) for z in range(a + 1, extent + 1)]
    return list(dict.fromkeys(shapes)), hw


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of at most 2**15 grid points: 17 of them for these shapes, so that both
    processes take several. The three grids hold 22, 32 and 12 shapes of 4,608, 6,144
    and 12,288 points: 32,768 // 4,608 = 7 shapes a batch (4 batches), // 6,144 = 5 (7
    batches), // 12,288 = 2 (6 batches). :func:`alone` solves them in 3 (at 2**18
    points; a shape's optimum does not depend on its batch)."""
    monkeypatch.setattr(loops, "BATCH_POINTS", 1 << 15)


def table(shapes: list[loops.StepShape], hw: loops.NestHardware, nests: bool) -> dict:
    got = loops._TABLE if nests else loops._ENERGY
    return {shape: got[(shape, hw)] for shape in shapes}


@pytest.fixture(scope="module")
def alone() -> tuple[list, loops.NestHardware, dict, dict]:
    """The shapes, and their energies and optimal nests solved in this process alone, in
    the default batches (3)."""
    shapes, hw = red_lif_steps()
    loops.clear_nest_table()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loops, "BATCH_POINTS", 1 << 18)
        loops.solve_nests(shapes, hw)
        energies = table(shapes, hw, False)
        loops.solve_nests(shapes, hw, nests=True)
    return shapes, hw, energies, table(shapes, hw, True)


@pytest.mark.parametrize("nests", [False, True])
def test_the_helper_fills_the_table_solved_alone(alone: tuple, nests: bool) -> None:
    """Energies and optimal nests equal those solved alone, shape by shape, and the helper
    solved a share of the batches. Mutation: the helper solving energies when nests are
    asked (``solve_batch(..., False)``) fails the nests case (its nests are ``None``)."""
    shapes, hw, energies, nest_table = alone
    assert len({loops._ChainSearch.key(s, hw) for s in shapes}) >= 2
    loops.clear_nest_table()
    with helping(lambda: True) as helper:
        loops.solve_nests(shapes, hw, nests=nests)
    assert helper.batches_helped >= 1
    assert table(shapes, hw, False) == energies
    if nests:
        assert table(shapes, hw, True) == nest_table


def test_a_helper_not_ready_is_not_asked(alone: tuple) -> None:
    """While ``ready()`` is false (the search's second process still runs) the search's
    process solves every batch itself. Mutation: ``usable`` ignoring ``ready()`` fails
    this (the helper solves some)."""
    shapes, hw, energies, _ = alone
    loops.clear_nest_table()
    with helping(lambda: False) as helper:
        loops.solve_nests(shapes, hw)
    assert helper.batches_helped == 0
    assert table(shapes, hw, False) == energies


def test_a_stopped_call_keeps_what_was_solved(alone: tuple,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop during a shared call ends it with the helper's batches recorded, each equal
    to the one solved alone; the helper serves the next call, which completes the table.
    The stop comes at this process's first batch, once the helper has taken two (the
    shared counter past 2: this process took batch 0 first). Mutation: recording the
    helper's batches only when the call ends normally fails this (none is recorded)."""
    shapes, hw, energies, _ = alone
    loops.clear_nest_table()
    with helping(lambda: True) as helper:
        def stop_once_the_helper_took_two() -> None:
            while helper._counter.value < 3:
                time.sleep(0.001)
            raise SearchStoppedError(TIME_LIMIT)

        monkeypatch.setattr(loops, "checkpoint", stop_once_the_helper_took_two)
        with pytest.raises(SearchStoppedError):
            loops.solve_nests(shapes, hw)
        monkeypatch.undo()
        helped = helper.batches_helped
        solved = {s: e for (s, h), e in loops._ENERGY.items() if h == hw}
        assert helped >= 2
        assert 1 <= len(solved) < len(shapes)
        assert all(energies[s] == e for s, e in solved.items())
        loops.solve_nests(shapes, hw)
        assert helper.batches_helped > helped
    assert table(shapes, hw, False) == energies


def test_a_helper_that_dies_mid_call_leaves_nothing_missing(
        alone: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper killed just after it is handed a call: this process solves every batch
    the helper took and never sent back. Mutation: skipping the final pass of
    ``solve_nests`` over batches left unsolved fails this (a ``KeyError``)."""
    shapes, hw, energies, _ = alone
    loops.clear_nest_table()
    with helping(lambda: True) as helper:
        real_send = helper._conn.send

        def send_then_kill(msg: object) -> None:
            real_send(msg)
            os.kill(helper._proc.pid, signal.SIGKILL)
            helper._proc.join()

        monkeypatch.setattr(helper._conn, "send", send_then_kill)
        loops.solve_nests(shapes, hw)
    assert table(shapes, hw, False) == energies


def test_a_solve_shares_its_nests_and_finds_the_same_optimum() -> None:
    """Energy through loop nests on two threads, no time limit (so no second process
    for the named schedules: the helper is ready from the start), every shape its own
    batch: the helper solves some, and the proven optimum is the one found on one
    thread (no helper). Mutation: the helper sending each energy one fJ higher fails
    this (the solver's own check that the model's value equals the cost model's)."""
    from test_coarse_seed import nest_case

    from stems_opt.result import SolveStatus
    from stems_opt.solvers import solve

    p = nest_case()
    loops.clear_nest_table()
    one = solve(p, threads=1)
    loops.clear_nest_table()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loops, "BATCH_POINTS", 1)
        two = solve(p, threads=2)
    assert one.status is two.status is SolveStatus.OPTIMAL
    assert two.objective_value == one.objective_value
    assert "nest_batches_helped" not in one.stats
    assert two.stats["nest_batches_helped"] >= 1


@pytest.mark.parametrize(("objective", "threads", "helped"), [
    ("energy", 2, True), ("energy", None, True), ("energy", 1, False),
    ("traffic", 2, False)])
def test_only_a_search_that_solves_nests_on_two_cores_gets_a_helper(
        objective: str, threads: int | None, helped: bool) -> None:
    """Energy through loop nests on two threads or unset (one solver thread, but the
    search runs a second process anyway); on this machine's two cores or more (the
    suite runs two workers); not on one thread, nor for traffic, which solves no
    nest."""
    from test_coarse_seed import nest_case

    from stems_opt.problem import Objective
    from stems_opt.solvers import _nest_helper

    p = nest_case().with_objective(Objective(objective))
    with _nest_helper(p, threads, None) as helper:
        assert (helper is not None) is helped


@pytest.mark.parametrize(("seeds", "running", "ready"), [
    ((), True, True), (("seed",), True, False), (("seed",), False, True)])
def test_the_helper_waits_only_for_a_second_process_with_seeds(
        seeds: tuple[str, ...], running: bool, ready: bool) -> None:
    """Beside a second process that only scores named schedules (the fallback of a long
    limit) the helper is asked from the start; beside one running seeds (a short
    limit's, worth more than the nests: RED-LIF energy at 256 KB under 10 s ended at
    45,524 uJ with the helper asked at once against 30,343) only once it is done.
    Mutation: waiting for every second process fails the first case."""
    from types import SimpleNamespace

    from test_coarse_seed import nest_case

    from stems_opt.solvers import _nest_helper

    background = SimpleNamespace(seeds=seeds, running=lambda: running)
    with _nest_helper(nest_case(), 2, background) as helper:  # type: ignore[arg-type]
        assert helper.ready() is ready


@pytest.mark.parametrize(("running", "ready"), [(True, False), (False, True)])
def test_the_helper_waits_for_a_column_helper(running: bool, ready: bool) -> None:
    """Beside a column helper (``column_helper.py``: a deep network's short limit) the
    nest helper is asked once that has tightened its share and ended, as after seeds
    (SEW-ResNet-152 energy at 384 KB under 60 s: proven in 56.0 s with it then, not at
    all without it: the pricing that proves the mapping solves nests). Mutation:
    ignoring the column helper fails the first case, waiting for it forever the
    second."""
    from types import SimpleNamespace

    from test_coarse_seed import nest_case

    from stems_opt.solvers import _nest_helper

    columns = SimpleNamespace(running=lambda: running)
    with _nest_helper(nest_case(), 2, None, columns) as helper:  # type: ignore[arg-type]
        assert helper.ready() is ready


def test_the_helper_ends_quietly_when_the_search_is_gone(alone: tuple) -> None:
    """The search's process gone while the helper solves (a second Ctrl-C exits at once,
    without stopping the helper): the helper ends with exit code 0 once its batches are
    solved, without a traceback. Mutations: sending without catching the broken pipe
    fails this (exit code 1), and so does keeping the search's end of the pipe that
    the fork gave the helper (it waits for the next call forever: no exit code)."""
    import multiprocessing

    from stems_opt.cost.nest_helper import _serve

    shapes, hw, _, _ = alone
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(theirs, counter, mine), daemon=True)
    proc.start()
    theirs.close()
    mine.send(([shapes[:8], shapes[8:16]], hw, False))
    mine.close()
    proc.join(30)
    assert proc.exitcode == 0

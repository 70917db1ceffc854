"""Sweeps: grid loading and its errors, local and Dask runs agreeing, resume, the plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from stems_opt.errors import StemsInputError
from stems_opt.sweep import (
    COLUMNS,
    load_sweep,
    local_executor,
    parse_size_bits,
    run_sweep,
    solve_point,
)

ROOT = Path(__file__).resolve().parent.parent

SWEEP = """\
networks: [{root}/models/networks/tiny_chain.yaml, {root}/models/networks/tiny_residual.yaml]
hardware: {root}/models/hardware/tiny.yaml
global_buffer_sizes: [2048, 512B]
objectives: [traffic]
"""


def _sweep_file(tmp_path: Path, text: str = SWEEP) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text.format(root=ROOT))
    return path


def _stable(text: str) -> list[dict[str, str]]:
    """Rows without ``solve_s``, which depends on the machine's speed, and without the
    metric the point does not optimise (``energy_pj`` of a traffic point, and the
    reverse): optima that tie may differ in it, and which of them a search meets
    first depends on when the named schedules arrive."""
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        r.pop("solve_s")
        other = {"traffic": "energy_pj", "energy": "traffic_bits"}.get(r["objective"])
        if other:
            r.pop(other)
    return rows


def test_size_units() -> None:
    # 1 KB = 1024 bytes = 8192 bits, as in docs/formats.md; integers are bits.
    assert parse_size_bits("128KB") == 128 * 8192
    assert parse_size_bits("1 MB") == 8 * 1024 * 1024
    assert parse_size_bits("512B") == 4096
    assert parse_size_bits(4096) == 4096
    assert parse_size_bits("12 parsecs") is None
    assert parse_size_bits(0) is None


def test_relative_paths_and_grid_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "s.yaml"
    rel = Path("..", *[".."] * len(tmp_path.parts[1:])) / ROOT.relative_to("/")
    path.write_text(f"networks: [{rel}/models/networks/tiny_chain.yaml]\n"
                    f"hardware: {rel}/models/hardware/tiny.yaml\n"
                    "global_buffer_sizes: [1KB, 2048]\nobjectives: [traffic, energy]\n"
                    "state_persistence: [reset]\n")
    sweep = load_sweep(path)
    assert [(p.gb_capacity_bits, p.objective, p.state_persistence) for p in sweep.points] == [
        (8192, "traffic", "reset"), (8192, "energy", "reset"),
        (2048, "traffic", "reset"), (2048, "energy", "reset")]
    assert sweep.keys[0][1] == f"{rel}/models/networks/tiny_chain.yaml"


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    path = _sweep_file(tmp_path, "networks: [missing.yaml]\nhardware: [a.yaml, b.yaml]\n"
                                 "global_buffer_sizes: [12 parsecs]\nobjectives: [speed]\n"
                                 "state_persistence: forever\ntime_limit: -1\ncolour: red\n")
    with pytest.raises(StemsInputError) as exc:
        load_sweep(path)
    text = str(exc.value)
    for field in ("'colour'", "'networks[0]'", "'hardware[0]'", "'hardware[1]'",
                  "'global_buffer_sizes[0]'", "'objectives[0]'", "'state_persistence[0]'",
                  "'time_limit'", "'hardware'"):
        assert field in text, field
    assert all(str(path) in line for line in text.splitlines())


def test_point_row_matches_a_direct_solve(tmp_path: Path) -> None:
    from stems_opt import load_instance, solve

    sweep = load_sweep(_sweep_file(tmp_path, SWEEP.replace("[2048, 512B]", "[4096]")))
    row = solve_point(sweep.points[0])
    # tiny_chain at the tiny accelerator's own 4096 bits: the instance's known optimum
    # (17280 bits = compulsory traffic, see instances/tiny_chain.yaml).
    direct = solve(load_instance(ROOT / "instances" / "tiny_chain.yaml"))
    assert row["status"] == "optimal" and row["value"] == "17280" == str(direct.objective_value)
    assert row["compulsory_traffic_bits"] == "17280"
    assert float(row["best_named_value"]) >= float(row["value"])


def test_local_and_dask_give_the_same_csv(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    sweep = load_sweep(_sweep_file(tmp_path))
    serial = run_sweep(sweep, tmp_path / "serial.csv", stream=io.StringIO())
    with local_executor(2) as pool:
        run_sweep(sweep, tmp_path / "local.csv", pool, stream=io.StringIO())
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        run_sweep(sweep, tmp_path / "dask.csv", client.get_executor(pure=False),
                  stream=io.StringIO())
    assert len(serial) == 4 and all(r["status"] == "optimal" for r in serial)
    expected = _stable((tmp_path / "serial.csv").read_text())
    assert _stable((tmp_path / "local.csv").read_text()) == expected
    assert _stable((tmp_path / "dask.csv").read_text()) == expected


def test_resume_solves_only_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    import stems_opt.sweep as sw

    sweep = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "r.csv"
    run_sweep(sweep, out, stream=io.StringIO())
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    # Interrupted after two points, in the middle of writing the third row.
    out.write_text("".join(lines[:3]) + lines[3][:20])
    solved = []
    real = sw.solve_point
    monkeypatch.setattr(sw, "solve_point", lambda p: solved.append(p) or real(p))
    with pytest.raises(StemsInputError, match="--resume"):
        run_sweep(sweep, out, stream=io.StringIO())
    assert out.read_text().startswith("".join(lines[:3]))  # never overwritten
    run_sweep(sweep, out, resume=True, stream=io.StringIO())
    # Points run each network's buffers largest first; the first two are done.
    order = [p for p, _ in sw.largest_buffer_first(list(zip(sweep.points, sweep.keys,
                                                            strict=True)))]
    assert sorted(map(repr, order)) == sorted(map(repr, sweep.points))
    assert solved == order[2:]
    assert _stable(out.read_text()) == _stable(full)
    run_sweep(sweep, out, resume=True, stream=io.StringIO())
    assert len(solved) == 2  # nothing left to do


def test_resume_refuses_a_foreign_csv(tmp_path: Path) -> None:
    out = tmp_path / "mine.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(StemsInputError, match="expected columns"):
        run_sweep(load_sweep(_sweep_file(tmp_path)), out, resume=True, stream=io.StringIO())
    assert out.read_text() == "a,b\n1,2\n"


def test_cli_sweep_writes_csv_and_plot(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from stems_opt.cli import main

    path = _sweep_file(tmp_path, SWEEP.replace("[2048, 512B]", "[2048, 4096]"))
    png = tmp_path / "slope.png"
    assert main(["sweep", str(path), "--workers", "1", "--plot", str(png)]) == 0
    rows = list(csv.DictReader((tmp_path / "grid.csv").open()))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[" in capsys.readouterr().err  # progress on stderr
    assert main(["sweep", str(path), "--workers", "1"]) == 2  # would overwrite: refused


def test_resume_keeps_rows_of_other_grids(tmp_path: Path) -> None:
    out = tmp_path / "k.csv"
    big = load_sweep(_sweep_file(tmp_path))
    run_sweep(big, out, stream=io.StringIO())
    small = load_sweep(_sweep_file(tmp_path, SWEEP.replace("[2048, 512B]", "[2048]")))
    rows = run_sweep(small, out, resume=True, stream=io.StringIO())
    assert len(rows) == 2
    assert len(_stable(out.read_text())) == 4  # the two 512 B rows are still there


def test_cli_bad_sweep_exits_2_naming_every_field(tmp_path: Path, capsys) -> None:
    from stems_opt.cli import main

    path = _sweep_file(tmp_path, "networks: [nope.yaml]\nhardware: {root}/models/hardware/"
                                 "tiny.yaml\nobjectives: [speed]\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "field 'networks[0]'" in err and "field 'objectives[0]'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "grid.csv").exists()


@pytest.mark.parametrize("daemonic", [False, True])
def test_point_under_a_time_limit_scores_every_named_schedule(tmp_path: Path, monkeypatch,
                                                              daemonic: bool) -> None:
    """With a time limit the solve scores the named schedules in a child process; a
    daemonic worker (Dask's default) may not start one, so it scores them after the
    solve. Either way the row holds each schedule's own score and the proven optimum.
    Before the daemonic branch, the daemonic case raised "daemonic processes are not
    allowed to have children" (``stems-opt sweep --dask local`` with a ``time_limit``)."""
    import multiprocessing

    from stems_opt import named_schedule, solve
    from stems_opt.sweep import NAMED_COLUMNS, point_problem

    sweep = load_sweep(_sweep_file(tmp_path, SWEEP.replace("[2048, 512B]", "[2048]")
                                   + "time_limit: 120\n"))
    problem = point_problem(sweep.points[0])
    direct = solve(problem)  # no limit: to the proof, in this process
    named = {name: named_schedule(problem, name) for name in NAMED_COLUMNS}
    if daemonic:  # what Process.start() checks before it starts a child
        monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    row = solve_point(sweep.points[0])
    for name, r in named.items():
        assert row[name] == (str(r.objective_value) if r.feasible else ""), name
    fitting = {n: r.objective_value for n, r in named.items() if r.feasible}
    assert row["best_named"] == min(fitting, key=fitting.get)
    assert direct.status.value == row["status"] == "optimal"
    assert row["value"] == str(direct.objective_value)


def test_named_fallback_replaces_only_a_worse_unproven_answer() -> None:
    """An unproven solve whose mapping is worse than a named schedule reports the named
    one (as the solver's own fallback does when the schedules arrive in time), keeping
    the solve's bound; a proven answer, or a named schedule outside the search space
    (``max_segment_layers``), is never taken. Dropping the search-space check makes
    the last assertion fail: ST-LBL is one segment of all 3 layers."""
    from dataclasses import replace

    from stems_opt import load_instance, named_schedule
    from stems_opt.result import Result, SolveStatus
    from stems_opt.sweep import NAMED_COLUMNS, with_named_fallback

    problem = load_instance(ROOT / "instances" / "tiny_chain.yaml")
    named = [named_schedule(problem, n) for n in NAMED_COLUMNS]
    best = min((r for r in named if r.feasible), key=lambda r: r.objective_value)
    bound = best.objective_value / 2
    stuck = Result(SolveStatus.FEASIBLE, "cpsat", "traffic", objective_value=10 * bound,
                   bound=bound, gap=0.95)
    taken = with_named_fallback(problem, stuck, named)
    assert taken.objective_value == best.objective_value and taken.mapping is best.mapping
    assert taken.bound == bound and taken.gap == 0.5  # (2b - b) / 2b
    assert taken.status is SolveStatus.FEASIBLE and "better than the mapping" in taken.message
    # No mapping at all: the named one, too.
    assert with_named_fallback(problem, replace(stuck, objective_value=None), named) \
        .objective_value == best.objective_value
    # A bound equal to the named value proves it.
    proven = with_named_fallback(problem, replace(stuck, bound=best.objective_value), named)
    assert proven.status is SolveStatus.OPTIMAL and proven.gap == 0.0
    # Better than every named schedule, or proven: unchanged.
    good = replace(stuck, objective_value=bound)
    assert with_named_fallback(problem, good, named) is good
    done = replace(stuck, status=SolveStatus.OPTIMAL, objective_value=10 * bound, gap=0.0)
    assert with_named_fallback(problem, done, named) is done
    # ST-LBL alone, outside a 2-layer cap: not taken.
    st = [r for n, r in zip(NAMED_COLUMNS, named, strict=True) if n == "ST-LBL"]
    capped = replace(problem, max_segment_layers=2)
    assert len(problem.network.layers) == 3 and st[0].feasible
    assert with_named_fallback(capped, stuck, st) is stuck

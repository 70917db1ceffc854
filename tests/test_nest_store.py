"""The nest table kept on disk between runs (``stems_opt.cost.nest_store``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from nest_cases import BATCH_HW, batch_shapes

from stems_opt.cli import main
from stems_opt.cost import loops, nest_store
from stems_opt.cost.loops import (
    NestHardware,
    StepShape,
    clear_nest_table,
    nest_energy_fj,
    solve_nests,
)

ROOT = Path(__file__).resolve().parent.parent
HW = BATCH_HW
# An input buffer of 1 bit holds no input tile of 4-bit spikes: no nest fits.
TINY_IN = dataclasses.replace(HW, input_buffer=dataclasses.replace(HW.input_buffer,
                                                                   capacity_bits=1))
SHAPES = batch_shapes((2, 1, 4, 1, 0))


def _solved(shapes: list[StepShape], hw: NestHardware) -> list[int | None]:
    solve_nests(shapes, hw)
    return [nest_energy_fj(s, hw) for s in shapes]


def _no_search():
    """Fails a test that solves a nest's least energy (a kept one must be read, not
    solved); the nests themselves (``nests=True``: the loops a report prints, which
    are not kept) may be."""
    solve = loops._ChainSearch.solve

    def energies_read(self: loops._ChainSearch, nests: bool = True) -> list:
        assert nests, "a nest energy was solved, not read"
        return solve(self, nests)

    return patch.object(loops._ChainSearch, "solve", energies_read)


@pytest.fixture(autouse=True)
def _fresh_table():
    clear_nest_table()
    yield
    clear_nest_table()


def test_a_kept_table_gives_the_energies_solved(tmp_path: Path) -> None:
    """Saved, cleared and loaded, every shape has the energy solved before, without
    a search; a shape no nest fits stays "no nest" (``None``), not 0. Mutations:
    storing ``None`` as 0, or loading into another hardware's table, fail this."""
    energies = _solved(SHAPES, HW)
    assert all(e is not None and e > 0 for e in energies)
    none = _solved(SHAPES[3:4], TINY_IN)
    assert none == [None]
    assert nest_store.save(tmp_path, HW) == len(SHAPES)
    assert nest_store.save(tmp_path, TINY_IN) == 1
    clear_nest_table()
    assert nest_store.load(tmp_path, HW) == len(SHAPES)
    assert nest_store.load(tmp_path, TINY_IN) == 1
    with _no_search():
        assert [nest_energy_fj(s, HW) for s in SHAPES] == energies
        assert nest_energy_fj(SHAPES[3], TINY_IN) is None


def test_each_hardware_and_each_cost_code_has_its_own_file(tmp_path: Path) -> None:
    """Another nest hardware reads nothing of this one's table, and neither does
    another version of the code that computes the energies (``loops.py`` with one
    byte more): a changed cost model never reads an energy it would not compute.
    The name comes from the source as imported: ``loops.py`` edited on disk while a
    process runs (a pull, an upgrade) does not file that process's energies under
    the new code's name. Mutation: reading ``loops.py`` from disk when naming fails
    this."""
    _solved(SHAPES, HW)
    nest_store.save(tmp_path, HW)
    assert nest_store.table_path(tmp_path, HW) != nest_store.table_path(tmp_path, TINY_IN)
    clear_nest_table()
    assert nest_store.load(tmp_path, TINY_IN) == 0
    before = nest_store.table_path(tmp_path, HW)
    with patch.object(loops, "SOURCE", loops.SOURCE + b"\n"):
        assert nest_store.table_path(tmp_path, HW) != before
        assert nest_store.load(tmp_path, HW) == 0
    edited = tmp_path / "loops.py"
    edited.write_bytes(Path(loops.__file__).read_bytes() + b"\n")
    with patch.object(loops, "__file__", str(edited)):
        assert nest_store.table_path(tmp_path, HW) == before
    assert nest_store.load(tmp_path, HW) == len(SHAPES)


def test_saves_merge(tmp_path: Path) -> None:
    """Two runs that solved different shapes (a sweep's workers) both keep theirs: a
    save adds to the file, it does not replace it with the process's table alone; a
    save with nothing new writes nothing. Mutations: the file not read before a save,
    and a save that always writes, fail this."""
    first = _solved(SHAPES[:2], HW)
    nest_store.save(tmp_path, HW)
    clear_nest_table()
    second = _solved(SHAPES[2:], HW)
    assert nest_store.save(tmp_path, HW) == len(SHAPES)
    clear_nest_table()
    nest_store.load(tmp_path, HW)
    # Nothing new: the file is not written again (the same inode, not a replacement).
    inode = nest_store.table_path(tmp_path, HW).stat().st_ino
    assert nest_store.save(tmp_path, HW) == len(SHAPES)
    assert nest_store.table_path(tmp_path, HW).stat().st_ino == inode
    with _no_search():
        assert [nest_energy_fj(s, HW) for s in SHAPES] == first + second


def test_a_damaged_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    """A file that is not a table (cut short, or of other fields) is read as empty,
    with a warning, and the next save writes a whole table over it."""
    energies = _solved(SHAPES, HW)
    path = nest_store.table_path(tmp_path, HW)
    path.write_bytes(b"PK\x03\x04 not a table")
    with patch.object(nest_store.LOG, "warning") as warn:  # (whatever the CLI set up)
        assert nest_store.load(tmp_path, HW) == 0
    assert "ignored" in warn.call_args.args[0]
    np.savez(path, shapes=np.ones((2, 3), dtype=np.int64), energy_fj=np.ones(2, dtype=np.int64))
    assert nest_store.load(tmp_path, HW) == 0
    assert nest_store.save(tmp_path, HW) == len(SHAPES)
    clear_nest_table()
    assert nest_store.load(tmp_path, HW) == len(SHAPES)
    with _no_search():
        assert [nest_energy_fj(s, HW) for s in SHAPES] == energies


def test_a_directory_that_cannot_be_written_costs_the_speed_up_only(tmp_path: Path) -> None:
    """Saving under a path that is a file returns 0 and raises nothing."""
    _solved(SHAPES, HW)
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert nest_store.save(blocked / "sub", HW) == 0
    assert list(tmp_path.iterdir()) == [blocked]


def test_the_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``$STEMS_OPT_CACHE_DIR`` (``off`` or empty: none), else ``$XDG_CACHE_HOME``'s
    ``stems_opt``, else ``~/.cache/stems_opt``."""
    monkeypatch.setenv("STEMS_OPT_CACHE_DIR", str(tmp_path / "d"))
    assert nest_store.default_dir() == tmp_path / "d"
    for off in ("off", "OFF", ""):
        monkeypatch.setenv("STEMS_OPT_CACHE_DIR", off)
        assert nest_store.default_dir() is None
    monkeypatch.delenv("STEMS_OPT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert nest_store.default_dir() == tmp_path / "x" / "stems_opt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert nest_store.default_dir() == tmp_path / "h" / ".cache" / "stems_opt"


def _solve_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    rc = main(["solve", str(ROOT / "instances" / "tiny_chain.yaml"), "--objective", "energy",
               "--json", "--quiet", *args])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_the_command_line_keeps_the_table(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``solve --nest-cache DIR`` (energy, tiny_chain on hardware with loop nests) writes
    the table; a second run reads it, solves no nest and proves the same optimum with
    the same mapping as a run without it (``off``, which writes nothing)."""
    store = tmp_path / "nests"
    cold = _solve_json(capsys, "--nest-cache", "off")
    assert not store.exists()
    first = _solve_json(capsys, "--nest-cache", str(store))
    (table,) = store.glob("nests-*.npz")
    assert len(np.load(table)["energy_fj"]) > 0
    clear_nest_table()
    with _no_search():
        warm = _solve_json(capsys, "--nest-cache", str(store))
    for doc in (first, warm):
        assert doc["status"] == cold["status"] == "optimal"
        assert doc["objective_value"] == cold["objective_value"]
        assert doc["mapping"] == cold["mapping"]
    shutil.rmtree(store)


def test_a_nest_cache_that_is_a_file_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``--nest-cache`` naming a file: exit 2, one line naming the file and the option,
    the file left as it was, and nothing written before the refusal (``--write-model``
    is checked first but not written)."""
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    model = tmp_path / "m.lp"
    for command in (["solve", "--write-model", str(model)], ["compare"]):
        rc = main([command[0], str(ROOT / "instances" / "tiny_chain.yaml"), *command[1:],
                   "--nest-cache", str(path)])
        err = capsys.readouterr().err
        assert rc == 2
        assert str(path) in err and "nest-cache" in err and "not a directory" in err
        assert "Traceback" not in err
    assert path.read_text() == "mine"
    assert not model.exists()


def test_a_sweep_keeps_the_table(tmp_path: Path) -> None:
    """``sweep --nest-cache DIR`` (energy, tiny_chain on two buffer sizes): the points
    write the table; the same sweep again reads it (no nest energy solved) and writes
    the same rows as a sweep with ``off`` (times aside)."""
    import csv

    grid = tmp_path / "grid.yaml"
    grid.write_text(f"networks: [{ROOT}/models/networks/tiny_chain.yaml]\n"
                    f"hardware: {ROOT}/models/hardware/tiny.yaml\n"
                    "global_buffer_sizes: [2048, 4096]\nobjectives: [energy]\n")
    store = tmp_path / "nests"

    def rows(name: str, cache: str) -> list[dict[str, str]]:
        out = tmp_path / f"{name}.csv"
        assert main(["sweep", str(grid), "--workers", "1", "--quiet", "--out", str(out),
                     "--nest-cache", cache]) == 0
        got = list(csv.DictReader(out.open()))
        for r in got:
            r.pop("solve_s")
        return got

    cold = rows("cold", "off")
    assert not store.exists()
    first = rows("first", str(store))
    assert len(list(store.glob("nests-*.npz"))) == 1
    clear_nest_table()
    with _no_search():
        again = rows("again", str(store))
    assert cold == first == again
    # Worker processes (a directory given relative to the working directory) write there.
    shutil.rmtree(store)
    out = tmp_path / "workers.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert main(["sweep", str(grid), "--workers", "2", "--quiet", "--out", str(out),
                     "--nest-cache", "nests"]) == 0
    assert len(list(store.glob("nests-*.npz"))) == 1


def test_without_the_cost_models_source_nothing_is_kept(tmp_path: Path) -> None:
    """Where ``loops.py`` could not be read (an install without sources), no name can
    name the code: ``kept`` warns, the work inside runs, and nothing is written."""
    ran = []
    with patch.object(loops, "SOURCE", None), \
            patch.object(nest_store.LOG, "warning") as warn, \
            nest_store.kept(tmp_path / "nests", HW):
        ran.append(_solved(SHAPES[:1], HW))
    assert ran and "not kept" in warn.call_args.args[0]
    assert not (tmp_path / "nests").exists()


def test_the_table_is_kept_after_an_error(tmp_path: Path) -> None:
    """An error (or Ctrl-C) inside ``kept`` still saves what was solved before it.
    Mutation: saving only on a normal exit fails this."""
    with pytest.raises(KeyboardInterrupt), nest_store.kept(tmp_path, HW):
        _solved(SHAPES, HW)
        raise KeyboardInterrupt
    clear_nest_table()
    assert nest_store.load(tmp_path, HW) == len(SHAPES)


def test_bad_values_are_not_read(tmp_path: Path) -> None:
    """A table whose energies or shapes hold impossible values (an energy below -1, a
    negative field) is ignored as a whole. Mutations: dropping either check fails
    this."""
    energies = _solved(SHAPES, HW)
    nest_store.save(tmp_path, HW)
    path = nest_store.table_path(tmp_path, HW)
    good = dict(np.load(path))
    for field, bad in (("energy_fj", -2), ("shapes", -1)):
        doc = {k: v.copy() for k, v in good.items()}
        doc[field].flat[0] = bad
        np.savez(path, **doc)
        clear_nest_table()
        with patch.object(nest_store.LOG, "warning") as warn:
            assert nest_store.load(tmp_path, HW) == 0
        assert "ignored" in warn.call_args.args[0]
    np.savez(path, **good)
    clear_nest_table()
    assert nest_store.load(tmp_path, HW) == len(SHAPES)
    with _no_search():
        assert [nest_energy_fj(s, HW) for s in SHAPES] == energies


def test_a_file_keeps_the_newest_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """Past ``MAX_SHAPES`` a save keeps the newest: this process's shapes, then the
    file's latest. With a cap of 3: the file's two shapes and this run's three keep
    this run's three."""
    monkeypatch.setattr(nest_store, "MAX_SHAPES", 3)
    _solved(SHAPES[:2], HW)
    nest_store.save(tmp_path, HW)
    clear_nest_table()
    newest = _solved(SHAPES[2:], HW)
    assert nest_store.save(tmp_path, HW) == 3
    clear_nest_table()
    assert nest_store.load(tmp_path, HW) == 3
    with _no_search():
        assert [nest_energy_fj(s, HW) for s in SHAPES[2:]] == newest


def test_a_save_removes_old_temporary_files_and_follows_the_umask(tmp_path: Path) -> None:
    """A run killed while saving leaves its temporary file: the next save removes it
    once it is older than ``STALE_TMP_S`` (a younger one may be another run's, kept).
    The table gets the mode ``open()`` would give (umask 022: 0o644), so a shared
    directory stays readable."""
    import os
    import time

    old, young = tmp_path / ".nests-a.npz.x.tmp", tmp_path / ".nests-b.npz.y.tmp"
    for f in (old, young):
        f.write_bytes(b"")
    past = time.time() - nest_store.STALE_TMP_S - 10
    os.utime(old, (past, past))
    _solved(SHAPES, HW)
    mask = os.umask(0o022)
    try:
        nest_store.save(tmp_path, HW)
    finally:
        os.umask(mask)
    assert not old.exists() and young.exists()
    assert nest_store.table_path(tmp_path, HW).stat().st_mode & 0o777 == 0o644


def test_the_api_keeps_the_table(tmp_path: Path) -> None:
    """``stems_opt.kept_nests(directory, hardware)`` around ``solve``: the first block
    writes the table, a second one solves no nest energy and proves the same optimum;
    hardware without loop nests keeps nothing."""
    import stems_opt

    problem = stems_opt.load_problem(str(ROOT / "instances" / "tiny_chain.yaml"))
    with stems_opt.kept_nests(tmp_path / "n", problem.hardware):
        first = stems_opt.solve(problem, objective="energy")
    clear_nest_table()
    with stems_opt.kept_nests(tmp_path / "n", problem.hardware), _no_search():
        again = stems_opt.solve(problem, objective="energy")
    assert first.status is again.status is stems_opt.SolveStatus.OPTIMAL
    assert first.objective_value == again.objective_value
    plain = dataclasses.replace(problem.hardware, loop_nests=False)
    with stems_opt.kept_nests(tmp_path / "plain", plain):
        stems_opt.solve(dataclasses.replace(problem, hardware=plain), objective="energy")
    assert not (tmp_path / "plain").exists()

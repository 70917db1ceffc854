"""``--version``, ``python -m stems_opt``, option help with defaults, and the report legend."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import stems_opt
from stems_opt.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"stems-opt {stems_opt.__version__}"


def test_python_dash_m() -> None:
    done = subprocess.run([sys.executable, "-m", "stems_opt", "--version"], capture_output=True,
                          text=True, env=_env(), cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"stems-opt {stems_opt.__version__}"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_says_its_default(command: str) -> None:
    """Each option's help names its default (or that it has none / is required)."""
    parser = _subparsers()[command]
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS \
                or isinstance(action, argparse._HelpAction):
            continue
        text = action.help or ""
        if action.required:
            continue
        assert "default" in text, f"{command} {action.option_strings[0]}: {text!r}"


@pytest.mark.parametrize("option,unit", [("--time-limit", "seconds"), ("--timesteps", "timesteps"),
                                          ("--weight-bits", "bits"), ("--objective", "pJ")])
def test_units_in_help(option: str, unit: str) -> None:
    helps = {a.option_strings[0]: a.help for a in _subparsers()["solve"]._actions
             if a.option_strings}
    assert unit in helps[option]


def test_report_legend_and_one_bit_unit(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", str(ROOT / "instances" / "tiny_residual.yaml"), "--schedule", "TB-F"])
    out = capsys.readouterr().out
    assert rc == 0
    legend = out[out.index("  Tb: timesteps per time batch"):]
    for term in ("W res:", "V kept:", "on-chip:", "n: tiles", "1 kbit = 1,000 bits", "uJ"):
        assert term in legend, term
    # tiny network: every bit column of both tables in kbit, none in Mbit
    tables = out.split("energy (uJ)")[0]
    assert "Mbit" not in tables
    assert len(re.findall(r"kbit", tables)) == 5
    # traffic 13,920 bits (docs/formats.md section 7) = 13.9 kbit
    assert re.search(r"^\s+total\s+7\.5\s+6\.4\s+13\.9", out, re.MULTILINE)


def test_the_json_example_of_the_formats_doc_is_the_output(
        capsys: pytest.CaptureFixture[str]) -> None:
    """docs/formats.md section 7 shows ``evaluate --json`` of TB-F on tiny_residual:
    it is what the command prints (but the run time, and the mapping the doc leaves
    out), so the example cannot drift from the output (it once showed the energy
    without the loop nests long after they were charged)."""
    import json

    doc = (ROOT / "docs" / "formats.md").read_text()
    section = doc[doc.index("## 7. JSON output"):doc.index("## 8. Exit codes")]
    example = json.loads(section[section.index("```json\n") + 8:section.rindex("```")])
    assert main(["evaluate", str(ROOT / "instances" / "tiny_residual.yaml"),
                 "--schedule", "TB-F", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    out.pop("mapping")
    for got in (out, example):
        got.pop("runtime_s")
    assert out == example


def test_the_header_says_what_the_energy_covers() -> None:
    """An energy (or latency, EDP) result says whether it counts the loop nests and
    inner buffers (hardware with ``loop_nests``) or the GB-level rule; traffic says
    nothing (neither changes it)."""
    import dataclasses

    from stems_opt.cost.evaluation import evaluate
    from stems_opt.heuristics.named import named_schedule
    from stems_opt.io import load_instance
    from stems_opt.problem import Objective
    from stems_opt.report import format_result
    from stems_opt.result import Result, SolveStatus

    p = load_instance(ROOT / "instances" / "tiny_chain.yaml", "energy")
    off = dataclasses.replace(p, hardware=dataclasses.replace(p.hardware, loop_nests=False))
    mapping = named_schedule(p, "TB-F").mapping

    def head(problem: object, objective: str) -> str:
        q = problem.with_objective(Objective(objective))  # type: ignore[attr-defined]
        r = Result(status=SolveStatus.FEASIBLE, mapping=mapping, cost=evaluate(q, mapping),
                   objective=objective, solver="named:TB-F", runtime_s=0.0)
        return format_result(q, r).splitlines()[0]

    assert "loop nest" in head(p, "energy") and "loop nest" in head(p, "latency")
    assert "loop nest" in head(p, "edp")
    assert "not charged" in head(off, "energy") and "not charged" in head(off, "latency")
    assert head(p, "traffic").endswith("objective traffic")


@pytest.mark.parametrize(("command", "fast"), [("solve", True), ("compare", True),
                                               ("evaluate", True), ("sweep", False)])
def test_run_ends_at_once_after_solving(command: str, fast: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``stems-opt`` (:func:`stems_opt.cli.run`) ends a solve, compare or evaluate with
    ``os._exit`` and its exit code, its output flushed first (freeing a deep network's
    columns took 0.6 s after the answer); a sweep, whose Dask workers need the normal
    exit, with ``sys.exit``. The output of a real run through a file is checked in
    ``test_python_dash_m`` and ``tests/test_limits.py``."""
    import stems_opt.cli as cli

    ended: list[tuple[str, int]] = []

    class EndedError(Exception):
        pass

    def record(how: str) -> Callable[[int], None]:
        def end(code: int) -> None:
            ended.append((how, code))
            raise EndedError
        return end

    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(cli.os, "_exit", record("os._exit"))
    monkeypatch.setattr(cli.sys, "exit", record("sys.exit"))
    monkeypatch.setattr(cli.sys, "argv", ["stems-opt", command])
    with pytest.raises(EndedError):
        cli.run()
    assert ended == [("os._exit" if fast else "sys.exit", 3)]


def test_fast_exit_flushes_the_json(tmp_path: Path) -> None:
    """Through ``python -m stems_opt`` into a file (block-buffered): the whole JSON
    document is there after the fast exit."""
    import json

    out = tmp_path / "out.json"
    with open(out, "w") as f:
        done = subprocess.run([sys.executable, "-m", "stems_opt", "solve",
                               str(ROOT / "instances" / "tiny_chain.yaml"), "--json", "--quiet"],
                              stdout=f, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
                              check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["status"] == "optimal"


def test_max_segment_layers_caps_a_network_file(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``--max-segment-layers N`` gives a network file (which has no options) the cap an
    instance sets with ``options.max_segment_layers``: the same proven optimum, every
    segment at most N layers, and never below the uncapped optimum; 0 is refused."""
    import json

    net = ROOT / "models" / "networks" / "tiny_chain.yaml"
    hw = ROOT / "models" / "hardware" / "tiny.yaml"

    def solved(*args: str) -> dict:
        assert main(["solve", *args, "--json", "--quiet"]) == 0
        return json.loads(capsys.readouterr().out)

    capped = solved(str(net), "--hardware", str(hw), "--max-segment-layers", "1")
    inst = tmp_path / "inst.yaml"
    inst.write_text(f"network: {net}\nhardware: {hw}\noptions: {{max_segment_layers: 1}}\n")
    same = solved(str(inst))
    free = solved(str(net), "--hardware", str(hw))
    assert capped["status"] == same["status"] == free["status"] == "optimal"
    assert capped["objective_value"] == same["objective_value"] >= free["objective_value"]
    assert all(len(s["layers"]) == 1 for s in capped["mapping"]["segments"])
    assert any(len(s["layers"]) > 1 for s in free["mapping"]["segments"])
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(net), "--hardware", str(hw), "--max-segment-layers", "0"])
    assert exc.value.code == 2 and "--max-segment-layers" in capsys.readouterr().err

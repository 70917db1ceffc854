"""Broken inputs give exit code 2 (or 1 for a mapping that does not fit) and a clear message.

Every file under ``tests/data/bad/`` is one case of :data:`CASES`; its first line
is a comment saying what is broken (``inst_empty.yaml`` is empty on purpose).
The prefix says what the file is: ``inst_`` an instance, ``net_`` a network,
``hw_`` a hardware description (both wrapped in a generated instance next to
the tiny good parts), ``map_`` a mapping for the tiny instance.

Each case runs ``evaluate`` and ``validate`` in-process; a few also run the
real command line in a subprocess. Every message must name the file and, where
there is one, the layer and the field, and no traceback may leak out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stems_opt.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
BAD = DATA / "bad"
TINY = DATA / "tiny"
TINY_INSTANCE = TINY / "inst.yaml"
EXIT_INFEASIBLE, EXIT_INPUT = 1, 2


def lay(name: str) -> str:
    """How a message names a layer (or a segment, hardware level, input tensor)."""
    return f"layer {name!r}"


def fld(name: str) -> str:
    """How a message names a field."""
    return f"field {name!r}"


@dataclass(frozen=True)
class Case:
    """One broken file and what the messages about it must contain."""

    file: str
    expect: tuple[str, ...] = ()
    exits: dict[str, int] = field(default_factory=lambda: {"evaluate": EXIT_INPUT,
                                                           "validate": EXIT_INPUT})
    bug: str | None = None
    names: str | None = None  # the file the message names, when not ``file`` itself

    @property
    def role(self) -> str:
        return self.file.split("_", 1)[0]


CASES = [
    # --- instances ----------------------------------------------------------------------
    Case("inst_malformed_yaml.yaml", ("malformed YAML", "line 4")),
    Case("inst_top_level_list.yaml", ("expected an instance", "mapping at the top level",
                                      "got list")),
    Case("inst_unknown_field.yaml", (fld("solver"), "unknown field")),
    Case("inst_missing_network_file.yaml", ("inst_missing_network_file.yaml", fld("network"),
                                            "file not found"), names="no_such_network.yaml"),
    Case("inst_empty.yaml", ("is empty", "mapping at the top level")),
    Case("inst_comment_only.yaml", ("is empty", "mapping at the top level")),
    Case("inst_known_optima_not_list.yaml", (fld("known_optima"), "must be a list", "got int")),
    Case("inst_duplicate_key.yaml", ("duplicate key 'network'", "line 4", "first given at line 2")),
    Case("inst_max_segment_layers_zero.yaml", (fld("options.max_segment_layers"), "got 0")),
    # --- networks -----------------------------------------------------------------------
    Case("net_unknown_top_field.yaml", (fld("batch"), "unknown field")),
    Case("net_unknown_layer_field.yaml", (lay("c2"), fld("kernal"), "unknown field")),
    Case("net_unknown_loop_dim.yaml", (lay("c2"), fld("loop_dims.KX"), "unknown loop dimension")),
    Case("net_negative_k.yaml", (lay("c1"), fld("loop_dims.K"), "-4")),
    Case("net_zero_channels.yaml", (lay("input"), fld("channels"), "got 0")),
    Case("net_non_integer_size.yaml", (lay("c1"), fld("loop_dims.K"), "4.5")),
    Case("net_add_channel_mismatch.yaml", (lay("res"), fld("inputs"), "'c2' is 8x8x8",
                                           "'c1' is 4x8x8")),
    Case("net_kernel_too_large.yaml", (lay("c1"), fld("loop_dims.FY"), "larger than")),
    Case("net_input_later_layer.yaml", (lay("c1"), fld("inputs"), "c2")),
    Case("net_input_unknown_layer.yaml", (lay("c2"), fld("inputs"), "c9")),
    Case("net_unknown_layer_type.yaml", (lay("up1"), fld("type"), "'deconv'")),
    Case("net_unknown_neuron.yaml", (lay("c1"), fld("neuron"), "'izhikevich'")),
    Case("net_duplicate_layer.yaml", (lay("c1"), fld("name"), "duplicate")),
    Case("net_linear_unflattened.yaml", (lay("fc"), fld("inputs"), "flatten")),
    Case("net_loop_dim_t_mismatch.yaml", (lay("c1"), fld("loop_dims.T"), "is 9", "timesteps: 4")),
    Case("net_defaults_zero_bits.yaml", (fld("defaults.weight_bits"), "got 0")),
    Case("net_timesteps_float.yaml", (fld("timesteps"), "16.0")),
    Case("net_add_k_mismatch.yaml", (lay("res"), fld("loop_dims.K"), "is 8", "gives 4")),
    Case("net_flatten_k_mismatch.yaml", (lay("flat"), fld("loop_dims.K"), "is 100",
                                         "gives 256")),
    Case("net_pool_kernel_fy_mismatch.yaml", (lay("pool"), fld("loop_dims.FY"), "is 3",
                                              "gives 2")),
    Case("net_linear_oy_not_one.yaml", (lay("fc"), fld("loop_dims.OY"), "is 4", "gives 1")),
    # --- hardware -----------------------------------------------------------------------
    Case("hw_gb_missing_size.yaml", (lay("global_buffer"), fld("size"))),
    Case("hw_negative_energy.yaml", (lay("dram"), fld("read_pj_per_bit"), "-10.94")),
    Case("hw_unknown_array_dim.yaml", (lay("operational_array"), fld("sizes.Q"))),
    Case("hw_infinite_energy.yaml", (lay("dram"), fld("read_pj_per_bit"), "finite", "inf")),
    Case("hw_clock_nan.yaml", (fld("clock_hz"), "nan")),
    Case("hw_clock_bool.yaml", (fld("clock_hz"), "True")),
    # --- mappings for the tiny instance -------------------------------------------------
    Case("map_tiles_exceed_extent.yaml", ("segment 0", fld("tiles"), "1..8")),
    Case("map_time_batch_not_divisor.yaml", ("segment 1", fld("time_batch"), "T = 4")),
    Case("map_chunks_not_divide_k.yaml", ("segment 0", lay("c1"), fld("weights"), "K = 4")),
    Case("map_layer_in_two_segments.yaml", (lay("c2"), fld("layers"), "more than one segment")),
    Case("map_layer_in_no_segment.yaml", (lay("add"), fld("layers"), "no segment")),
    Case("map_unknown_segment_field.yaml", (lay("segment 0"), fld("tile"), "unknown field")),
    Case("map_unknown_top_field.yaml", (fld("solver"), "unknown field")),
    Case("map_unknown_layer.yaml", (lay("c7"), fld("layers"), "no such layer")),
    Case("map_tile_resident_time_outer.yaml", ("segment 0", lay("c1"), fld("states"),
                                               "space_outer")),
    Case("map_halo_unknown_tensor.yaml", ("segment 0", lay("c9"), fld("halos"),
                                          "no such tensor")),
    Case("map_states_unknown_layer.yaml", ("segment 0", lay("c9"), fld("states"),
                                           "no such layer")),
    # Well formed but too big: evaluate scores it (exit 1), validate rejects it (exit 2).
    Case("map_overflows_gb.yaml", ("segment 0", "global buffer", "capacity"),
         exits={"evaluate": EXIT_INFEASIBLE, "validate": EXIT_INPUT}),
]
BY_FILE = {c.file: c for c in CASES}


def _params(commands: tuple[str, ...]) -> list[object]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        for cmd in commands:
            out.append(pytest.param(case, cmd, id=f"{case.file}-{cmd}", marks=marks))
    return out


def instance_for(case: Case, tmp_path: Path) -> Path:
    """The instance file to run: the case itself, or a wrapper around a network/hardware."""
    bad = BAD / case.file
    if case.role == "inst":
        return bad
    if case.role == "map":
        return TINY_INSTANCE
    net = bad if case.role == "net" else TINY / "net.yaml"
    hw = bad if case.role == "hw" else TINY / "hw.yaml"
    wrapper = tmp_path / f"wrap_{bad.stem}.yaml"
    wrapper.write_text(f"network: {net.resolve()}\nhardware: {hw.resolve()}\n")
    return wrapper


def argv_for(case: Case, command: str, tmp_path: Path) -> list[str]:
    inst = str(instance_for(case, tmp_path))
    argv = [command, inst]
    if case.role == "map":
        argv += ["--mapping", str(BAD / case.file)]
    elif command == "evaluate":
        argv += ["--schedule", "TB-LBL"]
    return argv


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``main`` in-process; argparse errors come back as their exit code."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean(out: str, err: str) -> None:
    assert "Traceback" not in out and "Traceback" not in err, err


LOCATION = re.compile(r"layer '[^']*'|field '[^']*'|segment \d+")


def assert_location_once(err: str) -> None:
    """No error line names the same segment, layer or field twice."""
    for line in err.splitlines():
        found = LOCATION.findall(line)
        assert len(found) == len(set(found)), line


# --- the corpus itself -------------------------------------------------------------------

def test_every_corpus_file_has_a_case() -> None:
    on_disk = {p.name for p in BAD.iterdir()}
    assert on_disk == set(BY_FILE), (on_disk ^ set(BY_FILE))
    assert len(CASES) == len(BY_FILE), "duplicate case"


@pytest.mark.parametrize("name", sorted(BY_FILE))
def test_corpus_file_says_what_is_broken(name: str) -> None:
    text = (BAD / name).read_text(encoding="utf-8")
    if name == "inst_empty.yaml":
        assert text == ""
        return
    first = text.splitlines()[0]
    assert first.startswith("# ") and len(first) > 10, first


# --- in-process: every case, evaluate and validate ---------------------------------------

@pytest.mark.parametrize(("case", "command"), _params(("evaluate", "validate")))
def test_bad_input(case: Case, command: str, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(argv_for(case, command, tmp_path), capsys)
    assert_clean(out, err)
    assert rc == case.exits[command], (rc, out, err)
    if rc == EXIT_INFEASIBLE:
        # Scored, not rejected: the report is on stdout and says why it does not fit.
        text = out
        assert "infeasible" in out
    else:
        text = err
        assert err.startswith("stems-opt: error: "), err
        assert (case.names or case.file) in err, err
        assert_location_once(err)
    for fragment in case.expect:
        assert fragment in text, (fragment, text)


def test_overflow_names_segment_tile_layer_bits_capacity(
        capsys: pytest.CaptureFixture[str]) -> None:
    from stems_opt.cost_model import evaluate
    from stems_opt.io import load_instance, load_mapping

    mapping_file = BAD / "map_overflows_gb.yaml"
    problem = load_instance(TINY_INSTANCE)
    cost = evaluate(problem, load_mapping(mapping_file).canonical(problem.network))
    seg = cost.segments[0]
    cap = problem.hardware.gb_capacity_bits
    assert seg.peak_gb_bits > cap, "the corpus mapping must overflow the global buffer"

    rc, out, err = run_cli(["validate", str(TINY_INSTANCE), "--mapping", str(mapping_file)],
                           capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    for fragment in (mapping_file.name, "segment 0", f"tile {seg.peak_tile}",
                     repr(seg.peak_layer), f"{seg.peak_gb_bits} bits", f"{cap} bits"):
        assert fragment in err, (fragment, err)

    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--mapping", str(mapping_file),
                            "--json"], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INFEASIBLE
    doc = json.loads(out)
    assert doc["status"] == "infeasible"
    assert doc["peak_gb_bits"] == seg.peak_gb_bits > doc["capacity_bits"] == cap


# --- bad arguments that are not corpus files ---------------------------------------------

ARG_CASES = {
    "missing-instance": (["evaluate", str(BAD / "no_such_file.yaml"), "--schedule", "TB-LBL"],
                         ("no_such_file.yaml", "file not found")),
    "missing-instance-validate": (["validate", str(BAD / "no_such_file.yaml")],
                                  ("no_such_file.yaml", "file not found")),
    "directory-instance": (["evaluate", str(BAD), "--schedule", "TB-LBL"],
                           (str(BAD), "is a directory")),
    "directory-instance-validate": (["validate", str(BAD)], (str(BAD), "is a directory")),
    "missing-mapping": (["evaluate", str(TINY_INSTANCE), "--mapping",
                         str(BAD / "no_such_mapping.yaml")],
                        ("no_such_mapping.yaml", "file not found")),
    "directory-mapping": (["validate", str(TINY_INSTANCE), "--mapping", str(BAD)],
                          (str(BAD), "is a directory")),
    "empty-mapping": (["evaluate", str(TINY_INSTANCE), "--mapping", str(BAD / "inst_empty.yaml")],
                      ("inst_empty.yaml", "mapping at the top level")),
    "malformed-mapping": (["evaluate", str(TINY_INSTANCE), "--mapping",
                           str(BAD / "inst_malformed_yaml.yaml")],
                          ("inst_malformed_yaml.yaml", "malformed YAML")),
    "unknown-schedule": (["evaluate", str(TINY_INSTANCE), "--schedule", "ST-FOO"],
                         (fld("schedule"), "'ST-FOO'", "ST-LBL")),
    "bad-hybrid": (["evaluate", str(TINY_INSTANCE), "--schedule", "HYBRID:SS:FF"],
                   (fld("schedule"), "4 time characters")),
    "tiles-without-fused-blocks": (["evaluate", str(TINY_INSTANCE), "--schedule", "ST-LBL",
                                    "--tiles", "2"], (fld("tiles"),)),
    "tile-count-mismatch": (["evaluate", str(TINY_INSTANCE), "--schedule", "ST-F",
                             "--tiles", "1,2"], (fld("tiles"), "2 tile counts")),
}


@pytest.mark.parametrize("name", sorted(ARG_CASES))
def test_bad_arguments(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expect = ARG_CASES[name]
    rc, out, err = run_cli(argv, capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT, (rc, err)
    for fragment in expect:
        assert fragment in err, (fragment, err)


@pytest.mark.parametrize("argv", [
    ["evaluate", str(TINY_INSTANCE)],                        # neither --schedule nor --mapping
    ["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F", "--tiles", "0"],
    ["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F", "--tiles", "x"],
    ["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F", "--objective", "latency"],
    ["frobnicate"],
], ids=["no-source", "tiles-0", "tiles-x", "bad-objective", "bad-command"])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(argv, capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "usage: stems-opt" in err


# --- nothing is overwritten or created by a failing run ----------------------------------

FAILING_RUNS = {
    "bad-instance": [str(BAD / "inst_unknown_field.yaml"), "--schedule", "TB-LBL"],
    "malformed-instance": [str(BAD / "inst_malformed_yaml.yaml"), "--schedule", "TB-F"],
    "missing-instance": [str(BAD / "no_such_file.yaml"), "--schedule", "TB-F"],
    "bad-mapping": [str(TINY_INSTANCE), "--mapping", str(BAD / "map_layer_in_two_segments.yaml")],
    "unknown-schedule": [str(TINY_INSTANCE), "--schedule", "NOPE"],
}


@pytest.mark.parametrize("name", sorted(FAILING_RUNS))
def test_failing_run_leaves_existing_out_file_alone(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "existing.yaml"
    original = b"# precious mapping, do not touch\nmapping: {segments: []}\n"
    out_file.write_bytes(original)
    rc, out, err = run_cli(["evaluate", *FAILING_RUNS[name], "--out", str(out_file)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert out_file.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.yaml"]  # no temp files


@pytest.mark.parametrize("name", sorted(FAILING_RUNS))
def test_failing_run_creates_no_out_file(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "new.yaml"
    rc, out, err = run_cli(["evaluate", *FAILING_RUNS[name], "--out", str(out_file)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert list(tmp_path.iterdir()) == []


def test_out_in_missing_directory_is_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no_such_dir" / "m.yaml"
    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F",
                            "--out", str(target)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "m.yaml" in err


def test_out_is_a_directory_is_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F",
                            "--out", str(tmp_path)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []  # no temp files


def test_out_under_a_file_is_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "plain.txt"
    blocker.write_text("not a directory\n")
    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F",
                            "--out", str(blocker / "m.yaml")], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "m.yaml" in err and "not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


def test_out_is_checked_before_solving(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import stems_opt.solvers

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the solver ran although --out cannot be written")

    monkeypatch.setattr(stems_opt.solvers, "solve", must_not_run)
    target = tmp_path / "no_such_dir" / "m.yaml"
    rc, out, err = run_cli(["solve", str(TINY_INSTANCE), "--out", str(target)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "m.yaml" in err and fld("out") in err


@pytest.mark.parametrize("where", ["missing-directory", "directory"])
def test_write_text_safely_raises_input_error(where: str, tmp_path: Path) -> None:
    from stems_opt.errors import StemsInputError
    from stems_opt.io import write_text_safely

    target = tmp_path / "no_such_dir" / "m.yaml" if where == "missing-directory" else tmp_path
    with pytest.raises(StemsInputError) as info:
        write_text_safely(target, "mapping: {}\n")
    assert str(target) in str(info.value)
    assert "cannot be written" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no temp files


def test_mapping_violation_names_its_location_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    mapping_file = BAD / "map_chunks_not_divide_k.yaml"
    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--mapping", str(mapping_file)],
                           capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert err == (f"stems-opt: error: {mapping_file}, segment 0, layer 'c1', field 'weights': "
                   "chunks 3 must divide K = 4\n")


def test_overflowing_mapping_is_still_written_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "scored.yaml"
    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--mapping",
                            str(BAD / "map_overflows_gb.yaml"), "--out", str(target)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INFEASIBLE
    assert "DOES NOT FIT" in out
    assert "\nmapping:\n" in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.yaml"]


def test_duplicate_json_key_is_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping_file = tmp_path / "dup.json"
    mapping_file.write_text('{"segments": [{"layers": ["c1", "c2", "add", "pool"], '
                            '"time_batch": 4, "time_batch": 2}]}')
    rc, out, err = run_cli(["evaluate", str(TINY_INSTANCE), "--mapping", str(mapping_file)],
                           capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "dup.json" in err and "duplicate key 'time_batch'" in err


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    from stems_opt.io import read_document

    doc = tmp_path / "merge.yaml"
    doc.write_text("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")
    assert read_document(doc)["derived"] == {"x": 1, "y": 3}


# --- the real command line, in a subprocess ----------------------------------------------

SUBPROCESS_CASES = ["inst_malformed_yaml.yaml", "net_unknown_layer_field.yaml",
                    "map_time_batch_not_divisor.yaml", "map_overflows_gb.yaml"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_subprocess(name: str, tmp_path: Path) -> None:
    case = BY_FILE[name]
    argv = argv_for(case, "evaluate", tmp_path)
    proc = subprocess.run([sys.executable, "-m", "stems_opt.cli", *argv], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert_clean(proc.stdout, proc.stderr)
    assert proc.returncode == case.exits["evaluate"], proc.stderr
    text = proc.stdout if proc.returncode == EXIT_INFEASIBLE else proc.stderr
    if proc.returncode == EXIT_INPUT:
        assert (case.names or name) in proc.stderr
    for fragment in case.expect:
        assert fragment in text, (fragment, text)

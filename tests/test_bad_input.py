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
import os
import re
import stat
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
MAX_LINE_CHARS = 1000


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
    problems: int | None = None  # error lines expected, when the file has several mistakes

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
    # --- all problems at once: three mistakes, three messages ---------------------------
    Case("net_three_mistakes.yaml", (lay("c1"), fld("loop_dims.K"), "-4", lay("c2"),
                                     fld("kernal"), lay("c3"), fld("neuron"), "'izhikevich'"),
         problems=3),
    Case("hw_three_mistakes.yaml", (lay("dram"), fld("read_pj_per_bit"), "-10.94",
                                    lay("global_buffer"), fld("size"), "got 0",
                                    lay("operational_array"), fld("sizes.Q")), problems=3),
    Case("inst_three_mistakes.yaml", (fld("objective"), "'speed'",
                                      "(network), field 'timesteps'", "got 0",
                                      "(hardware), field 'clock_hz'", "got -1"), problems=3),
    Case("map_three_mistakes.yaml", ("segment 0", fld("tiles"), "got 0", "segment 1",
                                     fld("sub_tiles.c2"), "segment 2", "tiles 99 must be in 1..4"),
         problems=3),
    # --- bounded parsing: aliases, nesting, long values -----------------------------------
    Case("inst_alias_bomb.yaml", ("too complex", "expands to more than 1,000,000 values")),
    Case("net_deep_nesting.yaml", ("too complex", "nested deeper than 64 levels")),
    Case("net_long_value.yaml", (lay("c1"), fld("neuron"), "'xxxxxxxxxx", "xxx...xxx")),
    # --- numbers beyond what the cost model and both backends handle exactly --------------
    Case("hw_gb_size_2_64.yaml", (lay("global_buffer"), fld("size"), "1..2^53",
                                  "18446744073709551616")),
    Case("hw_dram_energy_1e308.yaml", (lay("dram"), fld("read_pj_per_bit"), "1e+308",
                                       fld("write_pj_per_bit"), "0..1e+06"), problems=2),
    Case("hw_bandwidth_tiny.yaml", (lay("dram"), fld("bandwidth_bits_per_cycle"), "1e-300")),
    Case("net_timesteps_1e18.yaml", (fld("timesteps"), "1..2147483647",
                                     "1000000000000000000")),
    Case("net_height_huge.yaml", (lay("input"), fld("height"), "1..65536", "1000000",
                                  lay("c1"), fld("loop_dims.K")), problems=2),
    Case("net_worst_case_too_large.yaml", (lay("c1"), fld("loop_dims"), "2^53",
                                           "count exactly")),
    Case("map_tiles_2_40.yaml", ("segment 0", fld("tiles"), "1099511627776")),
    # Well formed, but no layer fits the buffer at all: both commands say infeasible (exit 1).
    Case("hw_gb_too_small.yaml", ("infeasible",),
         exits={"evaluate": EXIT_INFEASIBLE, "validate": EXIT_INFEASIBLE}),
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
        if case.problems is not None:
            assert len(err.splitlines()) == case.problems, err
    # Messages quote excerpts: a line stays short whatever the file holds.
    assert max(map(len, (out + err).splitlines()), default=0) <= MAX_LINE_CHARS
    for fragment in case.expect:
        assert fragment in text, (fragment, text)


def test_overflow_names_segment_tile_layer_bits_capacity(
        capsys: pytest.CaptureFixture[str]) -> None:
    from stems_opt.cost.evaluation import evaluate
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
    ["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F", "--objective", "speed"],
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
    from stems_opt.files import write_text_safely

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
    from stems_opt.files import read_document

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


# --- hostile input beyond the corpus ------------------------------------------------------

def _wrap(tmp_path: Path, network: object, hardware: object = TINY / "hw.yaml") -> Path:
    """An instance naming ``network`` and ``hardware`` (paths written as given)."""
    inst = tmp_path / "inst.yaml"
    inst.write_text(f"network: {network}\nhardware: {hardware}\n")
    return inst


def test_device_as_network_is_refused_without_reading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # /dev/zero never ends: reading it whole was a MemoryError.
    rc, out, err = run_cli(["validate", str(_wrap(tmp_path, "/dev/zero"))], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "inst.yaml, field 'network'" in err and "not a regular file" in err, err
    assert "/dev/zero" in err


def test_fifo_as_network_does_not_block(tmp_path: Path) -> None:
    # A FIFO without a writer blocked open() forever; the timeout only guards the run.
    fifo = tmp_path / "net.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "stems_opt.cli", "validate",
                           str(_wrap(tmp_path, fifo))], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert_clean(proc.stdout, proc.stderr)
    assert proc.returncode == EXIT_INPUT
    assert "not a regular file" in proc.stderr and "net.yaml" in proc.stderr


def test_oversized_file_is_refused_before_reading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stems_opt.files import MAX_FILE_BYTES

    big = tmp_path / "net.yaml"
    with big.open("wb") as fh:  # sparse: no disk space, but st_size says 16 MiB + 1
        fh.truncate(MAX_FILE_BYTES + 1)
    rc, out, err = run_cli(["validate", str(_wrap(tmp_path, big))], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert f"{MAX_FILE_BYTES + 1:,} bytes" in err and "limited to" in err, err


def test_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    from stems_opt.files import MAX_FILE_BYTES, read_document

    # JSON padded with blanks: the size check is the same for every format, and
    # the C JSON parser reads 16 MB in a fraction of the pure-Python YAML scanner's time.
    doc = tmp_path / "big.json"
    body = '{"a": 1}'
    doc.write_text(body + " " * (MAX_FILE_BYTES - len(body) - 1) + "\n")
    assert doc.stat().st_size == MAX_FILE_BYTES
    assert read_document(doc) == {"a": 1}


def test_deep_json_mapping_is_refused(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # 1000 nested arrays ended in RecursionError.
    deep = tmp_path / "deep.json"
    deep.write_text('{"segments": ' + "[" * 1000 + "]" * 1000 + "}")
    rc, out, err = run_cli(["validate", str(TINY_INSTANCE), "--mapping", str(deep)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "deep.json: too complex: nested deeper than 64 levels" in err, err


def test_nesting_at_the_limit_is_read(tmp_path: Path) -> None:
    from stems_opt.files import MAX_NESTING, read_document

    for name, text in (("ok.yaml", "[" * MAX_NESTING + "]" * MAX_NESTING),
                       ("ok.json", "[" * MAX_NESTING + "]" * MAX_NESTING)):
        path = tmp_path / name
        path.write_text(text)
        doc = read_document(path)
        for _ in range(MAX_NESTING - 1):
            doc = doc[0]
        assert doc == []


def test_small_alias_reuse_is_read(tmp_path: Path) -> None:
    # Aliases are fine as long as their expansion stays small: 9^3 strings.
    from stems_opt.files import read_document

    doc = tmp_path / "alias.yaml"
    doc.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n")
    assert sum(len(inner) for inner in read_document(doc)["c"][0]) == 81


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    from stems_opt.errors import StemsInputError
    from stems_opt.files import read_document

    doc = tmp_path / "loop.yaml"
    doc.write_text("a: &a [1, *a]\n")
    with pytest.raises(StemsInputError, match="alias refers to a value that contains it"):
        read_document(doc)


def test_integer_beyond_python_digit_limit_is_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net.yaml"
    net.write_text((TINY / "net.yaml").read_text().replace("timesteps: 4",
                                                          "timesteps: " + "9" * 5000))
    rc, out, err = run_cli(["validate", str(_wrap(tmp_path, net))], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "net.yaml" in err and "4300 digits" in err
    assert max(map(len, err.splitlines())) <= MAX_LINE_CHARS


def test_multi_error_json_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    doc = yaml.safe_load((BAD / "map_three_mistakes.yaml").read_text())
    mapping_file = tmp_path / "three.json"
    mapping_file.write_text(json.dumps(doc))
    rc, out, err = run_cli(["validate", str(TINY_INSTANCE), "--mapping", str(mapping_file)],
                           capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    lines = err.splitlines()
    assert len(lines) == 3 and all("three.json" in line for line in lines), err
    for fragment in ("segment 0", "segment 1", "segment 2", "tiles 99"):
        assert fragment in err


def test_validate_gives_the_explanation_solve_gives(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stems_opt.io import load_instance
    from stems_opt.solvers import explain_infeasible, finest_peak_bits

    inst = _wrap(tmp_path, TINY / "net.yaml", BAD / "hw_gb_too_small.yaml")
    problem = load_instance(inst)
    # c1 alone at its finest tiling needs more than the 64-bit buffer.
    assert finest_peak_bits(problem, "c1") > problem.hardware.gb_capacity_bits == 64
    rc, out, err = run_cli(["validate", str(inst)], capsys)
    assert_clean(out, err)
    assert rc == EXIT_INFEASIBLE
    assert out.splitlines()[-1] == f"{inst}: infeasible: no mapping fits: " \
        f"{explain_infeasible(problem)}"
    rc, out, err = run_cli(["solve", str(inst), "--json"], capsys)
    assert rc == EXIT_INFEASIBLE
    assert json.loads(out)["message"] == explain_infeasible(problem)


def test_validate_of_a_feasible_instance_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["validate", str(TINY_INSTANCE)], capsys)
    assert rc == 0 and err == "" and "infeasible" not in out


# --- --out: only regular files, atomically, with the usual mode ---------------------------

def _evaluate_to(out_path: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_cli(["evaluate", str(TINY_INSTANCE), "--schedule", "TB-F", "--out",
                    str(out_path)], capsys)


def test_out_onto_a_fifo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same check refuses device nodes (once /dev/full was replaced by a regular file).
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    rc, out, err = _evaluate_to(fifo, capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "not a regular file" in err and fld("out") in err
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["m.yaml"]


def test_out_onto_a_link_to_a_fifo_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "m.yaml"
    link.symlink_to(fifo)
    rc, _out, err = _evaluate_to(link, capsys)
    assert rc == EXIT_INPUT and "not a regular file" in err
    assert link.is_symlink() and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_out_through_a_symlink_replaces_its_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "m.yaml"
    target.write_text("old\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    rc, _out, err = _evaluate_to(link, capsys)
    assert rc == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "\nmapping:\n" in target.read_text()
    # The temporary file lived next to the target and is gone.
    assert [p.name for p in real_dir.iterdir()] == ["m.yaml"]


def test_out_through_a_dangling_symlink_creates_its_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new.yaml"
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    rc, _out, err = _evaluate_to(link, capsys)
    assert rc == 0, err
    assert link.is_symlink() and "\nmapping:\n" in target.read_text()


def test_out_empty_path_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = _evaluate_to("", capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "--out" in err and "empty" in err, err
    assert list(tmp_path.iterdir()) == []


def test_out_new_file_mode_follows_the_umask(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o022)
    try:
        rc, _, _ = _evaluate_to(tmp_path / "m.yaml", capsys)
        os.umask(0o027)
        rc2, _, _ = _evaluate_to(tmp_path / "m2.yaml", capsys)
    finally:
        os.umask(old)
    assert rc == rc2 == 0
    assert stat.S_IMODE((tmp_path / "m.yaml").stat().st_mode) == 0o644  # 0666 & ~022
    assert stat.S_IMODE((tmp_path / "m2.yaml").stat().st_mode) == 0o640  # 0666 & ~027


def test_out_replacing_a_file_keeps_its_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "m.yaml"
    target.write_text("old\n")
    target.chmod(0o600)
    rc, _out, _err = _evaluate_to(target, capsys)
    assert rc == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "\nmapping:\n" in target.read_text()


def test_out_failing_mid_write_leaves_the_old_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A disk filling up during the write: the rename never happens.
    target = tmp_path / "m.yaml"
    original = "# precious\n"
    target.write_text(original)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    rc, out, err = _evaluate_to(target, capsys)
    assert_clean(out, err)
    assert rc == EXIT_INPUT
    assert "No space left on device" in err and "m.yaml" in err
    assert target.read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.yaml"]  # no temporary file left


def test_check_writable_refuses_an_empty_path() -> None:
    # The command line refuses `--out ""` while parsing; the library refuses it too.
    from stems_opt.errors import StemsInputError
    from stems_opt.files import check_writable, write_text_safely

    for call in (lambda: check_writable("", field="out"), lambda: write_text_safely("", "x")):
        with pytest.raises(StemsInputError, match="is empty"):
            call()

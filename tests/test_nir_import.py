"""NIR import: graphs shaped like each framework's export become the expected network
and solve end to end, from the command line and through the API.

The graphs are built with numpy in ``tests/nir_graphs.py`` (their docstrings
draw each network); the expected layers are written out here by hand.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import nir_graphs  # noqa: E402  (needs nir, skipped above when it is missing)

import stems_opt  # noqa: E402
from stems_opt.cli import main  # noqa: E402
from stems_opt.io import load_network  # noqa: E402
from stems_opt.nir_import import NirOptions, load_nir, nir_to_network_dict  # noqa: E402
from stems_opt.sources import load_problem  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY_HW = ROOT / "models" / "hardware" / "tiny.yaml"
BIG_HW = ROOT / "models" / "hardware" / "edge_128kb.yaml"
OPTS = NirOptions(timesteps=4)

# (name, kind, neuron, K, C, OY, OX, V bits, O bits, groups) per layer, by hand from the
# docstrings of tests/nir_graphs.py with the default precisions (W 4, V 12, spikes 1).
EXPECTED = {
    "snntorch": [
        ("0", "conv", "lif", 4, 2, 8, 8, 12, 1, 1),
        ("2", "conv", "lif", 4, 4, 4, 4, 24, 1, 1),       # CubaLIF: two 12-bit variables
        ("4", "flatten", "none", 64, 4, 1, 1, 12, 1, 1),  # 4 x 4 x 4
        ("5", "linear", "lif", 16, 64, 1, 1, 12, 1, 1),
        ("7", "linear", "lif", 12, 16, 1, 1, 12, 1, 1),
        ("9", "linear", "lif", 10, 12, 1, 1, 12, 1, 1),
    ],
    "spikingjelly": [
        ("conv1", "conv", "if", 4, 2, 8, 8, 12, 1, 1),
        ("conv2", "conv", "if", 4, 4, 8, 8, 12, 1, 1),
        ("conv3_add", "add", "none", 4, 4, 8, 8, 12, 1, 1),  # sn1 + sn2, two edges into conv3
        ("conv3", "conv", "lif", 4, 4, 8, 8, 12, 1, 1),
        ("pool", "pool", "none", 4, 4, 4, 4, 12, 1, 1),
        ("flatten", "flatten", "none", 64, 4, 1, 1, 12, 1, 1),
        ("fc", "linear", "lif", 10, 64, 1, 1, 12, 1, 1),
    ],
    "norse": [
        ("block.conv", "conv", "lif", 4, 2, 8, 8, 12, 1, 1),  # inlined from the nested graph
        ("pool", "pool", "none", 4, 4, 4, 4, 12, 1, 1),
        ("flatten", "flatten", "none", 64, 4, 1, 1, 12, 1, 1),
        ("readout", "linear", "lif", 10, 64, 1, 1, 12, 12, 1),  # LI: outputs its 12-bit state
    ],
    "sinabs": [
        ("0", "conv", "if", 4, 2, 8, 8, 12, 1, 1),
        ("2", "pool", "none", 4, 4, 4, 4, 12, 1, 1),
        ("3", "conv", "if", 8, 4, 4, 4, 12, 1, 1),
        ("5", "flatten", "none", 128, 8, 1, 1, 12, 1, 1),
        ("6", "linear", "if", 10, 128, 1, 1, 12, 1, 1),
    ],
    "lava": [
        ("dw", "conv", "lif", 4, 1, 8, 8, 24, 1, 4),  # depthwise: C = 4 channels / 4 groups
        ("pw", "conv", "stateless", 8, 4, 8, 8, 12, 1, 1),  # Threshold only
        ("fc_flatten", "flatten", "none", 512, 8, 1, 1, 12, 1, 1),  # implicit in the export
        ("fc", "linear", "lif", 10, 512, 1, 1, 24, 1, 1),
    ],
}
INPUTS = {"snntorch": (2, 8, 8), "spikingjelly": (2, 8, 8), "norse": (2, 8, 8),
          "sinabs": (2, 8, 8), "lava": (4, 8, 8)}
OUTPUTS = {"snntorch": ("9",), "spikingjelly": ("fc",), "norse": ("readout",),
           "sinabs": ("6",), "lava": ("fc",)}


@pytest.fixture(scope="module")
def nir_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nir")
    out = {}
    for name, build in nir_graphs.FRAMEWORKS.items():
        out[name] = d / f"{name}.nir"
        nir.write(out[name], build())
    return out


def summary(net: stems_opt.Network) -> list[tuple]:
    return [(la.name, la.kind.value, la.neuron.value, la.k, la.c, la.oy, la.ox, la.state_bits,
             la.output_bits, la.groups) for la in net.layers]


@pytest.mark.parametrize("framework", sorted(EXPECTED))
def test_framework_export_reads_as_expected(framework: str, nir_files: dict[str, Path]) -> None:
    net = load_nir(nir_files[framework], OPTS)
    assert summary(net) == EXPECTED[framework]
    i = net.input
    assert (i.channels, i.height, i.width, i.bits) == (*INPUTS[framework], 1)
    assert net.output_names == OUTPUTS[framework]
    assert net.timesteps == 4


def test_grouped_conv_weights_and_operations(nir_files: dict[str, Path]) -> None:
    """Depthwise 3x3 conv, 4 channels: W = K * (C_in / groups) * 3 * 3 * 4 bits
    = 4 * 1 * 9 * 4 = 144 (a dense conv would be 576); operations per timestep
    K * C * OY * OX * FY * FX = 4 * 1 * 8 * 8 * 9 = 2304."""
    dw = load_nir(nir_files["lava"], OPTS).layer("dw")
    assert dw.weight_size_bits == 144
    assert dw.operations(1) == 2304


@pytest.mark.parametrize("framework", sorted(EXPECTED))
def test_cli_solves_every_framework_export(framework: str, nir_files: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import json

    rc = main(["solve", str(nir_files[framework]), "--hardware", str(BIG_HW),
               "--timesteps", "4", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["status"] == "optimal"
    # With a 128 KB buffer everything fits: the optimum is the compulsory traffic.
    assert doc["objective_value"] == doc["lower_bound_bits"]


@pytest.mark.parametrize("framework", sorted(EXPECTED))
def test_api_solves_every_framework_export(framework: str, nir_files: dict[str, Path]) -> None:
    problem = load_problem(nir_files[framework], BIG_HW, nir=OPTS)
    result = stems_opt.solve(problem, objective="energy", solver="highs")
    assert result.status is stems_opt.SolveStatus.OPTIMAL
    assert result.objective_value == result.cost.total_energy_pj
    assert result.bound == result.objective_value


def test_compulsory_traffic_by_hand(nir_files: dict[str, Path]) -> None:
    """Sinabs export, T = 4, through the API. Compulsory traffic (bits):
    input 2*8*8*4*1 = 512; output (layer 6) 10*4*1 = 40;
    weights 4*2*9*4 + 8*4*9*4 + 10*128*4 = 288 + 1152 + 5120 = 6560;
    state twice (streaming) 2 * (4*8*8*12 + 8*4*4*12 + 10*12) = 2 * 4728 = 9456;
    total 16568. A 128 KB buffer holds everything, so the optimum reaches it."""
    problem = load_problem(nir_files["sinabs"], BIG_HW, nir=OPTS)
    result = stems_opt.solve(problem, objective="traffic", solver="highs")
    assert result.status is stems_opt.SolveStatus.OPTIMAL
    assert result.objective_value == 16568


def test_tiny_buffer_agrees_between_backends(nir_files: dict[str, Path]) -> None:
    """On the 4096-bit buffer the SpikingJelly graph (with its residual add) needs
    real choices; both backends prove the same optimum."""
    problem = load_problem(nir_files["spikingjelly"], TINY_HW, nir=OPTS)
    a = stems_opt.solve(problem, solver="cpsat")
    b = stems_opt.solve(problem, solver="highs")
    assert a.status is b.status is stems_opt.SolveStatus.OPTIMAL
    assert a.objective_value == b.objective_value
    assert a.objective_value >= stems_opt.compulsory_traffic_bits(problem.network)


def test_precision_options(nir_files: dict[str, Path]) -> None:
    net = load_nir(nir_files["lava"], NirOptions(timesteps=2, weight_bits=8, state_bits=16,
                                                 spike_bits=2))
    dw = net.layer("dw")
    assert (dw.weight_bits, dw.state_bits, dw.output_bits) == (8, 32, 2)  # CubaLIF: 2 x 16
    assert net.input.bits == 2 and net.timesteps == 2


def test_convert_writes_a_network_that_loads_the_same(nir_files: dict[str, Path],
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "net.yaml"
    assert main(["convert", str(nir_files["spikingjelly"]), "-o", str(out),
                 "--timesteps", "4"]) == 0
    assert summary(load_network(out)) == EXPECTED["spikingjelly"]
    # never overwrites without --force
    before = out.read_text()
    assert main(["convert", str(nir_files["sinabs"]), "-o", str(out), "--timesteps", "4"]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == before
    assert main(["convert", str(nir_files["sinabs"]), "-o", str(out), "--timesteps", "4",
                 "--force"]) == 0
    assert summary(load_network(out)) == EXPECTED["sinabs"]


def test_shipped_example_is_current(tmp_path: Path) -> None:
    """models/networks/spikingjelly_sew.yaml is `stems-opt convert` of models/nir/ ...nir."""
    src = ROOT / "models" / "nir" / "spikingjelly_sew.nir"
    out = tmp_path / "x.yaml"
    assert main(["convert", str(src), "-o", str(out), "--timesteps", "4"]) == 0
    assert out.read_text() == (ROOT / "models" / "networks" / "spikingjelly_sew.yaml").read_text()


def test_file_order_does_not_matter(nir_files: dict[str, Path]) -> None:
    """nir.read returns nodes sorted by name ("10" before "2"); edges decide the order."""
    g = nir_graphs.snntorch_like()
    names = list(g.nodes)
    for perm in itertools.islice(itertools.permutations(names), 0, 3):
        shuffled = nir.NIRGraph(nodes={n: g.nodes[n] for n in reversed(perm)},
                                edges=list(reversed(g.edges)), type_check=False)
        net = load_nir_graph(shuffled)
        assert summary(net) == EXPECTED["snntorch"]


def load_nir_graph(graph: object) -> stems_opt.Network:
    from stems_opt.io import network_from_dict

    return network_from_dict(nir_to_network_dict(graph, OPTS))


# --- bad input: exit 2, the node named, no traceback -----------------------------------------

def _write(tmp_path: Path, nodes: dict, edges: list) -> Path:
    p = tmp_path / "bad.nir"
    nir.write(p, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return p


def _conv(c_out: int, c_in: int) -> object:
    return nir.Conv2d(input_shape=(8, 8), weight=np.ones((c_out, c_in, 3, 3), np.float32),
                      stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(c_out))


def _lif() -> object:
    one = np.ones(1, np.float32)
    return nir.LIF(tau=one, r=one, v_leak=one * 0, v_threshold=one, v_reset=one * 0)


def run_bad(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    rc = main(["solve", str(path), "--hardware", str(TINY_HW), "--timesteps", "4", *extra])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in out + err
    return err


def test_unsupported_node_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, {"input": nir.Input(input_type=np.array([2, 8, 8])),
                          "c": _conv(4, 2), "l": _lif(),
                          "d": nir.Delay(delay=np.ones(1)), "output": nir.Output(
                              output_type=np.array([4, 8, 8]))},
               [("input", "c"), ("c", "l"), ("l", "d"), ("d", "output")])
    err = run_bad(p, capsys)
    assert "bad.nir" in err and "layer 'd'" in err and "unsupported NIR node type Delay" in err


def test_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A channel mismatch and a neuron on a sum are both reported."""
    p = _write(tmp_path, {"input": nir.Input(input_type=np.array([2, 8, 8])),
                          "a": _conv(4, 2), "b": _conv(4, 3), "la": _lif(), "lb": _lif(),
                          "s": _lif(), "output": nir.Output(output_type=np.array([4, 8, 8]))},
               [("input", "a"), ("input", "b"), ("a", "la"), ("b", "lb"), ("a", "s"),
                ("la", "s"), ("s", "output")])
    err = run_bad(p, capsys)
    assert "layer 'b'" in err and "3 input channels" in err and "has 2 channels" in err
    assert "layer 's'" in err and "LIF node does not directly follow" in err


def test_cycle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, {"input": nir.Input(input_type=np.array([4, 8, 8])),
                          "a": _conv(4, 4), "b": _conv(4, 4),
                          "output": nir.Output(output_type=np.array([4, 8, 8]))},
               [("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")])
    assert "recurrent connections are not supported" in run_bad(p, capsys)


def test_nir_needs_hardware_and_timesteps(nir_files: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", str(nir_files["sinabs"])]) == 2
    assert "--hardware" in capsys.readouterr().err
    assert main(["evaluate", str(nir_files["sinabs"]), "--hardware", str(TINY_HW),
                 "--schedule", "TB-LBL"]) == 2
    assert "--timesteps" in capsys.readouterr().err


def test_not_a_nir_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "junk.nir"
    p.write_text("not hdf5")
    assert "cannot be read as a NIR graph" in run_bad(p, capsys)


@pytest.mark.parametrize("command", [["evaluate", "--schedule", "TB-F"], ["validate"],
                                     ["compare", "--schedules", "TB-LBL"]])
def test_other_commands_take_nir(command: list[str], nir_files: dict[str, Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([command[0], str(nir_files["norse"]), "--hardware", str(BIG_HW),
               "--timesteps", "4", *command[1:]])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "norse" in out


def test_conv1d_and_integrator(tmp_path: Path) -> None:
    """A 1-d audio-style export (Rockpool/snnTorch): input (1, 2, 32) with a batch
    dimension, Conv1d(4, k 3, pad 1) + I (integrator: its 12-bit state is the output),
    Flatten (4 * 32 = 128), Linear(10) + LIF. A length-32 signal is a 32 x 1 map with
    a 3 x 1 kernel: W = 4 * 2 * 3 * 4 = 96 bits, V = 4 * 32 * 1 * 12 = 1536 bits."""
    one = np.ones(1, np.float32)
    nodes = {"input": nir.Input(input_type=np.array([1, 2, 32])),
             "conv": nir.Conv1d(input_shape=32, weight=np.ones((4, 2, 3), np.float32),
                                stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(4)),
             "integrator": nir.I(r=one),
             "flat": nir.Flatten(input_type={"input": np.array([4, 32])}, start_dim=0),
             "fc": nir.Linear(weight=np.ones((10, 128), np.float32)), "lif": _lif(),
             "output": nir.Output(output_type=np.array([10]))}
    order = list(nodes)
    p = _write(tmp_path, nodes, list(itertools.pairwise(order)))
    net = load_nir(p, OPTS)
    assert summary(net) == [("conv", "conv", "if", 4, 2, 32, 1, 12, 12, 1),
                            ("flat", "flatten", "none", 128, 4, 1, 1, 12, 12, 1),
                            ("fc", "linear", "lif", 10, 128, 1, 1, 12, 1, 1)]
    conv = net.layer("conv")
    assert (conv.fy, conv.fx, conv.weight_size_bits, conv.state_size_bits) == (3, 1, 96, 1536)
    result = stems_opt.solve(load_problem(p, BIG_HW, nir=OPTS))
    assert result.status is stems_opt.SolveStatus.OPTIMAL


def test_missing_nir_package_says_how_to_install(nir_files: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "nir", None)  # makes `import nir` raise ImportError
    rc = main(["solve", str(nir_files["sinabs"]), "--hardware", str(TINY_HW), "--timesteps", "4"])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    assert "pip install 'stems-opt[nir]'" in err and "sinabs.nir" in err

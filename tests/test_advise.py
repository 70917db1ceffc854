"""The state-removal advisor: a ranking proven by hand on tiny_chain, the curve, the CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stems_opt import compulsory_traffic_bits, load_instance
from stems_opt.advise import ACCURACY_NOTE, advise_state, state_candidates, stateless_variant

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ROOT / "instances" / "tiny_chain.yaml"


def _chain(bits: int):
    p = load_instance(CHAIN)
    return replace(p, hardware=replace(p.hardware, global_buffer=replace(
        p.hardware.global_buffer, capacity_bits=bits)))


def test_candidates_are_layers_then_multi_layer_blocks() -> None:
    net = load_instance(CHAIN).network
    assert state_candidates(net) == [("c1", "layer", ("c1",)), ("c2", "layer", ("c2",)),
                                     ("c3", "layer", ("c3",)), ("front", "block", ("c1", "c2"))]
    # block 'back' holds only c3: the same candidate as the layer, so not repeated.
    variant = stateless_variant(net, ["c2"])
    assert [lay.stateful for lay in variant.layers] == [True, False, True]
    assert variant.state_size_bits == net.state_size_bits - 3072


def test_ranking_proven_by_hand_at_4096_bits() -> None:
    # tiny_chain, 4096-bit buffer. Compulsory traffic (a lower bound on every mapping):
    # input 512 + output 512 + weights 896 + 2|V| (streaming) = 1920 + 2 * 7680 = 17280,
    # and the known optimum is 17280 (instances/tiny_chain.yaml). |V|: c1 3072, c2 3072,
    # c3 1536. Making a set S stateless lowers the bound to 17280 - 2|V_S|; each variant's
    # optimum reaches its bound, so the saving is exactly 2|V_S|: 2 bits per state bit for
    # every candidate. Ties go to the larger saving, then layer order:
    # front (12288), c1 (6144), c2 (6144), c3 (3072).
    adv = advise_state(_chain(4096))
    assert adv.base.traffic_bits == 17280
    assert [c.name for c in adv.candidates] == ["front", "c1", "c2", "c3"]
    assert [c.traffic_saved_bits for c in adv.candidates] == [12288, 6144, 6144, 3072]
    net = load_instance(CHAIN).network
    for c in adv.candidates:
        variant = stateless_variant(net, c.layers)
        assert c.optima.traffic_bits == compulsory_traffic_bits(variant), c.name
        assert c.optima.proven
        assert c.traffic_saved_per_bit == 2.0
    # The curve removes c1, c2 (ranked layers, blocks skipped), then c3: bounds 11136, 4992,
    # 1920 (no state left: input + output + weights).
    assert [p.layers for p in adv.curve] == [("c1",), ("c1", "c2"), ("c1", "c2", "c3")]
    assert [p.optima.traffic_bits for p in adv.curve] == [11136, 4992, 1920]


def test_tight_buffer_ranks_the_big_layers_first() -> None:
    # At 2048 bits the optimum is 19328 (2048 above the bound: proven by the solver, as in
    # the sweep test). Without c1's (or c2's) state the optimum falls to its bound
    # 17280 - 6144 = 11136: a saving of 8192 bits, 8192 / 3072 = 2.667 per state bit,
    # more than 2 since the freed buffer also removes the excess. Without both (front):
    # bound 4992, saving 14336 = 2.333 per bit. c1 and c2 tie on both keys and keep
    # layer order.
    adv = advise_state(_chain(2048), curve=False)
    assert adv.base.traffic_bits == 19328 and adv.base.proven
    top = adv.candidates[:3]
    assert [c.name for c in top] == ["c1", "c2", "front"]
    assert [c.traffic_saved_bits for c in top] == [8192, 8192, 14336]
    # c3's variant is bounded below by 17280 - 3072 = 14208, so it saves at most 5120 bits.
    c3 = adv.candidates[3]
    assert c3.name == "c3" and c3.traffic_saved_bits <= 5120
    assert adv.curve == ()


def test_cli_prints_the_note_and_plots(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from stems_opt.cli import main

    png = tmp_path / "curve.png"
    assert main(["advise-state", str(CHAIN), "--top", "2", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert ACCURACY_NOTE in out and "retraining" in out
    assert "  3  " not in out.split("saving curve")[0]  # --top 2: two candidates shown
    assert png.read_bytes()[:4] == b"\x89PNG"

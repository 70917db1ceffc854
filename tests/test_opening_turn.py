"""The long dive's opening turn (``Turns.opening_turn``): under a time limit, on a
network whose long intervals are opened after the dive, the long dive has a turn as
soon as every interval is open, before the exact loop's first master; the turn
stops within its time and the pass goes on where it stopped.

Mutations that make these tests fail (each tried): no opening turn (the call in
``ColumnSolver._search`` removed) and the turn through ``Turns._pass_turn`` (whose
incumbent builds the master's path graph first) fail the order test; a turn that
does not mark the pass ended (``self.long`` left ``True``) fails the other.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import pytest

from stems_opt.formulation import columns
from stems_opt.formulation.neighbourhood import Turns

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_long_dive import opened, resnet18  # noqa: E402
from test_neighbourhood import assert_exact  # noqa: E402
from test_primal import solver_for  # noqa: E402


def test_long_dive_comes_before_the_first_master_after_the_opening(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SEW-ResNet-18 at 256 KB built from its one-layer intervals (as a network deeper
    than ``EAGER_LAYERS`` is), its dive cut to its first step, under a time limit: once
    the intervals the dive left are opened, the long dive runs before any master."""
    monkeypatch.setattr(columns, "EAGER_LAYERS", 0)
    events: list[str] = []

    def recorded(name: str, f: Any) -> Any:
        @functools.wraps(f)
        def g(*args: Any, **kwargs: Any) -> Any:
            events.append(name)
            return f(*args, **kwargs)
        return g

    cls = columns.ColumnSolver
    for name in ("long_dive", "master_path"):
        monkeypatch.setattr(cls, name, recorded(name, getattr(cls, name)))
    init = Turns.__init__

    def turns_init(self: Turns, *args: Any, long_pass: bool = False) -> None:
        init(self, *args, long_pass=long_pass)
        events.append(f"turns long={long_pass}")

    monkeypatch.setattr(Turns, "__init__", turns_init)

    def first_step(self: columns.ColumnSolver, *args: Any) -> None:
        # (the dive's first step only, one layer per segment: the long intervals are
        # left to the opening after it, whatever the machine's speed)
        for c in self.columns:
            if c.first == c.last:
                self._one_tile(c)

    monkeypatch.setattr(cls, "dive", first_step)
    cs = solver_for(resnet18("256kb"))
    mapping, value, bound = cs.solve(time_limit_s=3.0)
    assert mapping is not None and bound <= value
    assert "turns long=True" in events, events  # (opened after the dive)
    after = events[events.index("turns long=True") + 1:]
    assert after and after[0] == "long_dive", after[:5]


def test_opening_turn_stops_and_the_pass_goes_on() -> None:
    """A turn of no time leaves the long dive unfinished; the next turns end it, at the
    same incumbent as the pass run whole (SEW-ResNet-18 at 256 KB, every interval
    open)."""
    whole = opened(resnet18("256kb"))
    assert whole.long_dive(lambda: False)
    expected = whole.incumbent()
    assert expected is not None

    cs = opened(resnet18("256kb"))
    turns = Turns(cs, 0.0, 10.0, long_pass=True)
    turns.opening_turn(0.0)
    assert turns.long  # (stopped at once: not ended)
    for _ in range(20):
        turns.opening_turn(10.0)
        if not turns.long:
            break
    assert not turns.long
    assert assert_exact(cs.problem, cs) == expected[1]

"""Fixtures every test module shares."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf

# The command line keeps solved loop nests between runs (stems_opt.cost.nest_store): the
# suite keeps none, so every test (and every command it starts) solves its nests itself
# and nothing is written outside the run. tests/test_nest_store.py names its directories.
os.environ["STEMS_OPT_CACHE_DIR"] = "off"


@pytest.fixture(scope="session", autouse=True)
def _run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist, a directory every worker of this run shares
    (:func:`brute_force.run_shared`): a brute force enumerated by one worker is
    read by the other instead of enumerated again. Each run has its own."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent / "shared"
    shared.mkdir(exist_ok=True)
    bf.RUN_DIR = shared
    yield
    bf.RUN_DIR = None

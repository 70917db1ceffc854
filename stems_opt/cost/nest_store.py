"""The nest table kept on disk between runs.

A step's least nest energy depends on its shape and on the part of the
accelerator below the global buffer (:class:`~stems_opt.cost.loops.NestHardware`)
alone: not on the global buffer's size, the objective, the time limit or the
rest of the network. Solving the nest tables is most of an energy search's
first seconds (RED-LIF: about 7 of a 10 s run, 13 of a 29 s proof), and a
sweep over buffer sizes, a second objective or a rerun asks for the same
shapes again. The command line therefore keeps the table of each nest
hardware in one file and loads it before a search.

A file is named by a digest of the nest hardware, of this store's format and
of the source of :mod:`stems_opt.cost.loops` (the code that computed the
energies): a changed cost model reads none of the old files, so a kept energy
is always what this code would compute. Files are replaced atomically and
merged on save, so runs at once (sweep workers) lose at most each other's
latest shapes. A file that cannot be read is ignored (and replaced on the next
save); a directory that cannot be written costs the speed-up only. Deleting
the directory is always safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import operator
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stems_opt.cost import loops
from stems_opt.cost.loops import NestHardware, StepShape
from stems_opt.hardware import Hardware

__all__ = ["ENV_DIR", "chosen_dir", "default_dir", "hardware_of", "kept", "kept_nests", "load",
           "save", "table_path"]

LOG = logging.getLogger(__name__)

ENV_DIR = "STEMS_OPT_CACHE_DIR"
"""Environment variable naming the directory (``off``: keep nothing)."""
FORMAT = 1
"""Version of the file layout; a new one reads no file of an old one."""
FIELDS = tuple(f.name for f in dataclasses.fields(StepShape))
NO_NEST = -1
"""Energy stored for a shape no nest fits."""
MAX_SHAPES = 50_000
"""Shapes a file keeps at most, the newest (about 7 MB, loaded in well under a second:
loading runs inside the time limit)."""
STALE_TMP_S = 3600.0
"""Age after which a temporary file of a killed save is removed."""


def default_dir() -> Path | None:
    """``$STEMS_OPT_CACHE_DIR`` (``None`` when it is ``off`` or empty), else
    ``stems_opt`` in ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    if ENV_DIR in os.environ:
        return _named_dir(os.environ[ENV_DIR])
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # (no home directory to be found)
        return None
    return Path(base) / "stems_opt"


def chosen_dir(value: str | None) -> Path | None:
    """The directory a ``--nest-cache`` value names: ``None`` for the default
    (:func:`default_dir`), none for ``off``."""
    return default_dir() if value is None else _named_dir(value)


def _named_dir(value: str) -> Path | None:
    """The directory ``value`` names; none for ``off`` or nothing."""
    value = value.strip()
    return None if value.lower() in ("", "off") else Path(value).expanduser()


def hardware_of(hardware: Hardware) -> NestHardware | None:
    """The nest hardware whose table a search on ``hardware`` uses (``None``:
    without loop nests it solves none)."""
    return NestHardware.of(hardware) if hardware.loop_nests else None


def table_path(directory: Path, hw: NestHardware) -> Path | None:
    """The file of ``hw``'s table in ``directory`` (``None`` where the cost model's
    source cannot be read: no file can name the code)."""
    import hashlib

    if loops.SOURCE is None:
        return None
    digest = hashlib.sha256()
    digest.update(f"{FORMAT}\n{FIELDS}\n{hw!r}\n".encode())
    digest.update(loops.SOURCE)
    return directory / f"nests-{digest.hexdigest()[:20]}.npz"


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The shapes (one row of :data:`FIELDS` each) and energies in ``path``; none
    when it is missing or not a table of this format."""
    import zipfile  # (the stdlib modules of the store load with it, not with the package)

    none = np.zeros((0, len(FIELDS)), dtype=np.int64), np.zeros(0, dtype=np.int64)
    try:
        with np.load(path, allow_pickle=False) as doc:
            shapes, energies = doc["shapes"], doc["energy_fj"]
    except FileNotFoundError:
        return none
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        LOG.warning("nest table %s ignored: %s", path, exc)
        return none
    if shapes.ndim != 2 or shapes.shape[1] != len(FIELDS) or energies.shape != shapes.shape[:1] \
            or (energies < NO_NEST).any() or (shapes < 0).any():
        LOG.warning("nest table %s ignored: not a table of %d fields", path, len(FIELDS))
        return none
    return shapes.astype(np.int64), energies.astype(np.int64)


def load(directory: Path, hw: NestHardware) -> int:
    """Add the table kept for ``hw`` in ``directory`` to this process's; returns
    how many shapes it held."""
    path = table_path(directory, hw)
    if path is None:
        return 0
    shapes, energies = _arrays(path)
    loops.add_energies(hw, {StepShape(*row): None if fj == NO_NEST else fj
                            for row, fj in zip(shapes.tolist(), energies.tolist(), strict=True)})
    return len(energies)


def save(directory: Path, hw: NestHardware) -> int:
    """Merge this process's table of ``hw`` into its file in ``directory``
    (written atomically, not at all when it holds every shape already; the
    :data:`MAX_SHAPES` newest kept, this process's last); returns how many
    shapes the file holds, 0 when it could not be written."""
    path = table_path(directory, hw)
    if path is None:
        return 0
    ours = loops.known_energies(hw)
    row = operator.attrgetter(*FIELDS)
    old_shapes, old_fj = _arrays(path)
    shapes = np.concatenate([old_shapes, np.array([row(s) for s in ours], dtype=np.int64)
                             .reshape(-1, len(FIELDS))])
    energies = np.concatenate([old_fj, np.array([NO_NEST if fj is None else fj
                                                 for fj in ours.values()], dtype=np.int64)])
    _, last = np.unique(shapes[::-1], axis=0, return_index=True)
    if len(last) == len(old_fj):
        return len(old_fj)
    keep = np.sort(len(shapes) - 1 - last)[-MAX_SHAPES:]  # (each shape's last row)
    return _write(path, shapes[keep], energies[keep])


def _write(path: Path, shapes: np.ndarray, energies: np.ndarray) -> int:
    """Replace ``path`` by a table of ``shapes`` and ``energies`` atomically
    (:func:`~stems_opt.files.write_bytes_safely`); how many shapes it holds, 0 when
    it could not be written."""
    import io
    import time

    from stems_opt.errors import StemsInputError
    from stems_opt.files import write_bytes_safely

    buffer = io.BytesIO()
    np.savez(buffer, shapes=shapes, energy_fj=energies)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # (a run killed while saving leaves its temporary file: removed once old)
        for stale in path.parent.glob(".nests-*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                    stale.unlink()
        write_bytes_safely(path, buffer.getvalue())
    except OSError as exc:
        LOG.warning("nest table not kept in %s: %s", path.parent, exc.strerror or exc)
        return 0
    except StemsInputError as exc:
        LOG.warning("nest table not kept: %s", exc)
        return 0
    return len(energies)


def kept_nests(directory: str | Path, hardware: Hardware
               ) -> contextlib.AbstractContextManager[None]:
    """The public form of :func:`kept`: every solve inside the ``with`` block on
    ``hardware`` (or any hardware with the same levels below the global buffer)
    starts from the nest energies kept in ``directory`` and adds its own on exit.

    Examples
    --------
    >>> with stems_opt.kept_nests("~/.cache/stems_opt", problem.hardware):  # doctest: +SKIP
    ...     results = [stems_opt.solve(p, objective="energy") for p in sizes]
    """
    return kept(Path(directory).expanduser(), hardware_of(hardware))


@contextlib.contextmanager
def kept(directory: Path | None, hw: NestHardware | None) -> Iterator[None]:
    """Load ``hw``'s table from ``directory`` on entry and save it on exit (also
    after an error or Ctrl-C); nothing when either is ``None``."""
    if directory is None or hw is None:
        yield
        return
    if loops.SOURCE is None:
        LOG.warning("nest table not kept: the source of %s cannot be read", loops.__name__)
        yield
        return
    load(directory, hw)
    try:
        yield
    finally:
        save(directory, hw)

"""Ending the search's helper processes."""

from __future__ import annotations

from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess


def stop_process(proc: BaseProcess, conn: Connection) -> None:
    """Stop ``proc`` at once (SIGTERM, then SIGKILL after a second) and close ``conn``,
    its end of the pipe."""
    if proc.is_alive():
        proc.terminate()
    proc.join(1.0)
    if proc.is_alive():
        proc.kill()
        proc.join()
    conn.close()

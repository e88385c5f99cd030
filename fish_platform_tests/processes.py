"""Stopping servers that start processes of their own (``bentoml serve``, Dagster's webserver).

BentoML puts each worker in a process group of its own, so a signal to the server's group alone
leaves the workers running: these helpers find the whole tree first (psutil) and make sure none of it
is left.
"""

from __future__ import annotations

import os
import signal
import subprocess


def process_tree(process: subprocess.Popen) -> list:
    """The process and all its descendants, as ``psutil.Process`` objects (empty once it is gone)."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill(members: list) -> None:
    import psutil

    for member in members:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process and all its descendants at once (a crash), and wait until none is left."""
    import psutil

    tree = process_tree(process)
    _kill(tree)
    process.wait(timeout=10)
    psutil.wait_procs(tree, timeout=10)


def stop_tree(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM the process' group (a graceful stop: a server stops its workers), wait up to
    ``timeout`` seconds, then SIGKILL whatever of the tree is left. The process must lead its own
    session (``start_new_session=True``)."""
    import psutil

    if process is None:
        return
    tree = process_tree(process)
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    _, alive = psutil.wait_procs(tree, timeout=5)
    _kill(alive)
    if process.poll() is None:
        process.wait(timeout=10)

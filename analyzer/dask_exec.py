"""Where parallel.py's parts run: a Dask cluster (the `dask` extra), or here, one after another.

`pip install 'synfin[dask]'` brings dask and distributed. Then `mapper(workers=N)` starts a local cluster
of N worker processes (one thread each: the engine keeps a core busy) for the run and stops it after,
and `mapper(scheduler="tcp://host:8786")` uses a running `dask scheduler` and its `dask worker`s, which
must have synfin installed and read the set's files at the same paths. Without the extra, `mapper()`
runs the same functions in turn here (parallel.run_in_sequence): the same result, on one core.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from analyzer.parallel import Executor, Pending, run_in_sequence


class DaskMissing(RuntimeError):
    """--scheduler without the dask extra."""


def dask_available() -> bool:
    """Whether the `dask` extra (dask.distributed) is installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def mapper(workers: int | None = None, scheduler: str | None = None) -> Iterator[Executor]:
    """An Executor for parallel.run_set: on the scheduler at `scheduler`, on a local cluster of `workers`
    processes, or (without the dask extra, and no scheduler) in sequence here."""
    if scheduler is None and not dask_available():
        yield run_in_sequence
        return
    if not dask_available():
        raise DaskMissing("--scheduler needs the dask extra: pip install 'synfin[dask]'")
    from distributed import Client, LocalCluster

    if scheduler is not None:
        _answers(scheduler)
        with Client(scheduler, timeout="10s") as client:
            yield OnCluster(client)
        return
    with (LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                       silence_logs=40) as cluster,
          Client(cluster) as client):
        yield OnCluster(client)


def _answers(address: str) -> None:
    """Raise OSError at once if nothing listens at a tcp:// scheduler address (the client would retry for its
    whole timeout before saying so); other addresses are left to the client."""
    if not address.startswith("tcp://"):
        return
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        number = int(port)
    except ValueError:
        return
    try:
        socket.create_connection((host.strip("[]"), number), timeout=10).close()
    except OSError as problem:
        raise OSError(f"no dask scheduler answers at {address}: {problem.strerror or problem}") from problem


class OnCluster:
    """parallel.Executor on a Dask client: each call a task (not pure: a file may change between runs); the
    merge takes two parts per worker ahead of it, so that every worker has the next file to run while the
    client merges, and no more (a part waits in a worker's memory until it is merged)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        workers = len(client.scheduler_info().get("workers", {})) or 1
        self.window = 2 * workers

    def submit(self, function: Callable[..., Any], *args: Any) -> Pending:
        return self.client.submit(function, *args, pure=False)  # type: ignore[no-any-return]


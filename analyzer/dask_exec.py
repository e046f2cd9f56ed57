"""Where parallel.py's parts run: a Dask cluster (the `dask` extra), or here, one after another.

`pip install 'synfin[dask]'` brings dask and distributed. Then `mapper(workers=N)` starts a local cluster
of N worker processes (one thread each: the engine keeps a core busy) for the run and stops it after,
and `mapper(scheduler="tcp://host:8786")` uses a running `dask scheduler` and its `dask worker`s, which
must have synfin installed and read the set's files at the same paths. Without the extra, `mapper()`
runs the same functions in turn here (parallel.run_in_sequence): the same result, on one core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from analyzer.parallel import Mapper, run_in_sequence


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
def mapper(workers: int | None = None, scheduler: str | None = None) -> Iterator[Mapper]:
    """A Mapper for parallel.run_set: on the scheduler at `scheduler`, on a local cluster of `workers`
    processes, or (without the dask extra, and no scheduler) in sequence here."""
    if scheduler is None and not dask_available():
        yield run_in_sequence
        return
    if not dask_available():
        raise DaskMissing("--scheduler needs the dask extra: pip install 'synfin[dask]'")
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="10s") as client:
            yield _client_map(client)
        return
    with (LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                       silence_logs=40) as cluster,
          Client(cluster) as client):
        yield _client_map(client)


def _client_map(client: Any) -> Mapper:
    def map_on_cluster(function: Callable[..., Any], items: Sequence[Any], shared: Any = None) -> list[Any]:
        if not items:
            return []
        if shared is None:
            return list(client.gather(client.map(function, list(items), pure=False)))
        sent = client.scatter(shared, broadcast=True)  # once to each worker, not in every task
        return list(client.gather(client.map(function, list(items), shared=sent, pure=False)))

    return map_on_cluster

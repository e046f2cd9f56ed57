"""A capture's (or a rotated set's) connections as a Dask DataFrame, for sets too big for one pandas frame.

`to_dataframe(analyze(path))` holds every connection in one pandas frame: about 1 KiB a row in memory, so a
week of a busy server's captures (tens of millions of connections) does not fit. `to_dask_dataframe(path)`
runs the same analysis (the compiled engine's CSV, read by pandas' C reader with frames.py's dtypes: no
Python object per connection), but takes the rows `rows_per_partition` at a time and writes each chunk as
a parquet file before reading the next, then returns `dask.dataframe.read_parquet` of those files. Memory
stays bounded by the open connections and one chunk, whatever the size of the set.

The partitions. Partition k holds the k-th `rows_per_partition` connections in the order the analysis
reports them (the order of `synfin analyze -f csv`: as connections finish), sorted by `id` within the
partition. Ids number connections by their first frame, and a long connection finishes after shorter ones
that started later, so the partitions' id ranges usually overlap: then the divisions are unknown (a
`.loc[id]` looks in every partition; `ddf.compute().sort_index()` or `ddf.set_index(...)` orders them).
When the ranges happen not to overlap (each partition's ids all below the next one's), the divisions are
known, read from the files' statistics.

The columns and dtypes are to_dataframe's, index `id` (nullable Int64): the id is stored as a column and
made the index again on reading, because pyarrow gives a nullable Int64 *index* back as int64. The other
dtypes survive parquet as they are (categories with all their values and their order, `string`, `Int64`,
`boolean`, `Float64`, UTC datetimes), except the categories of an empty partition (a run without
connections), which come back empty and are set again (`_with_dtypes`): tests/test_dask_frame.py compares
the computed frame with to_dataframe's, dtypes included.
"""

from __future__ import annotations

import atexit
import importlib
import io
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyzer.connection import Connection
from analyzer.frames import _csv_text, frame_dtypes, read_csv, read_csv_chunks
from analyzer.pipeline import Stats
from analyzer.records import Record, RecordStream, analyze
from analyzer.rotated import CaptureSet
from analyzer.where import Where

if TYPE_CHECKING:
    import dask.dataframe
    import pandas

#: ~57 MiB of pandas frame (~590 bytes a row on the benchmark capture), and ~110 MiB more peak RSS while a chunk
#: is sorted, converted and written; 250,000 took ~320 MiB more for the same speed (README, "A Dask DataFrame")
ROWS_PER_PARTITION = 100_000
NEEDED = ("pandas", "pyarrow", "dask.dataframe")


class ExtraMissing(ImportError):
    """to_dask_dataframe without the dask extra's dask, pandas or pyarrow."""


def to_dask_dataframe(path: str | Path | CaptureSet | list[str | Path], *, msl: float = 30.0,
                      idle_timeout: float = 900.0, handshake_timeout: float = 40.0, bpf: str | None = None,
                      where: str | Iterable[str] | Where | None = None, engine: str = "auto",
                      workers: int | None = None, scheduler: str | None = None, stats: Stats | None = None,
                      capture: str | None = None, directory: str | Path | None = None,
                      rows_per_partition: int = ROWS_PER_PARTITION) -> dask.dataframe.DataFrame:
    """The connections of `path` as a Dask DataFrame: to_dataframe's columns and dtypes, index `id`.

    `path` and the analysis options are analyze()'s (a capture, or a rotated set: a directory, a list of
    files or a CaptureSet; `workers`/`scheduler` analyze a set's files in parallel on Dask; `stats` is
    filled when the analysis is done; `capture` fills the capture column as to_dataframe's does). The rows
    are written `rows_per_partition` at a time as parquet files part-000000.parquet, ... into `directory`
    (created if missing; it must be empty), or into a temporary directory removed at interpreter exit;
    only one chunk is in memory at a time. Partition k is the k-th chunk in the order the connections are
    reported, sorted by id within; divisions are known only if the chunks' id ranges do not overlap
    (analyzer/dask_frame.py says why they usually do). The frame is read lazily from those files: computing
    it on a distributed cluster needs `directory` on a filesystem its workers share.

    Raises ExtraMissing (an ImportError) without dask, pandas or pyarrow; FilterError/WhereError for a bad
    `bpf`/`where` and CaptureError for a bad capture, as analyze() does, leaving no partition behind.
    """
    dd = require()
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be at least 1, not {rows_per_partition}")
    conns = analyze(path, msl=msl, idle_timeout=idle_timeout, handshake_timeout=handshake_timeout, stats=stats,
                    bpf=bpf, where=where, engine=engine, workers=workers, scheduler=scheduler)
    target, temporary = _target(directory)
    writer = PartitionWriter(target)
    try:
        if isinstance(conns, RecordStream):
            conns.consume(lambda source: writer.write_all(read_csv_chunks(source, rows_per_partition)), "csv",
                          capture)
        else:  # the reference pipeline's Connections (engine="reference", a set holding a gzip file)
            writer.write_all(_chunks_of(conns, rows_per_partition, capture))
    except BaseException:
        writer.remove()
        if temporary:
            shutil.rmtree(target, ignore_errors=True)
        raise
    frame = dd.read_parquet([str(p) for p in writer.paths], index="id", calculate_divisions=writer.ordered())
    return _with_dtypes(frame)


def _with_dtypes(frame: dask.dataframe.DataFrame) -> dask.dataframe.DataFrame:
    """The frame with to_dataframe's dtypes where parquet lost one: an empty partition's categories come back
    empty (a run without connections writes one); every other dtype survives (the tests check)."""
    wanted = frame_dtypes()
    lost = {name: wanted[name] for name, dtype in frame.dtypes.items() if dtype != wanted[name]}
    return frame.astype(lost) if lost else frame


def require() -> Any:
    """dask.dataframe, or ExtraMissing naming what is missing and the extra that brings it."""
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ExtraMissing(f"to_dask_dataframe needs {name.split('.')[0]} (the dask extra): "
                               "pip install 'synfin[dask]'") from err
    return importlib.import_module("dask.dataframe")


class PartitionWriter:
    """Writes chunks of connections (frames indexed by id) as numbered parquet files, remembering each
    file's id range so that read_parquet is asked for divisions only when they are known."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: list[Path] = []
        self.ranges: list[tuple[int, int] | None] = []  # None: an empty chunk

    def write_all(self, chunks: Iterable[pandas.DataFrame]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write(self, chunk: pandas.DataFrame) -> None:
        if len(chunk) == 0 and self.paths:  # only a run without connections needs its (empty) partition
            return
        ordered = chunk.sort_index()
        path = self.directory / f"part-{len(self.paths):06d}.parquet"
        self.paths.append(path)
        ordered.reset_index().to_parquet(path, engine="pyarrow", index=False)
        self.ranges.append((int(ordered.index[0]), int(ordered.index[-1])) if len(ordered) else None)

    def ordered(self) -> bool:
        """Whether every partition's ids are all below the next one's (so the divisions are known)."""
        if not self.ranges or None in self.ranges:
            return False
        bounds = [r for r in self.ranges if r is not None]
        return all(low[1] < high[0] for low, high in pairwise(bounds))

    def remove(self) -> None:
        """Remove the files written so far (an analysis that failed leaves no partial frame)."""
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.paths.clear()
        self.ranges.clear()


def _chunks_of(conns: Iterable[Record] | Iterable[Connection], rows: int,
               capture: str | None) -> Iterator[pandas.DataFrame]:
    """Connections (or records already read) as frames of `rows` rows, through the same CSV reader."""
    items = iter(conns)
    first = True
    while (batch := list(islice(items, rows))) or first:
        first = False
        yield read_csv(io.StringIO(_csv_text(batch, capture)))


def _target(directory: str | Path | None) -> tuple[Path, bool]:
    """Where the partitions go, and whether it is a temporary directory (removed at interpreter exit)."""
    if directory is None:
        made = Path(tempfile.mkdtemp(prefix="synfin-dask-"))
        atexit.register(shutil.rmtree, made, ignore_errors=True)
        return made, True
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise FileExistsError(f"{target}: not empty (to_dask_dataframe writes its partitions into a new or "
                              "empty directory)")
    return target, False

"""The Python API on the compiled engine: `analyze()` streams `Record`s, one per connection.

`analyzer.analyze(path)` used to run the reference pipeline, a Python object
per packet (about 25,000 packets a second). It now runs the compiled engine
(engine.py) on a thread of its own and yields a `Record` per connection as
the connections finish, in the order of the CLI's JSON lines; the reference
stays behind `engine="reference"` and `keep_segments=True` (a `Connection`
with its segments, for ladders and lessons).

How the records cross over. The engine writes its output format "records"
(output.c, FORMAT_RECORDS): for each connection the head of its CSV row (the
cells up to `final_server`: id, ends, frames, times, labels, final states)
and its JSON line, made by the same writers as `--format csv` and `--format
json`, each on a line. It writes them from its formatting thread into a
pipe; this module reads the pipe on the caller's thread in 1 MiB pieces and
turns each piece into Records with the loops in C (`records()`): no Python
code runs per record. Parsing waits until a field is asked for: the head
fields come from the head cells, split with the piece (`str.split` is ~40
times cheaper than `json.loads` of the whole record, which costs 17 us: 4 s
for the 250,000 records of the benchmark capture); everything else
(`states`, `options`, `anomalies`, the timing figures) and
`analyzer.record(rec)` from the JSON line, parsed once, when first asked
for. Memory stays bounded by open connections: the pipe, the engine's
bounded queues and one piece of text at a time; a consumer that stops
reading stops the engine.

A record's fields are the JSON record's keys, as attributes: a key added to
the JSON record (report.record and output.c's write_json) is an attribute
here with no change (`Record.__getattr__`); only a key that also gets a CSV
column and should be read without parsing the JSON needs a property below.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import methodcaller
from pathlib import Path
from typing import IO, Any, NamedTuple

from analyzer import engine, parallel
from analyzer.bpf import check as check_filter
from analyzer.capture import OpenCapture, Progress, check_head, is_stdin, open_capture
from analyzer.connection import Connection, Timeouts
from analyzer.dask_exec import mapper
from analyzer.engine import chainable
from analyzer.fsm import State
from analyzer.pipeline import Stats
from analyzer.pipeline import analyze as analyze_reference
from analyzer.report import CSV_FIELDS, flat_from_record
from analyzer.rotated import CaptureSet, from_directory, from_files, set_size
from analyzer.where import Where
from analyzer.where import parse as parse_where

ENGINES = ("auto", "compiled", "reference")
CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # the pipe's buffer (F_SETPIPE_SZ): fewer wake-ups between the engine and the reader
_CELL = {name: index for index, name in enumerate(CSV_FIELDS)}
_STATES = {str(state): state for state in State}


class Step(NamedTuple):
    """One transition of an endpoint, as endpoint.Transition: its new state, when, at which frame."""

    state: State
    ts: float
    frame: int | None  # None: the 2*MSL timer


class EndpointView(tuple):  # type: ignore[type-arg]
    """One end of a `Record`, shaped like connection.Endpoint: `str()` is "ip:port" ("[ip6]:port").

    A (record, side) pair: a tuple subclass, so making one runs no Python code (see Record)."""

    __slots__ = ()

    def __new__(cls, record: Record, side: str) -> EndpointView:
        return tuple.__new__(cls, (record, side))

    def __str__(self) -> str:
        return self[0].cell(self[1])  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<{self[1]} {self} {self.state}>"

    @property
    def state(self) -> State:
        """The final state."""
        return _STATES[self[0][0][_FINAL[self[1]]]]

    @property
    def history(self) -> list[Step]:
        return [Step(_STATES[state], ts, frame) for state, ts, frame in self[0].states[self[1]]]

    @property
    def port(self) -> int:
        return int(str(self).rpartition(":")[2])

    @property
    def addr(self) -> bytes:
        """The address, packed (4 or 16 bytes) as Endpoint.addr."""
        return ipaddress.ip_address(str(self).rpartition(":")[0].strip("[]")).packed

    @property
    def packets(self) -> int:
        return self[0].packets[self[1]]  # type: ignore[no-any-return]

    @property
    def payload_bytes(self) -> int:
        return self[0].payload_bytes[self[1]]  # type: ignore[no-any-return]

    @property
    def options(self) -> dict[str, Any]:
        return self[0].options[self[1]]  # type: ignore[no-any-return]


_ID, _OPEN, _CLOSE, _HALF, _CLOSER, _RESET_BY, _RESET_STATE = (
    _CELL[name] for name in ("id", "open", "close", "half_close", "active_closer", "reset_by", "reset_state"))
_FINAL = {"client": _CELL["final_client"], "server": _CELL["final_server"]}
_HEAD = max(_FINAL.values()) + 1  # the head cells the engine sends (FORMAT_RECORDS); the rest from the JSON
_CLIENT, _SERVER = ("client", "server")


class Record(tuple):  # type: ignore[type-arg]
    """One connection as the engine reported it: the JSON record's keys as attributes.

    `rec.id`, `rec.open`, `rec.start`, `rec.states`, `rec.state_time`...; `rec.labels` as
    Connection.labels; `rec.client` / `rec.server` are `EndpointView`s (`.state`, `.history`,
    `str()` = "ip:port"). `analyzer.record(rec)` is the JSON record as a dict.

    Inside, a tuple (head cells, JSON line, [parsed JSON or None]), made by `records()` a piece of
    output at a time with no Python code per record: the head cells (report.CSV_FIELDS up to
    final_server, as text, "" for null: no cell there holds a comma) split in C, the JSON parsed only
    when a key outside them is first asked for. Iterating it yields those three, not the keys.
    """

    __slots__ = ()

    def cell(self, name: str) -> str:
        """The CSV cell `name`."""
        index = _CELL[name]
        if index < _HEAD:
            return self[0][index]  # type: ignore[no-any-return]
        return next(csv.reader([self.csv_row().decode()]))[index]

    def record(self) -> dict[str, Any]:
        """The JSON record, a new dict each time (json.loads of the CLI's line)."""
        return json.loads(self[1])  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:  # the JSON record's other keys, parsed once when first asked for
        if name.startswith("_"):
            raise AttributeError(name)
        cache = self[2]
        if cache[0] is None:
            cache[0] = self.record()
        try:
            return cache[0][name]
        except KeyError:
            raise AttributeError(f"a record has no {name!r}") from None

    def __repr__(self) -> str:
        return f"<Record {self.id} {self.client} > {self.server} {self.open}/{self.close}>"

    @property
    def id(self) -> int:
        return int(self[0][_ID])

    @property
    def client(self) -> EndpointView:
        return EndpointView(self, _CLIENT)

    @property
    def server(self) -> EndpointView:
        return EndpointView(self, _SERVER)

    @property
    def open(self) -> str:
        return self[0][_OPEN]  # type: ignore[no-any-return]

    @property
    def close(self) -> str:
        return self[0][_CLOSE]  # type: ignore[no-any-return]

    @property
    def labels(self) -> dict[str, Any]:
        """As Connection.labels: open, close, half_close, active_closer, reset_by, reset_state."""
        cells = self[0]
        return {"open": cells[_OPEN], "close": cells[_CLOSE], "half_close": cells[_HALF] == "True",
                "active_closer": cells[_CLOSER] or None, "reset_by": cells[_RESET_BY] or None,
                "reset_state": cells[_RESET_STATE] or None}

    @property
    def final(self) -> dict[str, str]:
        cells = self[0]
        return {"client": cells[_FINAL["client"]], "server": cells[_FINAL["server"]]}

    @property
    def start(self) -> float:
        return float(self.cell("start"))

    @property
    def end(self) -> float:
        return float(self.cell("end"))

    def csv_row(self) -> bytes:
        """The CLI's CSV row (no line end), with the capture cell empty: made from the JSON record, as the
        reference pipeline makes its rows (report.flat_from_record)."""
        out = io.StringIO()
        csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="").writerow(flat_from_record(self.record()))
        return out.getvalue().encode()


def record(conn: Record | Connection, capture: str | None = None) -> dict[str, Any]:
    """The JSON object the CLI writes for one connection, from a Record or a Connection."""
    if isinstance(conn, Connection):
        from analyzer.report import record as of_connection

        return of_connection(conn, capture)
    out = conn.record()
    if capture is not None:
        out["capture"] = capture
    return out


class EngineRun:
    """The engine on a thread of its own, writing `fmt` into a pipe that the caller reads.

    `start()` opens the capture on the caller's thread (so a bad file raises CaptureError there) and
    returns the pipe's read end; `finish()` waits for the engine and raises what it raised, or fills
    `stats`; `abandon()` closes the pipe (the engine's next write fails, and it stops) and waits.
    """

    def __init__(self, path: str | Path, timeouts: Timeouts, stats: Stats | None,
                 progress: Progress | None, bpf: str | None, where: Where | None = None,
                 spread: tuple[int | None, str | None] | None = None) -> None:
        self.path, self.timeouts, self.stats, self.progress, self.bpf = path, timeouts, stats, progress, bpf
        self.where = where
        self.spread = spread  # (workers, scheduler): a set's files run in parallel (parallel.py)
        self.thread: threading.Thread | None = None
        self.read_fd = -1
        self.outcome: dict[str, Any] = {}

    def start(self, fmt: str, capture: str | None = None) -> int:
        opened = engine.open_set(self.path) if isinstance(self.path, CaptureSet) else [open_capture(self.path)]
        try:
            if not isinstance(self.path, CaptureSet):
                check_head(opened[0])
            read_fd, write_fd = os.pipe()
        except BaseException:
            for one in opened:
                one.close()
            raise
        _widen(write_fd)
        self.read_fd = read_fd
        self.thread = threading.Thread(target=self._run, args=(opened, write_fd, fmt, capture),
                                       name="synfin-engine", daemon=True)
        self.thread.start()
        return read_fd

    def _run(self, opened: list[OpenCapture], write_fd: int, fmt: str, capture: str | None) -> None:
        try:
            if isinstance(self.path, CaptureSet) and self.spread is not None and self._run_parallel(write_fd, fmt,
                                                                                                     capture):
                return
            if isinstance(self.path, CaptureSet):
                self.outcome["counts"] = engine.run_set_opened(self.path, opened, _no_write, write_fd, fmt,
                                                               self.timeouts, capture, self.progress, self.bpf,
                                                               where=self.where)
            else:
                self.outcome["counts"] = engine.run_opened(opened[0], _no_write, write_fd, fmt, self.timeouts,
                                                           capture, self.progress, self.bpf, where=self.where)
        except BaseException as err:  # handed to the caller's thread by finish()
            self.outcome["error"] = err
        finally:
            os.close(write_fd)
            for one in opened:
                one.close()

    def _run_parallel(self, write_fd: int, fmt: str, capture: str | None) -> bool:
        """The set's files in parallel, merged (parallel.py); False if it is better read in sequence."""
        assert isinstance(self.path, CaptureSet) and self.spread is not None
        with mapper(*self.spread) as on_workers:
            merged = parallel.analyze_set(self.path, fmt, self.timeouts, capture, False, self.bpf, self.where,
                                          on_workers)
            if merged is None:
                return False
            for piece in merged.pieces():  # made on the workers as they are written
                view = memoryview(piece)
                while view:
                    view = view[os.write(write_fd, view):]
        self.outcome["counts"] = merged.counts
        return True

    def _stop(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def abandon(self) -> None:
        self._stop()

    def finish(self) -> None:
        self._stop()
        if "error" in self.outcome:
            raise self.outcome["error"]
        if self.stats is not None:
            engine.stats_from(self.outcome["counts"], self.stats)
            if isinstance(self.path, CaptureSet):
                self.stats.boundaries = self.path.boundaries(self.outcome["counts"]["last_ts"])
        if self.progress is not None and isinstance(self.path, CaptureSet):
            self.progress(set_size(self.path))
        elif self.progress is not None and isinstance(self.path, (str, Path)) and str(self.path) != "-":
            self.progress(Path(self.path).stat().st_size)  # the whole file read, as the reference reports


def _no_write(chunk: bytes) -> None:  # the engine writes to the pipe's file descriptor, never through this
    raise AssertionError("unreachable: the engine writes to a file descriptor")


def _widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:  # a smaller pipe works too (over /proc/sys/fs/pipe-max-size, or not Linux)
        pass


def records(fd: int) -> Iterator[Record]:
    """The records the engine writes to `fd` (format "records": a CSV line, then a JSON line), a piece at a time.

    Each piece becomes Records with the loops in C (map, zip, methodcaller): no Python code runs per record,
    which is what keeps iterating the API near the speed of the engine itself."""
    rest = b""
    split_head = methodcaller("split", ",")
    while chunk := os.read(fd, CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()  # the last line's start (b"" when the piece ended with a line)
        if len(lines) % 2:  # a CSV line whose JSON line has not come yet
            rest = lines.pop() + b"\n" + rest
        heads = map(split_head, b"\n".join(lines[0::2]).decode().split("\n"))
        yield from map(Record, zip(heads, lines[1::2], map(list, repeat((None,))), strict=False))
    if rest:
        raise ValueError(f"the engine's output ends in a partial record: {rest[:80]!r}")


class RecordStream(Iterator[Record]):
    """What analyze() returns on the compiled engine: an iterator of Records, read as the engine writes them.

    Nothing runs until the first next(); closing it (or leaving a for loop over it and dropping it) stops the
    engine and joins its thread. `to_dataframe()` of a stream not yet started reads the engine's CSV instead.
    """

    def __init__(self, run: EngineRun) -> None:
        self.run = run
        self.started = False
        self._records: Iterator[Record] | None = None

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> Record:
        if self._records is None:
            self.started = True
            self._records = self._generate()
        return next(self._records)

    def _generate(self) -> Iterator[Record]:
        fd = self.run.start("records")
        try:
            yield from records(fd)
        except BaseException:
            self.run.abandon()
            raise
        self.run.finish()

    def close(self) -> None:
        """Stop the engine (if it runs) and let go of its thread, pipe and file."""
        self.started = True
        if self._records is not None:
            self._records.close()  # type: ignore[attr-defined]
        self._records = _nothing()

    def __del__(self) -> None:
        records = self.__dict__.get("_records")
        if records is not None:
            records.close()

    def __enter__(self) -> RecordStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def consume(self, read: Callable[[IO[bytes]], Any], fmt: str, capture: str | None = None) -> Any:
        """Run the engine with `fmt` instead, and hand its output (a binary stream) to `read`: the stream is spent."""
        if self.started:
            raise RuntimeError("the records were already read")
        self.started = True
        self._records = _nothing()
        fd = self.run.start(fmt, capture)
        try:
            result = read(os.fdopen(os.dup(fd), "rb", closefd=True))
        except BaseException:
            self.run.abandon()
            raise
        self.run.finish()
        return result


def _nothing() -> Iterator[Record]:
    yield from ()


def choose(engine_name: str, keep_segments: bool, bpf: str | None) -> str:
    """Which engine analyze() runs: "compiled" or "reference"."""
    if engine_name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine_name!r}")
    if engine_name == "reference":
        return "reference"
    reasons = [why for why, applies in (
        ("the compiled engine is not built (no C compiler at install time)", not engine.available()),
        ("keep_segments=True needs the reference pipeline's Connection objects", keep_segments),
        ("the compiled engine was built without libpcap: no filters",
         bpf is not None and not engine.filters_available())) if applies]
    if engine_name == "compiled" and reasons:
        raise ValueError(f"engine='compiled': {reasons[0]}")
    return "reference" if reasons else "compiled"


def analyze(path: str | Path | CaptureSet | list[str | Path], *, msl: float = 30.0, idle_timeout: float = 900.0,
            handshake_timeout: float = 40.0, keep_segments: bool = False,
            stats: Stats | None = None, progress: Progress | None = None,
            bpf: str | None = None, where: str | Iterable[str] | Where | None = None,
            engine: str = "auto", workers: int | None = None,
            scheduler: str | None = None) -> Iterator[Record] | Iterator[Connection]:
    """Analyze one capture; yield its connections as they finish, in the order of `synfin analyze -f json`.

    On the compiled engine (engine="auto" when it is built, or "compiled") each is a `Record`; on the
    reference pipeline (engine="reference", or keep_segments=True) a `Connection`. `analyzer.record(x)` is
    the JSON record of either. `stats`, a Stats, is filled as the pipeline goes (reference) or when the
    last record has been read (compiled). `bpf`, a BPF expression as tcpdump takes it, analyzes only the
    frames it matches; frame numbers stay the file's. Raises `FilterError` at once (before reading) if the
    expression is bad, `CaptureError` at the first next() if the file is not a readable capture (and later,
    after the records before it, for damage that stops reading). `where`, --where terms ("close=reset", or a
    list of them: all must hold; analyzer/where.py), yields only the connections they match (`stats` still
    counts them all); a bad term raises `WhereError` at once.

    A directory, a list of files or a rotated.CaptureSet is a rotated set, read as one capture (rotated.py;
    a set holding a gzip file on the reference pipeline, which the engine cannot chain). With `workers` (a
    local Dask cluster of that many processes) or `scheduler` (a running `dask scheduler`'s address), the
    set's files are analyzed in parallel and merged (parallel.py, dask_exec.py): the same records.
    """
    if bpf is not None:
        check_filter(bpf)
    matcher = parse_where(where)
    path = as_set(path)
    reference = isinstance(path, CaptureSet) and engine != "compiled" and not chainable(path)
    if reference or choose(engine, keep_segments, bpf) == "reference":
        return analyze_reference(path, msl=msl, idle_timeout=idle_timeout, handshake_timeout=handshake_timeout,
                                 keep_segments=keep_segments, stats=stats, progress=progress, bpf=bpf,
                                 where=where)
    timeouts = Timeouts(msl=msl, idle=idle_timeout, handshake=handshake_timeout)
    spread = (workers, scheduler) if workers or scheduler else None
    return RecordStream(EngineRun(path, timeouts, stats, progress, bpf, matcher, spread))


def as_set(path: str | Path | CaptureSet | list[str | Path]) -> str | Path | CaptureSet:
    """A directory or a list of files as the rotated set it is (CaptureError if it holds no capture)."""
    if isinstance(path, (list, tuple)):
        return from_files([Path(p) for p in path])
    if not isinstance(path, CaptureSet) and not is_stdin(path) and Path(path).is_dir():
        return from_directory(Path(path))
    return path

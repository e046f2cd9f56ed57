"""A rotated set analyzed file by file in parallel, merged into exactly what one run over the set writes.

`engine.run_set` reads a set's files one after another on one core. Here every file is run on its own by
the compiled engine (on a Dask cluster, or one after another without one: dask_exec.py), and a merge puts
the parts together so that the output is byte for byte the one run's: the same records, ids, frame
numbers, order and summary.

Why a file's own run is right for most connections. The engine's connections are independent of one
another but for time: each 4-tuple (the tracker's key: addresses, ports, VLAN ids, VNI) has its own
machines, and timers run on packet time, the highest packet time seen so far (tracker.c, expire). A file
run on its own, its frames numbered where the set numbers them (a first `scan` of every file counts them),
sees every frame of its own in order, so a key that holds no connection when the file begins is tracked
there exactly as in the one run, as long as the packet time at the file's first packet is what the one run
has there: the file's first packet is not older than any packet before it (`in_order`; a set whose files
overlap in time is read by `engine.run_set` instead).

The connections open at a file's end. A file's own run does not finish them: it hands them over, packed as
they stand (handover.c; a half-open connection as the compact record the tracker keeps of it, so that a SYN
flood across a boundary costs what it costs in one run). The merge goes through the files in order with a
tracker of its own (parts.c's Merger), which holds only connections carried across a boundary. For each
file: the keys it holds when the file begins are the merge's in that file (the file's own run began them
afresh, wrongly: its records of them are dropped); their frames in the file are read (`scan`, on a worker,
while the file before is merged) and tracked, with ticks at the frames where the file's own run retired
connections, so that the timers run where the one run's run; then the connections the file's own run ended
with open are adopted, as they stand. A connection quiet in the next files costs the merge its timer alone.

The order. The one run writes a connection when the tracker retires it: at a frame, first those whose
timers ran out (in order of wake time, then id), then one whose 4-tuple a SYN reuses; at the end, the
rest in order of id. The engine notes each connection's frame, how and wake time (Conn.retired_*, written
by OutputStyle.meta before its text), and ids are in order of first frame (the Merger's ids are first
frames): so each file's records (its kept ones and those the merge retired in it) are sorted by (frame, how,
wake time, first frame) and written with their ids put in: the number of connections the one run began
before them, counted file by file. The summary's counts add up: frames, link types, skips and damage from
each file, connections and labels from the kept records and the merge's.

Memory: the client holds one file's records at a time and the connections open across a boundary (those
still open at the set's end are written FLUSH_PIECE at a time), and a cluster's workers hold at most
`Executor.window` parts that the client has yet to merge.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import IO, Any, Protocol

import numpy as np

from analyzer import engine
from analyzer.capture import CaptureError, check_head, open_capture
from analyzer.connection import Timeouts
from analyzer.engine import STATES
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS
from analyzer.pipeline import NAMED_PROBLEMS
from analyzer.report import endpoint_row
from analyzer.rotated import CaptureSet
from analyzer.where import Where

try:
    from analyzer import _engine
except ImportError:
    _engine = None

KEY_BYTES = 48  # engine.h's Key
FLUSH_PIECE = 5_000  # connections the merge's end flushes and writes at a time
#: where each format writes a record's id, for _engine.renumber: the table's first column, JSON's first
#: member, CSV's first cell after the capture's, the records format's CSV head and JSON line
ID_PLACES = {"table": 0, "json": 1, "csv": 2, "records": 3}


class Pending(Protocol):
    def result(self) -> Any: ...


class Executor(Protocol):
    """Where the files' work runs: `submit(function, *args)` starts it (or promises to), `.result()` waits.
    `window`: how many parts may be run ahead of the merge (each held until merged)."""

    window: int

    def submit(self, function: Callable[..., Any], *args: Any) -> Pending: ...


class _Deferred:
    """A call made when its result is asked for (once)."""

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.call: tuple[Callable[..., Any], tuple[Any, ...]] | None = (function, args)
        self.value: Any = None

    def result(self) -> Any:
        if self.call is not None:
            function, args = self.call
            self.call = None
            self.value = function(*args)
        return self.value


class InSequence:
    """The plain executor: each call here, when its result is asked for (so one part is held at a time)."""

    window = 1

    def submit(self, function: Callable[..., Any], *args: Any) -> Pending:
        return _Deferred(function, args)


run_in_sequence = InSequence()


@dataclass
class Settings:
    """What every part is run with (sent to the workers)."""

    fmt: str
    timeouts: Timeouts
    capture: str | None
    colour: bool
    bpf: str | None
    where: bytes | None  # Where.for_engine()


class Records:
    """The connections of one engine run written with OutputStyle.meta: each one's facts (sink.c, write_meta)
    in arrays (split by the engine: _engine.split_meta) and its text; record i is index i of each."""

    INTS = 15  # id, first frame, retired frame, how, then the census's: open, close, closer, final client and
    # server states, half_close, anomalies, matched, SYN/SYN-ACK/FIN retransmissions
    FLOATS = 3  # when, before, ts

    def __init__(self, data: bytes) -> None:
        self.keys, ints, floats, self.texts, self.servers = _engine.split_meta(data)
        self.ints = np.frombuffer(ints, dtype=np.int64).reshape(-1, self.INTS)
        self.floats = np.frombuffer(floats, dtype=np.float64).reshape(-1, self.FLOATS)

    def __len__(self) -> int:
        return len(self.texts)

    def first_frames(self) -> np.ndarray:
        return self.ints[:, 1]

    def census(self, i: int) -> np.ndarray:
        return self.ints[i, 4:]

    def ticks(self) -> tuple[bytes, bytes, bytes]:
        """The frames that retired these records, once each in order: numbers, times, packet times before."""
        numbers, first = np.unique(self.ints[:, 2], return_index=True)
        return (numbers.astype(np.int64).tobytes(), self.floats[first, 2].tobytes(), self.floats[first, 1].tobytes())


def scan(path: str, base: int, now: float, keys: bytes, bpf: str | None) -> dict[str, Any]:
    """One file read (not tracked): the numbers it takes, its first and last packet times, the frames of
    `keys` (48 bytes each, in any order) with the packet time before each (the files before reached `now`)."""
    engine._ready(bpf)
    opened = open_capture(path)
    try:
        found = _engine.scan(opened.own_fd(), base, now, keys, bpf)
    finally:
        opened.close()
    return found


def run_part(path: str, base: int, settings: Settings) -> tuple[dict[str, Any], bytes]:
    """One file run on its own, its frames numbered after `base`: its counts (with "handover": the
    connections open at its end, packed) and its records' text (OutputStyle.meta)."""
    engine._ready(settings.bpf)
    opened = open_capture(path)
    text = io.BytesIO()
    try:
        check_head(opened)
        counts = _engine.run(None, opened.own_fd(), None, text.write, -1, engine.FORMATS[settings.fmt],
                             settings.timeouts.limits(), engine._quoted(settings.capture, settings.fmt),
                             settings.colour, settings.bpf, settings.where, base, True)
    finally:
        opened.close()
    return counts, text.getvalue()


def run_set(capture_set: CaptureSet, out: IO[str], fmt: str, timeouts: Timeouts, capture: str | None = None,
            colour: bool = False, bpf: str | None = None, where: Where | None = None,
            executor: Executor = run_in_sequence) -> dict[str, Any]:
    """engine.run_set's output and counts, the files run in parallel through `executor` and merged (or read
    by engine.run_set when they cannot be: see analyze_set)."""
    merged = analyze_set(capture_set, fmt, timeouts, capture, colour, bpf, where, executor)
    if merged is None:
        return engine.run_set(capture_set, out, fmt, timeouts, capture, colour, None, bpf, where)
    _write(out, merged.pieces())
    return merged.counts


def analyze_set(capture_set: CaptureSet, fmt: str, timeouts: Timeouts, capture: str | None = None,
                colour: bool = False, bpf: str | None = None, where: Where | None = None,
                executor: Executor = run_in_sequence) -> Merged | None:
    """The set's merge, ready to write (Merged.pieces(), then Merged.counts), as engine.run_set writes and
    returns them; None when the set is better read by engine.run_set: one file, files that overlap in time
    (`in_order`), or a file the engine stops in with an error (run_set reports it, after the records before it)."""
    engine._ready(bpf, check=True)
    for opened in engine.open_set(capture_set):  # heads checked as run_set checks them (CaptureError)
        opened.close()
    paths = [str(p) for p in capture_set.files]
    if len(paths) == 1:
        return None
    scans = [p.result() for p in [executor.submit(scan, path, 0, -math.inf, b"", bpf) for path in paths]]
    if any(found["error"] for found in scans) or not in_order(scans):
        return None
    bases = [sum(found["number"] for found in scans[:k]) for k in range(len(paths))]
    settings = Settings(fmt, timeouts, capture, colour, bpf, None if where is None else where.for_engine())
    return Merged(paths, bases, scans, settings, executor)


def reached_before(scans: list[dict[str, Any]]) -> list[float]:
    """The packet time the one run has reached when each file begins (the highest of the files' before it)."""
    return list(accumulate((found["now"] for found in scans[:-1]), max, initial=-math.inf))


def in_order(scans: list[dict[str, Any]]) -> bool:
    """Whether each file's first packet is no older than every packet before it (the packet time a file's own
    run starts with is then the one run's)."""
    return all(found["first_ts"] is None or found["first_ts"] >= reached
               for found, reached in zip(scans, reached_before(scans), strict=True))


def _write(out: IO[str], pieces: Iterable[bytes]) -> None:
    """The merged text onto `out`, after what it holds already (a table's header)."""
    out.flush()
    binary = getattr(out, "buffer", None)
    for piece in pieces:
        if binary is None:
            out.write(piece.decode("utf-8"))
        else:
            binary.write(piece)
    if binary is not None:
        binary.flush()


class Merged:
    """A set's merge, made as it is written: `pieces()` yields the output text file by file; `counts` holds
    the one run's counts once it is done; `remade` the records the merge's tracker wrote."""

    def __init__(self, paths: list[str], bases: list[int], scans: list[dict[str, Any]], settings: Settings,
                 executor: Executor) -> None:
        self.paths, self.bases, self.scans, self.settings, self.executor = paths, bases, scans, settings, executor
        self.counts: dict[str, Any] = {}
        self.remade = 0
        self.adopted = 0  # connections the files' runs handed over and the merge carried on
        self.totals = Totals()
        self._out: list[bytes] = []
        self._merger = _engine.merger(self._out.append, engine.FORMATS[settings.fmt], settings.timeouts.limits(),
                                      engine._quoted(settings.capture, settings.fmt), settings.colour,
                                      *(() if settings.where is None else (settings.where,)))
        self._ids: dict[int, int] = {}  # first frame -> id, of the merge's connections
        #: where the client's time went (benchmarks/bench_rotated.py): waiting for the files' runs ("parts"),
        #: for the scans of the merge's keys ("scan"), the merge's tracker ("track"), numbering and ordering
        #: the records and putting their ids in ("write")
        self.seconds: Counter[str] = Counter()
        self._began = 0  # connections the one run began before the current file
        #: the packet time the one run has reached when each file begins
        self._reached = reached_before(scans)

    def pieces(self) -> Iterator[bytes]:
        """The output text, a piece per file (never the whole set's at once)."""
        parts = self._parts()
        frames: Pending | None = None  # the scan of the current file's frames of the merge's keys
        for index in range(len(self.paths)):
            started = time.perf_counter()
            counts, text = next(parts)
            self.seconds["parts"] += time.perf_counter() - started
            self.totals.add(counts)
            handover = counts.pop("handover")
            dirty = _engine.merger_enter(self._merger)
            here = self._frames(index, frames) if dirty else b""
            # the keys the merge may hold when the next file begins: those it holds now, or is handed now
            frames = self._scan(index + 1, dirty + _engine.handover_keys(handover))
            yield self._file(index, dirty, here, handover, Records(text))
        end = max(found["now"] for found in self.scans)
        census = None
        while census is None:  # the connections still open at the end, a piece at a time
            started = time.perf_counter()
            census = _engine.merger_finish(self._merger, end, FLUSH_PIECE)
            remade = self._take()
            self.remade += len(remade)
            ids = np.array([self._ids.pop(first) for first in remade.first_frames().tolist()], dtype=np.int64)
            last = self._texts(remade.texts, ids, remade.ints[:, 4 + MATCHED])
            self.seconds["track"] += time.perf_counter() - started
            yield last
        self.totals.add(census)
        self.counts = self.totals.counts()

    def _parts(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """The files' own runs in order, at most `window` of them ahead of the merge."""
        ahead: deque[tuple[str, Pending]] = deque()
        waiting = iter(zip(self.paths, self.bases, strict=True))

        def submit_next() -> None:
            for path, base in waiting:
                ahead.append((path, self.executor.submit(run_part, path, base, self.settings)))
                return

        for _ in range(max(1, self.executor.window)):
            submit_next()
        while ahead:
            path, pending = ahead.popleft()
            submit_next()
            counts, text = pending.result()
            if counts["error"]:  # scan read it whole: the file changed since
                raise CaptureError(f"{path}: {counts['error']}")
            yield counts, text

    def _take(self) -> Records:
        records = Records(b"".join(self._out))
        self._out.clear()
        return records

    def _file(self, index: int, dirty: bytes, frames: bytes, handover: bytes, own: Records) -> bytes:
        """File `index`: the frames of the merge's keys in it (`dirty`: those it held when the file began)
        tracked, the connections its own run handed over adopted, and its records (its own run's kept ones
        and those the merge retired in it) numbered and written in order."""
        base = self.bases[index]
        started = time.perf_counter()
        _engine.merger_feed(self._merger, frames, *own.ticks())
        remade = self._take()
        self.remade += len(remade)
        self.adopted += _engine.merger_adopt(self._merger, handover)
        tracked = time.perf_counter()
        self.seconds["track"] += tracked - started
        # the file's own records of the merge's keys: dropped (48-byte strings: none ends in a NUL that matters,
        # as every key is 48 bytes long)
        merges = np.isin(np.frombuffer(own.keys, dtype=f"S{KEY_BYTES}"), np.frombuffer(dirty, dtype=f"S{KEY_BYTES}"))
        for i in np.flatnonzero(merges).tolist():
            self.totals.drop(own, i)
        kept = np.flatnonzero(~merges).tolist()
        kept_ids, remade_ids = self._number(base, own.first_frames()[kept], remade)
        text = self._in_order(own, kept, remade, np.concatenate([kept_ids, remade_ids]))
        self.seconds["write"] += time.perf_counter() - tracked
        return text

    def _scan(self, index: int, keys: bytes) -> Pending | None:
        """File `index`'s frames of `keys`, each with the packet time before it (scan, on a worker), started
        while the merge goes on with the file before; None: no such file, or no keys."""
        if index >= len(self.paths) or not keys:
            return None
        return self.executor.submit(scan, self.paths[index], self.bases[index], self._reached[index], keys,
                                    self.settings.bpf)

    def _frames(self, index: int, pending: Pending | None) -> bytes:
        """The frames the scan of file `index` found (b"": none was needed)."""
        if pending is None:
            return b""
        started = time.perf_counter()
        found = pending.result()
        self.seconds["scan"] += time.perf_counter() - started
        if found["error"]:
            raise CaptureError(f"{self.paths[index]}: {found['error']}")
        return found["frames"]  # type: ignore[no-any-return]

    def _number(self, base: int, kept_firsts: np.ndarray, remade: Records) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the file's kept records and of the merge's records retired in it. The connections the
        one run began in this file (after frame `base`): its own run's kept records, and the merge's that
        began here (retired, or still held: their ids kept until they are written)."""
        remade_firsts = remade.first_frames()
        fresh = remade_firsts > base
        held = np.frombuffer(_engine.merger_held(self._merger, base + 1), dtype=np.int64)
        began = np.sort(np.concatenate([kept_firsts, remade_firsts[fresh], held]))
        kept_ids = self._began + np.searchsorted(began, kept_firsts)
        remade_ids = np.empty(len(remade), dtype=np.int64)
        remade_ids[fresh] = self._began + np.searchsorted(began, remade_firsts[fresh])
        remade_ids[~fresh] = [self._ids.pop(first) for first in remade_firsts[~fresh].tolist()]
        self._ids.update(zip(held.tolist(), (self._began + np.searchsorted(began, held)).tolist(), strict=True))
        self._began += len(began)
        return kept_ids, remade_ids

    def _in_order(self, own: Records, kept: list[int], remade: Records, ids: np.ndarray) -> bytes:
        """The file's kept records and the merge's (`ids`: theirs, in that order), in the one run's order:
        (retiring frame, how, wake time, first frame); those --where does not match left out."""
        ints = np.concatenate([own.ints[kept], remade.ints])
        floats = np.concatenate([own.floats[kept], remade.floats])
        order = np.lexsort((ints[:, 1], floats[:, 0], ints[:, 3], ints[:, 2]))
        texts = [own.texts[i] for i in kept] + remade.texts
        return self._texts([texts[at] for at in order.tolist()], ids[order], ints[order, 4 + MATCHED])

    def _texts(self, texts: list[bytes], ids: np.ndarray, matched: np.ndarray) -> bytes:
        """The texts one after another, each with its id put in (the engine's renumber), unmatched ones left out."""
        ids = np.where(matched != 0, ids, -1).astype(np.int64)
        skip = len(engine._quoted(self.settings.capture, "csv") or b"") if self.settings.fmt == "csv" else 0
        return _engine.renumber(texts, ids.tobytes(), ID_PLACES[self.settings.fmt], skip)  # type: ignore[no-any-return]


CENSUS_KEYS = ("open", "close", "closer", "final_client", "final_server")


MATCHED = 7  # in Records.census: matched by --where (all without one)


NAMES = (OPEN_LABELS, CLOSE_LABELS, ("client", "server", "both", "None"), [str(s) for s in STATES],
         [str(s) for s in STATES])  # the census columns' values, by index (Records.census)
SUMMED = ("frames", "segments", "connections", "damaged", "half_close", "anomalies", "unmatched", "tunnelled",
          "matched")
COUNTED = (*CENSUS_KEYS, "skipped", "malformed", "linktypes", "tunnels")


class Totals:
    """The one run's counts, added up as the files come (none of them held): each file's own run's counts, less
    those of its records the merge dropped (their keys were the merge's there), and at the end the merge's."""

    def __init__(self) -> None:
        self.sums: Counter[str] = Counter()
        self.counted: dict[str, Counter[str]] = {key: Counter() for key in COUNTED}
        self.retransmits = [0, 0, 0]
        self.endpoints: dict[str, list[int]] = {}
        self.problems: dict[str, list[Any]] = {"problems": [], "damage": []}
        self.last_ts: list[Any] = []
        self.last_frame = 0
        self.files = 0
        self.filter_failed: Any = None

    def add(self, counts: dict[str, Any]) -> None:
        """A file's own run's counts (or, at the end, the merge's census)."""
        for key in SUMMED:
            self.sums[key] += counts.get(key, 0)
        for key in COUNTED:
            self.counted[key].update(counts.get(key, {}))
        for k in range(3):
            self.retransmits[k] += counts["retransmits"][k]
        for name, row in counts["endpoints"].items():
            into = self.endpoints.setdefault(name, [0] * len(row))
            for k, n in enumerate(row):
                into[k] += n
        if "last_ts" not in counts:  # the merge's census
            return
        for key in ("problems", "damage"):
            self.problems[key] = (self.problems[key] + counts[key])[:NAMED_PROBLEMS]
        self.filter_failed = self.filter_failed or counts["filter_failed"]
        self.last_frame = max(self.last_frame, counts["last_frame"])
        self.last_ts.append(counts["last_ts"])
        self.files += 1

    def drop(self, records: Records, i: int) -> None:
        """A record a file's own run wrote and the merge dropped: its census taken off (if --where matched it)."""
        self.sums["connections"] -= 1
        census = records.census(i)
        if not census[MATCHED]:
            return
        self.sums["matched"] -= 1
        labels = [NAMES[column][int(census[column])] for column in range(5)]
        for column, key in enumerate(CENSUS_KEYS):
            self.counted[key][labels[column]] -= 1
        self.sums["half_close"] -= int(census[5])
        self.sums["anomalies"] -= int(census[6])
        for k in range(3):
            self.retransmits[k] -= int(census[8 + k])
        row = self.endpoints[records.servers[i]]
        for k, n in enumerate(endpoint_row(labels[0], labels[1], labels[3], labels[4])):
            row[k] -= n

    def counts(self) -> dict[str, Any]:
        """As engine.run_set returns them."""
        total: dict[str, Any] = {key: self.sums[key] for key in SUMMED}
        for key in COUNTED:
            total[key] = {k: v for k, v in self.counted[key].items() if v} if key in CENSUS_KEYS \
                else Counter(self.counted[key])
        total["retransmits"] = tuple(self.retransmits)
        total["endpoints"] = {name: tuple(row) for name, row in self.endpoints.items() if row[0]}
        total.update(self.problems)
        total["filter_failed"] = self.filter_failed
        total["last_frame"] = self.last_frame
        total["last_ts"] = self.last_ts
        total["error"] = None
        total["file"] = self.files - 1
        total["formatted_by_tracker"] = 0
        return total

"""A rotated set analyzed file by file in parallel, merged into exactly what one run over the set writes.

`engine.run_set` reads a set's files one after another on one core. Here every file is run on its own by
the compiled engine (on a Dask cluster, or one after another without one: dask_exec.py), and a merge puts
the parts together so that the output is byte for byte the one run's: the same records, ids, frame
numbers, order and summary.

Why a file's own run is right for most connections. The engine's connections are independent of one
another but for time: each 4-tuple (the tracker's key: addresses, ports, VLAN ids, VNI) has its own
machines, and timers run on packet time, the highest packet time seen so far (tracker.c, expire). A file
run on its own, its frames numbered where the set numbers them (`count` gives each file's count first),
sees every frame of its own in order, so a key that holds no connection when the file begins is tracked
there exactly as in the one run, as long as the packet time at the file's first packet is what the one run
has there: the file's first packet is not older than any packet before it (`_in_order`; a set whose files
overlap in time is read by `engine.run_set` instead). A key holds no connection at a file's start if it
held none at the end of any earlier file's own run (by induction over the files).

The keys that do (a connection still open, in TIME_WAIT, or a half-open SYN at the end of some file but
the last: the keys of the records that file's run flushed) may carry state on: their records are dropped
from the parts (from the connection open at that end on) and made again by `_engine.replay` from all their
frames in the later files, collected per file in parallel (`_engine.collect_keys`), with the packet time
before each frame, so that their timers run as in the one run. Ticks at the frames where the parts
retired their connections put the remade records in their places among those.

The order. The one run writes a connection when the tracker retires it: at a frame, first those whose
timers ran out (in order of wake time, then id), then one whose 4-tuple a SYN reuses; at the end, the
rest in order of id. The engine notes each connection's frame, how and wake time (Conn.retired_*, written
by OutputStyle.meta before its text), and ids are in order of first frame: so the merge sorts the records
by (frame, how, wake time, first frame), gives them ids in order of first frame, and writes each one's text
with its id put in. The summary's counts add up: frames, link types, skips and damage from each file,
connections and labels from the kept records and the remade ones.
"""

from __future__ import annotations

import heapq
import io
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

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

FLUSH = 4  # Conn.retired_how: RETIRED_FLUSH (engine.h)
KEY_BYTES = 48  # engine.h's Key
TABLE_ID_WIDTH = 5  # report._COLUMNS: the id column

#: map(function, items, shared) -> [function(item, shared=shared) ...] in order (without `shared` if it is None):
#: run_in_sequence, or on a Dask cluster (dask_exec.py: `shared` sent to each worker once)
Mapper = Callable[..., list[Any]]


def run_in_sequence(function: Callable[..., Any], items: Sequence[Any], shared: Any = None) -> list[Any]:
    """The plain executor: each item in turn, here."""
    if shared is None:
        return [function(item) for item in items]
    return [function(item, shared=shared) for item in items]


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
        keys, ints, floats, self.texts, self.servers = _engine.split_meta(data)
        self.keys = [keys[i:i + KEY_BYTES] for i in range(0, len(keys), KEY_BYTES)]
        self.ints, self.floats = array("q", ints), array("d", floats)

    def __len__(self) -> int:
        return len(self.texts)

    def first_frames(self) -> array[int]:
        return self.ints[1::self.INTS]

    def hows(self) -> array[int]:
        return self.ints[3::self.INTS]

    def order(self, i: int) -> tuple[int, int, float, int]:
        """Where record i goes: its retiring frame, how (before the frame's timers, by them, by a reusing SYN,
        at the end, flushed), its wake time, its first frame (the order of ids)."""
        at = i * self.INTS
        return (self.ints[at + 2], self.ints[at + 3], self.floats[i * self.FLOATS], self.ints[at + 1])

    def tick(self, i: int) -> tuple[int, float, float]:
        """The frame that retired record i: its number, time, and the packet time before it."""
        return (self.ints[i * self.INTS + 2], self.floats[i * self.FLOATS + 2], self.floats[i * self.FLOATS + 1])

    def census(self, i: int) -> array[int]:
        return self.ints[i * self.INTS + 4:(i + 1) * self.INTS]


@dataclass
class Part:
    """One file's own run."""

    counts: dict[str, Any]
    records: Records


def count_part(path: str) -> int:
    """How many frame numbers the file takes (its frames and damaged spots)."""
    opened = open_capture(path)
    try:
        found = _engine.count(opened.own_fd())
    finally:
        opened.close()
    if found["error"]:
        raise CaptureError(f"{path}: {found['error']}")
    return int(found["number"])


def run_part(task: tuple[str, int, Settings]) -> Part:
    """One file run on its own, its frames numbered after `base`: its counts and records."""
    path, base, settings = task
    engine._ready(settings.bpf)
    opened = open_capture(path)
    text = io.BytesIO()
    try:
        check_head(opened)
        limits = (settings.timeouts.msl, settings.timeouts.idle, settings.timeouts.handshake,
                  settings.timeouts.close_linger)
        counts = _engine.run(None, opened.own_fd(), None, text.write, -1, engine.FORMATS[settings.fmt], limits,
                             engine._quoted(settings.capture, settings.fmt), settings.colour, settings.bpf,
                             settings.where, base, True)
    finally:
        opened.close()
    return Part(counts, Records(text.getvalue()))


@dataclass
class Carried:
    """The keys carried across files (sorted), the file each is carried from and the first frame of the
    connection carried there: what every file's collect_part needs (sent to each worker once)."""

    keys: bytes
    sinces: array[int]
    firsts: array[int]


def collect_part(task: tuple[str, int, float, int, str | None], shared: Carried) -> bytes:
    """The frames of the carried keys in one file (from the carried connection's first frame on, in the file
    it is carried from), packed (parts.c)."""
    path, base, now, index, bpf = task
    engine._ready(bpf)
    opened = open_capture(path)
    try:
        found = _engine.collect_keys(opened.own_fd(), base, now, shared.keys, shared.sinces, shared.firsts, index,
                                     bpf)
    finally:
        opened.close()
    if found["error"]:
        raise CaptureError(f"{path}: {found['error']}")
    return bytes(found["frames"])


def run_set(capture_set: CaptureSet, out: IO[str], fmt: str, timeouts: Timeouts, capture: str | None = None,
            colour: bool = False, bpf: str | None = None, where: Where | None = None,
            mapper: Mapper = run_in_sequence) -> dict[str, Any]:
    """engine.run_set's output and counts, the files run in parallel through `mapper` and merged (or read
    by engine.run_set when they cannot be: see analyze_set)."""
    merged = analyze_set(capture_set, fmt, timeouts, capture, colour, bpf, where, mapper)
    if merged is None:
        return engine.run_set(capture_set, out, fmt, timeouts, capture, colour, None, bpf, where)
    _write(out, merged.pieces())
    return merged.counts


def analyze_set(capture_set: CaptureSet, fmt: str, timeouts: Timeouts, capture: str | None = None,
                colour: bool = False, bpf: str | None = None, where: Where | None = None,
                mapper: Mapper = run_in_sequence) -> Merged | None:
    """The set's output text and counts, as engine.run_set writes and returns them; None when the set is
    better read by engine.run_set: one file, files that overlap in time (`_in_order`), or a file the engine
    stops in with an error (run_set reports it, after the records before it)."""
    engine._ready(bpf, check=True)
    for opened in engine.open_set(capture_set):  # heads checked as run_set checks them (CaptureError)
        opened.close()
    paths = [str(p) for p in capture_set.files]
    if len(paths) == 1:
        return None
    numbers = mapper(count_part, paths)
    bases = [sum(numbers[:k]) for k in range(len(paths))]
    settings = Settings(fmt, timeouts, capture, colour, bpf, None if where is None else where.for_engine())
    parts = mapper(run_part, [(p, b, settings) for p, b in zip(paths, bases, strict=True)])
    if not _in_order(parts) or any(part.counts["error"] for part in parts):
        return None
    return merge(parts, paths, bases, settings, mapper)


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


def _in_order(parts: list[Part]) -> bool:
    """Whether each file's first packet is no older than every packet before it (the packet time a file's own
    run starts with is then the one run's)."""
    reached = -math.inf
    for part in parts:
        first = part.counts["first_ts"]
        if first is not None and first < reached:
            return False
        reached = max(reached, part.counts["now"])
    return True


@dataclass
class Merged:
    """The merged records (each with its text and its place in the one run) and the counts."""

    records: list[tuple[Records, int]]  # in the one run's order
    ids: dict[int, int]  # first frame -> id
    settings: Settings
    counts: dict[str, Any]
    remade: int = 0  # records made again by the replay

    def pieces(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The output text in pieces of about `size` bytes, made as they are written (the whole is never held)."""
        piece: list[bytes] = []
        held = 0
        for records, i in self.records:
            if not records.census(i)[MATCHED]:  # not matched by --where: not written
                continue
            text = with_id(records.texts[i], self.ids[records.ints[i * Records.INTS + 1]], self.settings)
            piece.append(text)
            held += len(text)
            if held >= size:
                yield b"".join(piece)
                piece, held = [], 0
        if piece:
            yield b"".join(piece)


def open_at_end(parts: list[Part]) -> list[dict[bytes, int]]:
    """For each file but the last, the keys its own run ended with a connection open on (flushed), each
    with that connection's first frame: the keys that may carry state into the next files."""
    opens: list[dict[bytes, int]] = []
    for part in parts[:-1]:
        records = part.records
        first_frames = records.first_frames()
        opens.append({records.keys[i]: first_frames[i] for i, how in enumerate(records.hows()) if how == FLUSH})
    return [*opens, {}]


def carried_keys(parts: list[Part]) -> dict[bytes, tuple[int, int]]:
    """Each key open at the end of a file but the last: the first such file and the first frame of the
    connection open there."""
    carried: dict[bytes, tuple[int, int]] = {}
    for index, opens in enumerate(open_at_end(parts)):
        for key, first in opens.items():
            carried.setdefault(key, (index, first))
    return carried


def merge(parts: list[Part], paths: list[str], bases: list[int], settings: Settings, mapper: Mapper) -> Merged:
    """The parts' records with those of the carried keys remade, in the one run's order, ids and counts."""
    opens = open_at_end(parts)
    remade, census = replay_carried(parts, paths, bases, settings, mapper, opens)
    kept: list[tuple[Records, int]] = []  # in the order of the parts' own output: the one run's order
    dropped: list[tuple[Records, int]] = []
    for part, open_here, dirty in zip(parts, opens, census["dirty"], strict=True):
        records = part.records
        held = {dirty[k:k + KEY_BYTES] for k in range(0, len(dirty), KEY_BYTES)}
        for i, (key, first) in enumerate(zip(records.keys, records.first_frames(), strict=True)):
            remade_here = key in held or first >= open_here.get(key, math.inf)
            (dropped if remade_here else kept).append((records, i))
    every = list(heapq.merge(kept, [(remade, i) for i in range(len(remade))], key=lambda one: one[0].order(one[1])))
    ids = {frame: n for n, frame in enumerate(sorted(r.ints[i * Records.INTS + 1] for r, i in every))}
    counts = merge_counts([p.counts for p in parts], dropped, census)
    return Merged(every, ids, settings, counts, len(remade))


def replay_carried(parts: list[Part], paths: list[str], bases: list[int], settings: Settings, mapper: Mapper,
                   opens: list[dict[bytes, int]]) -> tuple[Records, dict[str, Any]]:
    """The records of the keys that carry state across files, made again. The frames that may be needed are
    collected per file in parallel (every frame of a key carried from an earlier file, and from the open
    connection's first frame in the file it is carried from); the replay tracks those whose key held a
    connection when their file began (census["dirty"], per file), or from that first frame, with ticks at the
    frames that retired the parts' records."""
    carried: dict[bytes, tuple[int, int]] = {}
    for index, open_here in enumerate(opens):
        for key, first in open_here.items():
            carried.setdefault(key, (index, first))
    reached = [-math.inf]
    for part in parts[:-1]:
        reached.append(max(reached[-1], part.counts["now"]))
    ordered = sorted(carried.items())
    shared = Carried(b"".join(key for key, _ in ordered), array("q", [since for _, (since, _) in ordered]),
                     array("q", [first for _, (_, first) in ordered]))
    earliest = min(since for since, _ in carried.values()) if carried else len(paths)
    tasks = [(path, bases[index], reached[index], index, settings.bpf)
             for index, path in enumerate(paths) if index >= earliest]
    packed = [b""] * (len(paths) - len(tasks)) + (mapper(collect_part, tasks, shared) if tasks else [])
    ticks = sorted({part.records.tick(i) for part in parts for i, how in enumerate(part.records.hows())
                    if how != FLUSH})
    numbers, times, befores = array("q", [t[0] for t in ticks]), array("d", [t[1] for t in ticks]), \
        array("d", [t[2] for t in ticks])
    end = max(reached[-1], parts[-1].counts["now"])
    text = io.BytesIO()
    limits = (settings.timeouts.msl, settings.timeouts.idle, settings.timeouts.handshake,
              settings.timeouts.close_linger)
    sorted_opens = [(b"".join(sorted(o)), array("q", [o[k] for k in sorted(o)])) for o in opens]
    census = _engine.replay(packed, array("q", bases), sorted_opens, numbers, times, befores, text.write,
                            engine.FORMATS[settings.fmt], limits, engine._quoted(settings.capture, settings.fmt),
                            settings.colour, end, *(() if settings.where is None else (settings.where,)))
    return Records(text.getvalue()), census


def with_id(text: bytes, new_id: int, settings: Settings) -> bytes:
    """A record's text with its id put in (the id each format writes first, after CSV's capture cell)."""
    if settings.fmt == "table":
        row = text.lstrip(b" ")
        cut = row.index(b" ") if b" " in row else len(row.rstrip(b"\n"))
        return str(new_id).rjust(TABLE_ID_WIDTH).encode() + row[cut:]
    if settings.fmt == "json":
        return _json_id(text, new_id)
    if settings.fmt == "csv":
        return _csv_id(text, new_id, len(engine._quoted(settings.capture, "csv") or b""))
    head, json_line = text.split(b"\n", 1)  # records: the CSV row's head, then the JSON line
    return _csv_id(head + b"\n", new_id, 0) + _json_id(json_line, new_id)


def _json_id(text: bytes, new_id: int) -> bytes:
    start = len(b'{"id": ')
    return text[:start] + str(new_id).encode() + text[text.index(b",", start):]


def _csv_id(text: bytes, new_id: int, capture_len: int) -> bytes:
    start = capture_len + 1
    return text[:start] + str(new_id).encode() + text[text.index(b",", start):]


CENSUS_KEYS = ("open", "close", "closer", "final_client", "final_server")


MATCHED = 7  # in Records.census: matched by --where (all without one)


def _retransmits(counts: list[dict[str, Any]], dropped: Iterable[array[int]]) -> tuple[int, int, int]:
    """The SYN, SYN-ACK and FIN retransmissions of the kept and remade records."""
    total = [sum(c["retransmits"][k] for c in counts) for k in range(3)]
    for census in dropped:
        for k in range(3):
            total[k] -= census[8 + k]
    return total[0], total[1], total[2]


def _endpoints(counts: list[dict[str, Any]], dropped: Iterable[array[int]], servers: Iterable[str],
               names: tuple[Any, ...]) -> dict[str, tuple[int, ...]]:
    """The summary's rows per server endpoint (report.endpoint_row) of the kept and remade records."""
    rows: dict[str, list[int]] = {}
    for one in counts:
        for name, row in one["endpoints"].items():
            into = rows.setdefault(name, [0] * len(row))
            for k, n in enumerate(row):
                into[k] += n
    for census, server in zip(dropped, servers, strict=True):
        labels = [names[column][census[column]] for column in range(5)]
        for k, n in enumerate(endpoint_row(labels[0], labels[1], labels[3], labels[4])):
            rows[server][k] -= n
    return {name: tuple(row) for name, row in rows.items() if row[0]}


def merge_counts(counts: list[dict[str, Any]], dropped: Iterable[tuple[Records, int]],
                 remade: dict[str, Any]) -> dict[str, Any]:
    """The one run's counts: the files' frame counts added, the connections' those of the kept records
    (each part's less the dropped ones') and the remade ones'."""
    names = (OPEN_LABELS, CLOSE_LABELS, ("client", "server", "both", "None"), [str(s) for s in STATES],
             [str(s) for s in STATES])
    total: dict[str, Any] = {key: Counter() for key in (*CENSUS_KEYS, "skipped", "malformed", "linktypes", "tunnels")}
    for key in ("frames", "segments", "connections", "damaged", "half_close", "anomalies", "unmatched", "tunnelled",
                "matched"):
        total[key] = sum(c[key] for c in counts) + remade.get(key, 0)
    for one in [*counts, remade]:
        for key in (*CENSUS_KEYS, "skipped", "malformed", "linktypes", "tunnels"):
            total[key].update(one.get(key, {}))
    total["connections"] -= len(dropped)
    # the dropped records the parts counted: those --where matched (all without one)
    counted: list[array[int]] = []
    servers: list[str] = []
    for records, i in dropped:
        census = records.census(i)
        if census[MATCHED]:
            counted.append(census)
            servers.append(records.servers[i])
    total["matched"] -= len(counted)
    for column, (key, labels) in enumerate(zip(CENSUS_KEYS, names, strict=True)):
        for index, count in Counter(census[column] for census in counted).items():
            total[key][labels[index]] -= count
    total["half_close"] -= sum(census[5] for census in counted)
    total["anomalies"] -= sum(census[6] for census in counted)
    total["retransmits"] = _retransmits([*counts, remade], counted)
    total["endpoints"] = _endpoints([*counts, remade], counted, servers, names)
    for key in CENSUS_KEYS:
        total[key] = {k: v for k, v in total[key].items() if v}
    for key in ("problems", "damage"):
        total[key] = [item for c in counts for item in c[key]][:NAMED_PROBLEMS]
    total["filter_failed"] = next((c["filter_failed"] for c in counts if c["filter_failed"]), None)
    total["last_frame"] = max(c["last_frame"] for c in counts)
    total["last_ts"] = [c["last_ts"] for c in counts]
    total["error"] = None
    total["file"] = len(counts) - 1
    total["formatted_by_tracker"] = 0
    return total

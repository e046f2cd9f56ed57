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

import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from analyzer import engine
from analyzer.capture import CaptureError, check_head, open_capture
from analyzer.connection import Timeouts
from analyzer.engine import STATES
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS
from analyzer.pipeline import NAMED_PROBLEMS
from analyzer.rotated import CaptureSet
from analyzer.where import Where

try:
    from analyzer import _engine
except ImportError:
    _engine = None

FLUSH = 4  # Conn.retired_how: RETIRED_FLUSH (engine.h)
META = b"\x1e"
TABLE_ID_WIDTH = 5  # report._COLUMNS: the id column

#: map(function, items) -> results, in order: the builtin map, or a Dask client's (dask_exec.py)
Mapper = Callable[[Callable[..., Any], Sequence[Any]], list[Any]]


def run_in_sequence(function: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
    """The plain executor: each item in turn, here."""
    return [function(item) for item in items]


@dataclass
class Settings:
    """What every part is run with (sent to the workers)."""

    fmt: str
    timeouts: Timeouts
    capture: str | None
    colour: bool
    bpf: str | None
    where: bytes | None  # Where.for_engine()


@dataclass
class Record:
    """One connection of a part: its facts (sink.c, write_meta) and its text."""

    key: bytes
    first_frame: int
    retired_frame: int
    how: int
    when: float
    before: float
    ts: float
    census: tuple[int, ...]  # open, close, closer, final client, final server, half_close, anomalies, matched
    text: bytes

    def order(self) -> tuple[int, int, float, int]:
        return (self.retired_frame, self.how, self.when, self.first_frame)


@dataclass
class Part:
    """One file's own run."""

    counts: dict[str, Any]
    records: list[Record] = field(default_factory=list)


def parse(data: bytes) -> list[Record]:
    """The records of an engine run written with OutputStyle.meta."""
    records = []
    for chunk in data.split(META)[1:]:
        line_end = chunk.index(b"\n")
        cells = chunk[:line_end].split(b" ")
        records.append(Record(bytes.fromhex(cells[0].decode()), int(cells[2]), int(cells[3]), int(cells[4]),
                              float.fromhex(cells[5].decode()), float.fromhex(cells[6].decode()),
                              float.fromhex(cells[7].decode()), tuple(int(c) for c in cells[8:16]),
                              chunk[line_end + 1:]))
    return records


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
    return Part(counts, parse(text.getvalue()))


def collect_part(task: tuple[str, int, float, list[tuple[bytes, int]], str | None]) -> list[tuple[Any, ...]]:
    """The frames of the wanted keys (each from its first frame number on) in one file."""
    path, base, now, wanted, bpf = task
    engine._ready(bpf)
    opened = open_capture(path)
    try:
        wanted = sorted(wanted)
        found = _engine.collect_keys(opened.own_fd(), base, now, b"".join(k for k, _ in wanted),
                                     [f for _, f in wanted], bpf)
    finally:
        opened.close()
    if found["error"]:
        raise CaptureError(f"{path}: {found['error']}")
    return list(found["frames"])


def run_set(capture_set: CaptureSet, out: IO[str], fmt: str, timeouts: Timeouts, capture: str | None = None,
            colour: bool = False, bpf: str | None = None, where: Where | None = None,
            mapper: Mapper = run_in_sequence) -> dict[str, Any]:
    """engine.run_set's output and counts, the files run in parallel through `mapper` and merged (or read
    by engine.run_set when they cannot be: see analyze_set)."""
    merged = analyze_set(capture_set, fmt, timeouts, capture, colour, bpf, where, mapper)
    if merged is None:
        return engine.run_set(capture_set, out, fmt, timeouts, capture, colour, None, bpf, where)
    _write(out, merged.text)
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


def _write(out: IO[str], data: bytes) -> None:
    """The merged text onto `out`, after what it holds already (a table's header)."""
    out.flush()
    binary = getattr(out, "buffer", None)
    if binary is None:
        out.write(data.decode("utf-8"))
        return
    binary.write(data)
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
    text: bytes
    counts: dict[str, Any]


def carried_keys(parts: list[Part]) -> dict[bytes, tuple[int, int]]:
    """Each key open at the end of a file but the last: the first such file and the first frame of the
    connection open there (its records from then on are remade)."""
    carried: dict[bytes, tuple[int, int]] = {}
    for index, part in enumerate(parts[:-1]):
        for record in part.records:
            if record.how == FLUSH and record.key not in carried:
                carried[record.key] = (index, record.first_frame)
    return carried


def merge(parts: list[Part], paths: list[str], bases: list[int], settings: Settings, mapper: Mapper) -> Merged:
    """The parts' records with those of the carried keys remade, in the one run's order, ids and counts."""
    carried = carried_keys(parts)
    kept: list[Record] = []
    dropped: list[Record] = []
    for index, part in enumerate(parts):
        for record in part.records:
            since = carried.get(record.key)
            remade = since is not None and (index > since[0] or record.first_frame >= since[1])
            (dropped if remade else kept).append(record)
    remade_records, census = replay_carried(parts, paths, bases, settings, mapper, carried, kept)
    records = sorted(kept + remade_records, key=Record.order)
    ids = {frame: n for n, frame in enumerate(sorted(r.first_frame for r in records))}
    text = b"".join(with_id(r.text, ids[r.first_frame], settings) for r in records if r.census[7])
    counts = merge_counts([p.counts for p in parts], dropped, census)
    return Merged(text, counts)


def replay_carried(parts: list[Part], paths: list[str], bases: list[int], settings: Settings, mapper: Mapper,
                   carried: dict[bytes, tuple[int, int]], kept: list[Record]) -> tuple[list[Record], dict[str, Any]]:
    """The carried keys' records made again from their frames in every file from where they were carried."""
    reached = [-math.inf]
    for part in parts[:-1]:
        reached.append(max(reached[-1], part.counts["now"]))
    tasks = []
    for index, path in enumerate(paths):
        wanted = [(key, first if index == since else 0) for key, (since, first) in carried.items() if since <= index]
        tasks.append((path, bases[index], reached[index], wanted, settings.bpf))
    frames = [frame for found in mapper(collect_part, [t for t in tasks if t[3]]) for frame in found]
    framed = {frame[0] for frame in frames}
    ticks = {(r.retired_frame, r.ts, r.before) for r in kept if r.how != FLUSH and r.retired_frame not in framed}
    items: list[tuple[Any, ...]] = sorted([*frames, *ticks], key=lambda item: item[0])
    end = max([reached[-1], parts[-1].counts["now"]])
    text = io.BytesIO()
    limits = (settings.timeouts.msl, settings.timeouts.idle, settings.timeouts.handshake,
              settings.timeouts.close_linger)
    census = _engine.replay(items, text.write, engine.FORMATS[settings.fmt], limits,
                            engine._quoted(settings.capture, settings.fmt), settings.colour, end,
                            *(() if settings.where is None else (settings.where,)))
    return parse(text.getvalue()), census


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


def merge_counts(counts: list[dict[str, Any]], dropped: Iterable[Record], remade: dict[str, Any]) -> dict[str, Any]:
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
    for record in dropped:
        total["connections"] -= 1
        if not record.census[7]:
            continue
        total["matched"] -= 1
        for key, labels, index in zip(CENSUS_KEYS, names, record.census[:5], strict=True):
            total[key][labels[index]] -= 1
        total["half_close"] -= record.census[5]
        total["anomalies"] -= record.census[6]
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

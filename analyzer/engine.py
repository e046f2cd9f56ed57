"""The fast path: the compiled engine (`analyzer/_engine/`) behind `synfin analyze`.

The reference pipeline (`pipeline.py`) makes a Python object per packet and
tops out near 25,000 packets a second. The engine runs the same pipeline in
C, from the capture's bytes to the output's text, at millions a second:
reading (capture.py), decoding (decode.py), the connection table
(tracker.py), the two endpoint machines and their evidence rules
(connection.py), the labels (labels.py) and the three output formats
(report.py); with --filter, libpcap's BPF on each frame (bpf.py, filter.c:
only when the engine was built with libpcap, see filters_available()); with
--where, a test of each finished connection (where.py, where.c). Each
C file names the Python module it follows. `collect()` finds a few
connections' frames for the ladder and stops reading once they have finished
(collect.c, ladder_source.py). `_engine.live()` reads a live interface through
libpcap's ring and prints events.py's events from C (live.c, events.c; driven
by live_engine.py for `synfin live`). For a rotated set analyzed file by file in
parallel (parallel.py), run() takes a frame base and writes each connection's
facts before its text (OutputStyle.meta), and parts.c counts a file's frame
numbers, collects the frames of chosen 4-tuples and replays them with ticks.

One set of TCP rules
====================

The state machine is not written twice. `configure()` below evaluates
`fsm.step`, `fsm.send_events` and `fsm.receive_events` on every possible
input and hands the engine the results as tables, so a change to fsm.py
changes both paths. What the C code adds is the observer's bookkeeping
around the machine (which segment is a retransmission, when a FIN counts as
received), and the test suite holds the two paths to byte-identical output
on every sample capture, on crafted edge cases, and on real traffic made in
the test (tests/test_engine.py).

The engine is optional: it is built when the package is installed with a C
compiler present. Without it, `synfin analyze` runs the reference pipeline
and says so once.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from analyzer.bpf import check as check_filter
from analyzer.capture import GZIP_CUT, CaptureDamage, CaptureError, OpenCapture, Progress, check_head, open_capture
from analyzer.connection import Timeouts
from analyzer.decode import LINKTYPE_NAMES
from analyzer.fsm import SYNCHRONIZED, Event, State, receive_events, send_events, step
from analyzer.pipeline import NAMED_PROBLEMS
from analyzer.rotated import CaptureSet
from analyzer.where import Where

try:
    from analyzer import _engine
except ImportError:  # built without a C compiler: the reference path only
    _engine = None

# records: the API's (output.c, records.py); census: synfin report's (output.c write_census, columns.py)
FORMATS = {"json": 0, "csv": 1, "table": 2, "records": 3, "census": 4}
STATES = list(State)
EVENTS = list(Event)
READ_BLOCK = 4 << 20

_configured = False


def available() -> bool:
    """Whether the compiled engine was built."""
    return _engine is not None


def filters_available() -> bool:
    """Whether the compiled engine was built with libpcap, and so runs BPF filters (analyzer/_engine/filter.c)."""
    return _engine is not None and bool(getattr(_engine, "FILTERS", 0))


def machine_tables() -> tuple[bytes, bytes, bytes, int]:
    """fsm.py as tables: step[passive][state][event], send events, receive events, SYNCHRONIZED.

    A missing transition is 255; an event list is its length followed by the
    event indices, padded to 1 + 3 bytes.
    """
    index = {event: i for i, event in enumerate(EVENTS)}
    steps = bytearray()
    for passive in (False, True):
        for state in STATES:
            for event in EVENTS:
                target = step(state, event, passive=passive)
                steps.append(255 if target is None else STATES.index(target))
    sends = bytearray()
    for bits in range(16):
        events = send_events(bool(bits & 1), bool(bits & 2), bool(bits & 4), bool(bits & 8))
        sends += _event_list(events, index)
    receives = bytearray()
    for bits in range(32):
        events = receive_events(*(bool(bits & (1 << k)) for k in range(5)))
        receives += _event_list(events, index)
    synchronized = sum(1 << STATES.index(state) for state in SYNCHRONIZED)
    return bytes(steps), bytes(sends), bytes(receives), synchronized


def _event_list(events: tuple[Event, ...], index: dict[Event, int]) -> bytes:
    if len(events) > 3:
        raise ValueError(f"more events than the engine's tables hold: {events}")
    return bytes([len(events), *(index[e] for e in events)]).ljust(4, b"\0")


def _mapped_dotted() -> bool:
    """Whether this Python's ipaddress writes IPv4-mapped IPv6 addresses as ::ffff:1.2.3.4
    (3.13 and later) rather than ::ffff:102:304, so that the engine writes them the same."""
    return str(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4"


def configure(tables: tuple[bytes, bytes, bytes, int] | None = None) -> None:
    """Hand the engine the state machine: fsm.py's as it is now, or `tables` (tests change one)."""
    global _configured
    _engine.configure(*(tables or machine_tables()), [str(s) for s in STATES], [str(e) for e in EVENTS],
                      dict(LINKTYPE_NAMES), _mapped_dotted())
    _configured = True


def _configure() -> None:
    if not _configured:
        configure()


def run(path: str | Path, out: IO[str], fmt: str, timeouts: Timeouts, capture: str | None = None,
        colour: bool = False, progress: Progress | None = None, bpf: str | None = None,
        where: Where | None = None) -> dict[str, Any]:
    """Analyze the capture at `path` ("-": standard input), writing its connections to `out` as `fmt`; return
    the counts. With `bpf`, a BPF expression, only the frames it matches (analyzer/bpf.py; checked here first,
    bpf.FilterError if it is bad; the engine must have been built with libpcap: filters_available()). With
    `where` (analyzer/where.py), only the connections it matches are written and counted in the census
    (`counts["matched"]`; `counts["connections"]` is all of them), the engine testing each one (where.c).

    The capture is opened once (capture.open_capture), and read in one of two ways. A plain file that can
    seek is read by the engine's own thread from the file descriptor, rewound to where the capture starts:
    the fast path. A gzip file, or a pipe (a named pipe, `<(cat x.pcap)`, standard input from a pipe), is
    read through the Python stream on the caller's thread, because its first bytes, read to tell the format,
    are no longer in the pipe but in the stream, which hands them back first; this is also how the
    reference pipeline reads, block for block.

    Raises CaptureError, as `capture.read_frames` does, when the file is not a readable capture.
    """
    _ready(bpf, check=True)
    opened = open_capture(path)
    try:
        check_head(opened)
        write, fd_out = _writer(out)
        return run_opened(opened, write, fd_out, fmt, timeouts, capture, progress, bpf, colour, where)
    finally:
        opened.close()


def chainable(capture_set: CaptureSet) -> bool:
    """Whether the engine can read the set itself, from descriptors: only plain files that can seek (a gzip
    file is unpacked in Python; run_set refuses it, and the caller reads the set with the reference)."""
    for path in capture_set.files:
        opened = open_capture(path)
        try:
            if opened.gzipped or opened.start is None:
                return False
        finally:
            opened.close()
    return True


def open_set(capture_set: CaptureSet) -> list[OpenCapture]:
    """Every file of a `chainable` set opened and its head checked (CaptureError, naming it, if one is no
    capture; ValueError if one cannot be chained); the caller closes them."""
    opened: list[OpenCapture] = []
    try:
        for path in capture_set.files:
            opened.append(open_capture(path))
            check_head(opened[-1])
            if opened[-1].gzipped or opened[-1].start is None:
                raise ValueError(f"{opened[-1].name}: not a plain file: the engine cannot chain it")
    except BaseException:
        for one in opened:
            one.close()
        raise
    return opened


def run_set(capture_set: CaptureSet, out: IO[str], fmt: str, timeouts: Timeouts, capture: str | None = None,
            colour: bool = False, progress: Progress | None = None, bpf: str | None = None,
            where: Where | None = None) -> dict[str, Any]:
    """run() on a rotated set (rotated.py), read as one capture: every file is opened (and its head checked)
    first, and the engine's reader goes from one file's descriptor to the next (reader.c, reader_chain).
    counts["last_ts"] has each file's last frame time (None: no frame). The set must be `chainable`."""
    _ready(bpf, check=True)
    opened = open_set(capture_set)
    try:
        write, fd_out = _writer(out)
        return run_set_opened(capture_set, opened, write, fd_out, fmt, timeouts, capture, progress, bpf, colour,
                              where)
    finally:
        for one in opened:
            one.close()


def run_set_opened(capture_set: CaptureSet, opened: list[OpenCapture], write: Callable[[bytes], object],
                   fd_out: int, fmt: str, timeouts: Timeouts, capture: str | None = None,
                   progress: Progress | None = None, bpf: str | None = None, colour: bool = False,
                   where: Where | None = None) -> dict[str, Any]:
    """run_set() on files open_set() opened (as run_opened() for one file); the caller closes them."""
    _ready(bpf)
    limits = timeouts.limits()
    fds = tuple(one.own_fd() for one in opened)
    try:
        counts = _engine.run(None, fds, progress, write, fd_out, FORMATS[fmt], limits, _quoted(capture, fmt),
                             colour, *_optional(bpf, where))
    except OSError as err:
        if isinstance(err, BrokenPipeError):
            raise
        raise CaptureError(f"{capture_set.name}: read error: {err}") from None
    if counts["error"]:
        raise CaptureError(f"{capture_set.files[counts['file']]}: {counts['error']}")
    return counts


def run_opened(opened: OpenCapture, write: Callable[[bytes], object], fd_out: int, fmt: str, timeouts: Timeouts,
               capture: str | None = None, progress: Progress | None = None, bpf: str | None = None,
               colour: bool = False, where: Where | None = None) -> dict[str, Any]:
    """run() on a capture already opened (and its head checked): the output goes to `fd_out` from the engine's
    formatting thread, or, if it is -1, through `write`. The caller closes `opened`. The engine runs without
    the GIL, so this may run on a thread of its own while the caller reads fd_out (analyzer/records.py)."""
    _ready(bpf)
    limits = timeouts.limits()
    try:
        counts = _engine.run(_reader(opened, progress), opened.own_fd(), progress, write, fd_out,
                             FORMATS[fmt], limits, _quoted(capture, fmt), colour, *_optional(bpf, where))
    except (OSError, EOFError, zlib.error) as err:  # as capture.read_frames
        if isinstance(err, BrokenPipeError):
            raise
        raise CaptureError(f"{opened.name}: read error: {err}") from None
    if counts["error"]:
        raise CaptureError(f"{opened.name}: {counts['error']}")
    if opened.cut:  # as capture.read_frames: one more damaged spot, after the last whole frame
        _note_damage(counts, counts["last_frame"] + 1, GZIP_CUT)
    return counts


def collect(path: str | Path | CaptureSet, ids: list[int], timeouts: Timeouts, stop_early: bool = True,
            bpf: str | None = None) -> dict[str, Any]:
    """The frames of the connections numbered `ids` (as `run` numbers them, with `bpf` too), for the ladder.

    The capture (or a `chainable` rotated set) is opened and read as `run` reads it; reading stops once every
    one of them has finished if `stop_early` (collect.c). Returns {"frames": {id: [(number, ts, linktype, data,
    wire_len, now), ...]}, "finished": {id: (finished_at, finishing frame or None)}, "connections": how many
    were numbered, "frames_read", "stopped"}; ids never made are left out. Raises CaptureError as `run` does.
    """
    _ready(bpf, check=True)
    is_set = isinstance(path, CaptureSet)
    opened = open_set(path) if isinstance(path, CaptureSet) else [open_capture(path)]
    name = path.name if isinstance(path, CaptureSet) else opened[0].name
    try:
        if not is_set:
            check_head(opened[0])
        limits = timeouts.limits()
        fds: int | tuple[int, ...] = tuple(one.own_fd() for one in opened) if is_set else opened[0].own_fd()
        try:
            found = _engine.collect(opened[0].stream.readinto, fds, limits, sorted(set(ids)), stop_early,
                                    *(() if bpf is None else (bpf.encode(),)))
        except (OSError, EOFError, zlib.error) as err:  # as capture.read_frames
            raise CaptureError(f"{name}: read error: {err}") from None
    finally:
        for one in opened:
            one.close()
    if found["error"]:
        where = path.files[found["file"]] if isinstance(path, CaptureSet) else name
        raise CaptureError(f"{where}: {found['error']}")
    return found


LIVE_EVENTS = {"counted": 0, "text": 1, "json": 2}  # events.c's formats ("counted": only the rates)


def live(iface: str, bpf: str, snaplen: int, buffer_bytes: int, promiscuous: bool, loopback: bool,
         dump: Path | None, events: str, fd_out: int, fmt: str, colour: bool, timeouts: Timeouts, count: int,
         census: bool, handler: Callable[..., bool]) -> dict[str, Any]:
    """Analyze the live interface `iface` through libpcap's ring (analyzer/_engine/live.c) until `handler`
    returns true, `count` frames (0: no limit) have been read, or the interface is lost.

    The filter `bpf` is compiled into the kernel; `loopback`: the kernel skips outgoing copies; `dump`: the
    frames are written there (pcap, nanoseconds). Events (`events`, LIVE_EVENTS) go to handler(events: bytes,
    frames, received, dropped, (opens, closes, resets), census), called once the capture is on and then at
    least every 0.1 s; `census` asks for the open connections' states (clients' then servers', a count per
    STATES entry). Each finished connection is written to `fd_out` as `fmt`, as run() writes it. Returns run()'s
    counts and "received", "dropped", "drained", "lost" (live_capture in module.c); or {"open_error": one of
    LIVE_PERMISSION, LIVE_NO_DEVICE, LIVE_BAD_FILTER or another code, "message": libpcap's}.
    """
    _ready(None)
    if not filters_available():
        raise RuntimeError("the compiled engine was built without libpcap: no live capture")
    limits = timeouts.limits()
    return _engine.live(iface, bpf, snaplen, buffer_bytes, promiscuous, loopback, None if dump is None else str(dump),
                        LIVE_EVENTS[events], fd_out, FORMATS[fmt], colour, limits, count, census, handler)


def live_error(code: int) -> str:
    """Which failure a live() "open_error" code is: "permission", "no device", "bad filter" or "other"."""
    names = {getattr(_engine, "LIVE_PERMISSION", -1): "permission", getattr(_engine, "LIVE_NO_DEVICE", -1): "no device",
             getattr(_engine, "LIVE_BAD_FILTER", -1): "bad filter"}
    return names.get(code, "other")


def _optional(bpf: str | None, where: Where | None) -> tuple[str | bytes | None, ...]:
    """The engine's optional arguments: the filter expression, then the --where program."""
    if where is not None:
        return (bpf, where.for_engine())
    return () if bpf is None else (bpf,)


def _ready(bpf: str | None, check: bool = False) -> None:
    """Refuse to run without the engine (or, with a filter, without libpcap in it); configure it once. With
    `check`, first check the filter expression (bpf.FilterError if libpcap cannot compile it)."""
    if check and bpf is not None:
        check_filter(bpf)
    if _engine is None:
        raise RuntimeError("the compiled engine is not built (no C compiler at install time)")
    _configure()
    if bpf is not None and not filters_available():
        raise RuntimeError("the compiled engine was built without libpcap: no filters")


def _note_damage(counts: dict[str, Any], frame: int, what: str) -> None:
    """Count a damaged spot in the engine's counts as pipeline.Stats.note_damage does."""
    counts["damaged"] += 1
    for key in ("damage", "problems"):
        if len(counts[key]) < NAMED_PROBLEMS:
            counts[key].append((frame, what))


def _reader(opened: OpenCapture, progress: Progress | None) -> Callable[[memoryview], int]:
    """How the engine reads through Python (gzip, pipes): the stream's readinto, reporting progress in
    bytes of the file read (compressed bytes for gzip)."""
    readinto = opened.stream.readinto  # type: ignore[attr-defined]
    if progress is None:
        return readinto  # type: ignore[no-any-return]
    file = opened.file

    def read_and_report(view: memoryview) -> int:
        count = readinto(view)
        progress(file.consumed)
        return count  # type: ignore[no-any-return]

    return read_and_report


def _writer(out: IO[str]) -> tuple[Callable[[bytes], object], int]:
    """How the engine writes: straight to the file descriptor behind `out` (from its
    second thread), or, for a stream without one, through a callback."""
    out.flush()
    try:
        return out.write, out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        binary = getattr(out, "buffer", None)
        if binary is not None:
            return binary.write, -1
        return (lambda chunk: out.write(chunk.decode("utf-8"))), -1


def _quoted(capture: str | None, fmt: str) -> bytes | None:
    """The capture name as the format writes it (report.record's "capture", the CSV column)."""
    if capture is None or fmt == "table":
        return None
    if fmt in ("json", "records"):  # records have no capture key
        return json.dumps(capture).encode()
    cell = io.StringIO()
    csv.writer(cell, lineterminator="").writerow([capture])
    return cell.getvalue().encode()


def stats_from(counts: dict[str, Any], stats: Any) -> None:
    """Fill a pipeline.Stats with the engine's counts."""
    stats.frames = counts["frames"]
    stats.segments = counts["segments"]
    stats.connections = counts["connections"]
    stats.skipped = Counter(counts["skipped"])
    stats.malformed = Counter(counts["malformed"])
    stats.problem_frames = list(counts["problems"])
    stats.damage = [CaptureDamage(frame, what) for frame, what in counts["damage"]]  # the first few
    stats.damaged = counts["damaged"]
    stats.linktypes = Counter(counts["linktypes"])
    stats.unmatched = counts["unmatched"]
    stats.filter_failed = counts["filter_failed"]
    stats.tunnelled = counts["tunnelled"]
    stats.tunnels = Counter(counts["tunnels"])


def census_from(counts: dict[str, Any], census: Any) -> None:
    """Fill a report.Census with the engine's counts."""
    census.open = Counter(counts["open"])
    census.close = Counter(counts["close"])
    census.closer = Counter(counts["closer"])
    census.final = Counter({("client", s): n for s, n in counts["final_client"].items()}
                           | {("server", s): n for s, n in counts["final_server"].items()})
    census.half_close = counts["half_close"]
    census.anomalies = counts["anomalies"]
    census.matched = counts["matched"]
    census.retransmits = Counter(dict(zip(("syn", "synack", "fin"), counts["retransmits"], strict=True)))
    census.endpoints = {name: list(row) for name, row in counts["endpoints"].items()}

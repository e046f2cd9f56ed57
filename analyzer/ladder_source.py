"""The connections a ladder draws, found by the compiled engine and laid out by the reference pipeline.

A ladder needs every segment of its connection (`keep_segments`), which only
the reference pipeline keeps. Run over a whole capture of millions of frames
that takes minutes and gigabytes, for a connection that may end in its first
second. So the engine reads the capture (`engine.collect`, collect.c), numbering
connections exactly as `synfin analyze` does (with --filter too), copies out the
frames of the connections asked for, and stops reading once they have all
finished. Each connection is then replayed alone through the reference
pipeline (`replay`): its own frames; then the frame that finished it if that
was another connection's (a bare SYN reusing its 4-tuple, or a later frame
whose time ran its timers out), so that it finishes as it did in the whole
capture; then a tick to the time it finished at, and the end of input at that
time (the whole capture's end, for a connection still open there). Before each
frame, the replay ticks to the time the whole capture's tracker had reached,
which is later than the frame's own only where time went backwards. The
connection comes out as the analyzer decided it, which tests/test_ladder_engine.py
checks against `synfin analyze -f json` on every sample and the crafted captures.

Memory: the engine's open connections, a few batches of frames, and the wanted
connections' frames; nothing grows with the rest of the capture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from analyzer import engine
from analyzer.capture import RawFrame
from analyzer.connection import Connection, Timeouts
from analyzer.pipeline import Options, Pipeline, Stats, analyze

FrameTuple = tuple[int, float, int, bytes, int, float]  # collect.c: RawFrame's fields and the time before


@dataclass
class Found:
    """What `find` found: the wanted connections there are, and how many connections it numbered."""

    connections: list[Connection]  # by id; ids not in the capture are missing
    count: int  # connections numbered: all of the capture's, unless reading stopped early
    frames_read: int  # frames the engine read (as Stats.frames counts them)
    stopped: bool  # reading stopped before the capture's end


def connections(path: str | Path, ids: Iterable[int], *, msl: float = 30.0, idle_timeout: float = 900.0,
                handshake_timeout: float = 40.0, bpf: str | None = None) -> list[Connection]:
    """The connections numbered `ids` (as `synfin analyze` numbers them), with their segments, by id, for
    `ladder.build`: from the engine when it is built (and, for `bpf`, has libpcap), else from the reference
    pipeline over the whole capture. Ids the capture does not have are left out.

        conn, = connections("big.pcap", [6083])
        text(build(conn))
    """
    limits = Timeouts(msl=msl, idle=idle_timeout, handshake=handshake_timeout)
    if engine.available() and (bpf is None or engine.filters_available()):
        return find(path, ids, limits, bpf).connections
    wanted = set(ids)
    kept = []
    for conn in analyze(path, msl=msl, idle_timeout=idle_timeout, handshake_timeout=handshake_timeout,
                        keep_segments=True, bpf=bpf):
        if conn.id in wanted:
            kept.append(conn)
        else:
            conn.notes = None  # let the segments go
    return sorted(kept, key=lambda c: c.id)


def find(path: str | Path, ids: Iterable[int], timeouts: Timeouts, bpf: str | None = None,
         stop_early: bool = True) -> Found:
    """The connections numbered `ids` in the capture at `path`, with their segments (keep_segments).

    Raises CaptureError as `pipeline.analyze` does, and bpf.FilterError for a bad `bpf`.
    """
    found = engine.collect(path, sorted(set(ids)), timeouts, stop_early, bpf)
    conns = [replay(conn_id, frames, found["finished"][conn_id], timeouts)
             for conn_id, frames in sorted(found["frames"].items())]
    return Found(conns, found["connections"], found["frames_read"], found["stopped"])


def replay(conn_id: int, frames: list[FrameTuple], finished: tuple[float, FrameTuple | None],
           timeouts: Timeouts) -> Connection:
    """One connection, from its frames and how it finished (collect.c), through the reference pipeline."""
    at, finisher = finished
    pipeline = Pipeline(Stats(), Options(timeouts, keep_segments=True))
    done: list[Connection] = []
    for item in [*frames, *([finisher] if finisher is not None else [])]:
        done += pipeline.tick(item[5])
        done += pipeline.feed(RawFrame(*item[:5]))
    done += pipeline.tick(at)
    done += pipeline.close(at)
    conn = next(c for c in done if c.id == 0)  # its own frames come first: it is the replay's first
    conn.id = conn_id
    return conn

"""The pipeline: frames → TCP segments → connections → labels.

One object, `Pipeline`, drives it for any source of frames: `run_frames`
pushes a capture file's frames through it (`analyze`), `live.py` a live
interface's. Oddities are counted, never
raised: a frame that cannot be decoded is skipped and counted in `Stats`, and
the first few are named by frame number. Whatever the capture, `Stats` stays
small: damaged spots are counted and only the first few kept (a hostile file
can hold millions), and skip reasons and link types are counters keyed by a
sentence or a number, at most one per link type in the file. With a BPF
filter (analyzer/bpf.py), the frames it rejects are only counted (`unmatched`),
before anything else looks at them, as if tcpdump had left them out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.bpf import BpfFilter
from analyzer.capture import CaptureDamage, Progress, RawFrame, read_frames
from analyzer.connection import Connection, Timeouts
from analyzer.decode import Segment, Skip, decode
from analyzer.layers import KIND_BIT
from analyzer.rotated import Boundaries, CaptureSet, read_set
from analyzer.tracker import Tracker
from analyzer.where import Where
from analyzer.where import parse as parse_where

NAMED_PROBLEMS = 5  # how many bad frames the summary names one by one


@dataclass
class Stats:
    """What the pipeline saw, for the summary."""

    frames: int = 0
    segments: int = 0
    connections: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    problem_frames: list[tuple[int, str]] = field(default_factory=list)
    damage: list[CaptureDamage] = field(default_factory=list)  # the first NAMED_PROBLEMS damaged spots
    damaged: int = 0  # all of them
    linktypes: Counter[int] = field(default_factory=Counter)
    unmatched: int = 0  # frames the filter rejected (not counted in `frames`)
    filter_failed: tuple[int, str] | None = None  # a link type the filter cannot apply to, and libpcap's reason
    tunnelled: int = 0  # TCP segments that came through one or more encapsulations ...
    tunnels: Counter[str] = field(default_factory=Counter)  # ... and how many through each kind
    boundaries: Boundaries | None = None  # a rotated set's: where its files meet (rotated.py)

    def note_tunnels(self, kinds: int) -> None:
        self.tunnelled += 1
        for kind, bit in KIND_BIT.items():
            if kinds & bit:
                self.tunnels[kind] += 1

    def note_skip(self, frame: int, skip: Skip) -> None:
        if skip.malformed:
            self.malformed[skip.reason] += 1
            if len(self.problem_frames) < NAMED_PROBLEMS:
                self.problem_frames.append((frame, skip.reason))
        else:
            self.skipped[skip.reason] += 1

    def note_damage(self, damage: CaptureDamage) -> None:
        self.damaged += 1
        if len(self.damage) < NAMED_PROBLEMS:
            self.damage.append(damage)
        if len(self.problem_frames) < NAMED_PROBLEMS:
            self.problem_frames.append((damage.frame, damage.what))

    @property
    def bad_frames(self) -> int:
        return sum(self.malformed.values()) + self.damaged


@dataclass
class Options:
    """Everything that tunes the analysis."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    keep_segments: bool = False
    bpf: BpfFilter | None = None  # analyze only the frames it matches


class Pipeline:
    """The push-style core: feed it frames, get back the connections that finished.

    Files and live interfaces both go through here (`run_frames` drives it
    from an iterable). It works on packet time only: `tick(now)` lets a live
    source pass the time when no packets come, so idle connections are still
    finished and forgotten.
    """

    def __init__(self, stats: Stats, options: Options,
                 on_segment: Callable[[Connection, Segment], None] | None = None) -> None:
        self.stats = stats
        self.bpf = options.bpf
        self.tracker = Tracker(options.timeouts, options.keep_segments, on_segment)

    def feed(self, frame: RawFrame | CaptureDamage) -> list[Connection]:
        """Take one frame (or a damaged spot); return the connections finished before it."""
        stats = self.stats
        if isinstance(frame, CaptureDamage):
            stats.note_damage(frame)
            return []
        if self.bpf is not None and not self.bpf.matches(frame):
            stats.unmatched += 1
            stats.filter_failed = self.bpf.failed
            return []
        stats.frames += 1
        stats.linktypes[frame.linktype] += 1
        result = decode(frame)
        if isinstance(result, Skip):
            stats.note_skip(frame.number, result)
            return []
        stats.segments += 1
        if result.kinds:
            stats.note_tunnels(result.kinds)
        return self._done(self.tracker.add(result))

    def tick(self, now: float) -> list[Connection]:
        """No packet until time `now`: finish the connections whose timers ran out by then."""
        return self._done(list(self.tracker.expire(now)))

    def close(self, at: float | None = None) -> list[Connection]:
        """End of input: finish every connection still open (at packet time `at`: Tracker.flush)."""
        return self._done(self.tracker.flush(at))

    def _done(self, conns: list[Connection]) -> list[Connection]:
        self.stats.connections += len(conns)
        return conns


def run_frames(frames: Iterable[RawFrame | CaptureDamage], stats: Stats, options: Options,
               on_segment: Callable[[Connection, Segment], None] | None = None,
               ) -> Iterator[Connection]:
    """Drive frames through decoding and tracking; yield connections as they finish."""
    pipeline = Pipeline(stats, options, on_segment)
    for frame in frames:
        yield from pipeline.feed(frame)
    yield from pipeline.close()


def analyze(path: str | Path | CaptureSet, *, msl: float = 30.0, idle_timeout: float = 900.0,
            handshake_timeout: float = 40.0, keep_segments: bool = False,
            stats: Stats | None = None, progress: Progress | None = None,
            bpf: str | None = None, where: str | Iterable[str] | Where | None = None) -> Iterator[Connection]:
    """Analyze one capture file, or a rotated set (rotated.py) as one capture; yield its connections as they
    finish.

    Pass a `Stats` to read the frame counts and skipped frames afterwards.
    `bpf`, a BPF expression as tcpdump takes it ("tcp port 443"), analyzes only
    the frames it matches (analyzer/bpf.py); frame numbers stay the file's.
    `where`, --where terms ("close=reset", or a list of them: all must hold;
    analyzer/where.py), yields only the connections they match (`stats` still
    counts them all). Raises `CaptureError` if the file is not a readable
    capture, and `bpf.FilterError` or `where.WhereError` (at once, before
    reading) if the expression or a term is bad.
    """
    matcher = parse_where(where)
    options = Options(Timeouts(msl=msl, idle=idle_timeout, handshake=handshake_timeout),
                      keep_segments, BpfFilter(bpf) if bpf is not None else None)
    stats = stats if stats is not None else Stats()
    if isinstance(path, CaptureSet):
        stats.boundaries = Boundaries()
        frames = read_set(path, stats.boundaries, progress)
    else:
        frames = read_frames(path, progress)  # as given: the string "-" is standard input
    conns = run_frames(frames, stats, options)
    return conns if matcher is None else matcher.filter(conns)

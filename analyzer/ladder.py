"""A ladder diagram as data: where every arrow, state name and time gap goes.

Teachers draw TCP as a ladder: two vertical timelines (client left, server
right), time running down, a slanted arrow for each segment from the
sender's line to the receiver's, and each endpoint's state written beside
its line where it changes. This module lays such a diagram out for one
finished `Connection`, with no drawing library: the matplotlib picture
(`ladder_plot`), the terminal text and the Mermaid diagram (`ladder_text`)
all render the same `Ladder`, so they show the same things in the same order.

The diagram draws what the analyzer decided and never re-derives a state:
every state name comes from an endpoint's `history`, placed at the segment
that the analyzer names as its evidence (`Transition.frame`). A change
evidenced by a segment the endpoint *sent* sits at that arrow's start; one
evidenced by a segment it *received* sits at that arrow's end; a change made
by the 2·MSL timer sits on its own row at the timer's time.

Geometry, in *rows* (y grows downward, one row per segment):

* ``sequential``: one row per segment (or collapsed block, or timer).
* ``proportional`` (the default): rows are at least one apart and further
  apart the longer the pause between them; a pause of `CUT_SECONDS` or more
  is cut out of the picture and marked with its length ("≈ 3.2 s").
* An arrow is received `SLANT` rows below where it was sent. A SYN or FIN
  that the peer's next segment does not acknowledge crossed that segment in
  flight (simultaneous open and close): it is drawn arriving after it, so
  the two arrows cross as in RFC 9293's figures.
* A long run of plain data and ACK segments (no SYN/FIN/RST, no state change,
  no keep-alive) collapses into one block, "… 1,204 segments, 1.6 MB …",
  keeping `KEEP` segments drawn at each end; ``all_segments`` turns it off.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

from analyzer.connection import Connection, SegmentNote
from analyzer.decode import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from analyzer.endpoint import MOD, Endpoint, Transition, seq_ge
from analyzer.report import endpoint_name

TimeMode = Literal["proportional", "sequential"]

SLANT = 0.6  # rows from an arrow's send point down to its receive point
CUT_SECONDS = 1.0  # pauses this long or longer are cut out and marked
GAP_ROWS = 2.6  # height of a cut pause
EXTRA_ROWS = 2.5  # the longest pause that is not cut gets this many rows more than one
SCALE_FLOOR = 0.05  # seconds: pauses are measured against at least this (microseconds stay close)
BLOCK_ROWS = 2.0  # height of a collapsed block
COLLAPSE_MIN = 12  # runs of this many collapsible segments or more are collapsed
KEEP = 3  # segments drawn before and after a collapsed block
MARK_ROWS = 0.6  # vertical room a one-line state name takes beside its line
DETAIL_ROWS = 0.45  # and a second line (TIME_WAIT's 2·MSL)
END_ROWS = 1.2  # room below the last row

FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"),
              (URG, "URG"), (ECE, "ECE"), (CWR, "CWR"))
KIND_MARKS = {"retransmission": "retransmission", "keepalive": "keep-alive",
              "ignored": "not acceptable: ignored"}


@dataclass(frozen=True, slots=True)
class Arrow:
    """One segment: from the sender's line at y_send to the receiver's at y_recv."""

    frame: int
    ts: float
    from_client: bool
    y_send: float
    y_recv: float
    flags: str  # "SYN+ACK"
    label: str  # "SYN+ACK  seq 0  ack 1"
    kind: str  # "", "retransmission", "keepalive" or "ignored" (a RST its receiver would not accept)
    crossing: bool  # arrives after a segment the receiver sent later


@dataclass(frozen=True, slots=True)
class Block:
    """A collapsed run of data segments and their ACKs."""

    y_top: float
    y_bottom: float
    first_frame: int
    last_frame: int
    segments: int
    payload_bytes: int
    text: str  # "… 1,204 segments, 1.6 MB …"
    detail: str  # "frames 12–1215 · 1.6 s · 3 retransmissions"
    ts: float


@dataclass(frozen=True, slots=True)
class Gap:
    """A pause cut out of the picture (proportional time only)."""

    y: float
    seconds: float
    text: str  # "≈ 3.2 s"


@dataclass(frozen=True, slots=True)
class StateMark:
    """An endpoint entered `state` at y; the state lasted until y_end."""

    client: bool
    state: str
    y: float
    y_end: float
    text_y: float  # where the name is written (moved down if it would touch the previous one)
    frame: int | None  # None: the 2·MSL timer
    ts: float
    detail: str  # "2·MSL = 60 s" for TIME_WAIT, else ""
    open_ended: bool  # still in this state when the capture ended


@dataclass(frozen=True, slots=True)
class Timer:
    """A row with no segment: the 2·MSL timer fired."""

    y: float
    ts: float
    client: bool  # whose timer


@dataclass
class Ladder:
    """Everything a renderer needs, in row coordinates."""

    conn_id: int
    client: str
    server: str
    title: str
    subtitle: str
    time_mode: TimeMode
    absolute: bool
    start: float
    arrows: list[Arrow] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    states: list[StateMark] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    height: float = 0.0

    def items(self) -> list[Arrow | Block | Gap | StateMark | Timer]:
        """Everything in reading order: top to bottom, a state after the arrow that set it."""
        order = {Gap: 0, Timer: 1, Block: 2, Arrow: 3, StateMark: 4}
        return sorted([*self.gaps, *self.timers, *self.blocks, *self.arrows, *self.states],
                      key=lambda item: (_top(item), order[type(item)]))


def _top(item: Arrow | Block | Gap | StateMark | Timer) -> float:
    if isinstance(item, Arrow):
        return item.y_send
    if isinstance(item, Block):
        return item.y_top
    return item.y


# -- rows -----------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    ts: float
    ts_end: float
    note: SegmentNote | None = None
    block: list[SegmentNote] | None = None
    timer_client: bool | None = None  # a timer row: whose timer
    y: float = 0.0

    @property
    def rows(self) -> float:
        return BLOCK_ROWS if self.block is not None else 1.0


def build(conn: Connection, time: TimeMode = "proportional", absolute: bool = False,
          all_segments: bool = False) -> Ladder:
    """Lay out the ladder of a finished connection analyzed with keep_segments=True."""
    if conn.notes is None:
        raise ValueError("the connection was analyzed without keep_segments=True")
    rows = _rows(conn, all_segments)
    gaps = _place(rows, time)
    ladder = Ladder(conn.id, endpoint_name(conn.client), endpoint_name(conn.server), title(conn), subtitle(conn),
                    time, absolute, conn.start, gaps=gaps,
                    anomalies=[f"frame {a.frame}: {a.what}" for a in conn.anomalies])
    bottom = (rows[-1].y + rows[-1].rows if rows else 0.0) + END_ROWS - 1.0
    numbers = _Numbering(conn, absolute)
    ladder.arrows = _arrows(rows, numbers)
    ladder.blocks = [_block(row) for row in rows if row.block is not None]
    ladder.timers = [Timer(row.y, row.ts, row.timer_client) for row in rows if row.timer_client is not None]
    by_frame = {arrow.frame: arrow for arrow in ladder.arrows}
    timer_y = {(timer.client, timer.ts): timer.y for timer in ladder.timers}
    for ep, is_client in ((conn.client, True), (conn.server, False)):
        ladder.states += _marks(conn, ep, is_client, by_frame, timer_y, bottom)
    ladder.height = max([bottom, *(m.text_y + MARK_ROWS for m in ladder.states)])
    return ladder


def _rows(conn: Connection, all_segments: bool) -> list[_Row]:
    """Segments (some runs collapsed) and timer firings, in time order."""
    notes = conn.notes or []
    evidence = {t.frame for ep in (conn.client, conn.server) for t in ep.history}
    rows: list[_Row] = []
    run: list[SegmentNote] = []
    for note in [*notes, None]:
        if note is not None and not all_segments and _collapsible(note, evidence):
            run.append(note)
            continue
        rows += _run_rows(run)
        run = []
        if note is not None:
            rows.append(_Row(note.ts, note.ts, note=note))
    timers = [(t.ts, ep is conn.client) for ep in (conn.client, conn.server) for t in ep.history
              if t.frame is None]
    for ts, client in sorted(timers):
        index = next((i for i, row in enumerate(rows) if row.ts > ts), len(rows))
        rows.insert(index, _Row(ts, ts, timer_client=client))
    return rows


def _collapsible(note: SegmentNote, evidence: set[int | None]) -> bool:
    return not note.flags & (SYN | FIN | RST) and note.kind != "keepalive" and note.frame not in evidence


def _run_rows(run: list[SegmentNote]) -> list[_Row]:
    if len(run) < COLLAPSE_MIN:
        return [_Row(n.ts, n.ts, note=n) for n in run]
    middle = run[KEEP:-KEEP]
    return ([_Row(n.ts, n.ts, note=n) for n in run[:KEEP]]
            + [_Row(middle[0].ts, middle[-1].ts, block=middle)]
            + [_Row(n.ts, n.ts, note=n) for n in run[-KEEP:]])


def _place(rows: list[_Row], time: TimeMode) -> list[Gap]:
    """Give every row its y; return the pauses cut out (proportional time)."""
    pauses = [max(0.0, row.ts - prev.ts_end) for prev, row in itertools.pairwise(rows)]
    longest = max([p for p in pauses if p < CUT_SECONDS] + [SCALE_FLOOR])
    gaps: list[Gap] = []
    y = 0.0
    for index, row in enumerate(rows):
        if index:
            prev, pause = rows[index - 1], pauses[index - 1]
            step = prev.rows
            if time == "proportional" and pause >= CUT_SECONDS:
                gaps.append(Gap(y + prev.rows - 1.0 + GAP_ROWS / 2, pause, f"≈ {seconds(pause)}"))
                step += GAP_ROWS
            elif time == "proportional":
                step += EXTRA_ROWS * pause / longest
            y += step
        row.y = y
    return gaps


# -- arrows and blocks ----------------------------------------------------


class _Numbering:
    """Relative (from each side's ISN, or its first seq seen) or absolute numbers."""

    def __init__(self, conn: Connection, absolute: bool) -> None:
        notes = conn.notes or []
        self.absolute = absolute
        self.base = {side: _base(ep, [n.seq for n in notes if n.from_client == side])
                     for side, ep in ((True, conn.client), (False, conn.server))}

    def seq(self, value: int, from_client: bool) -> int:
        base = self.base[from_client]
        return value if self.absolute or base is None else (value - base) % MOD

    def ack(self, value: int, from_client: bool) -> int:
        return self.seq(value, not from_client)


def _base(ep: Endpoint, seqs: list[int]) -> int | None:
    return ep.isn if ep.isn is not None else (seqs[0] if seqs else None)


def _arrows(rows: list[_Row], numbers: _Numbering) -> list[Arrow]:
    segment_rows = [row for row in rows if row.note is not None]
    arrows = []
    for index, row in enumerate(segment_rows):
        note = row.note
        assert note is not None
        answer = _crossed_by(note, segment_rows[index + 1:])
        y_recv = (answer.y if answer is not None else row.y) + SLANT
        arrows.append(Arrow(note.frame, note.ts, note.from_client, row.y, y_recv, flag_names(note.flags),
                            arrow_label(note, numbers), note.kind, answer is not None))
    return arrows


def _crossed_by(note: SegmentNote, later: list[_Row]) -> _Row | None:
    """The peer's next segment, if it was sent before this SYN or FIN arrived.

    Only a first transmission answered within `CUT_SECONDS` by a first
    transmission counts: a retransmission says the segment was lost, not late.
    """
    if not note.flags & (SYN | FIN) or note.kind:
        return None
    reply = next((row for row in later if row.note is not None and row.note.from_client != note.from_client),
                 None)
    if reply is None or reply.note is None or reply.note.kind or reply.ts - note.ts >= CUT_SECONDS:
        return None
    end = (note.seq + note.payload_len + (1 if note.flags & SYN else 0) + (1 if note.flags & FIN else 0)) % MOD
    covered = bool(reply.note.flags & ACK) and seq_ge(reply.note.ack, end)
    return None if covered else reply


def flag_names(flags: int) -> str:
    """'SYN+ACK', 'FIN+PSH+ACK', 'RST'; '(no flags)' for none."""
    return "+".join(name for bit, name in FLAG_NAMES if flags & bit) or "(no flags)"


def arrow_label(note: SegmentNote, numbers: _Numbering) -> str:
    """'PSH+ACK  seq 1:101  ack 1  len 100', with '[retransmission]' or '[keep-alive]'."""
    seq = numbers.seq(note.seq, note.from_client)
    parts = [flag_names(note.flags), f"seq {seq}:{(seq + note.payload_len) % MOD}" if note.payload_len
             else f"seq {seq}"]
    if note.flags & ACK:
        parts.append(f"ack {numbers.ack(note.ack, note.from_client)}")
    if note.payload_len:
        parts.append(f"len {note.payload_len}")
    if note.kind:
        parts.append(f"[{KIND_MARKS.get(note.kind, note.kind)}]")
    return "  ".join(parts)


def _block(row: _Row) -> Block:
    notes = row.block or []
    size = sum(n.payload_len for n in notes)
    again = sum(n.kind == "retransmission" for n in notes)
    detail = f"frames {notes[0].frame}–{notes[-1].frame} · {seconds(notes[-1].ts - notes[0].ts)}"
    if again:
        detail += f" · {again:,} retransmission{'s' if again > 1 else ''}"
    return Block(row.y, row.y + BLOCK_ROWS - 1.0 + SLANT, notes[0].frame, notes[-1].frame, len(notes), size,
                 f"… {len(notes):,} segments, {human_bytes(size)} …", detail, row.ts)


# -- states ---------------------------------------------------------------


def _marks(conn: Connection, ep: Endpoint, is_client: bool, by_frame: dict[int, Arrow],
           timer_y: dict[tuple[bool, float], float], bottom: float) -> list[StateMark]:
    history = ep.history
    ys = [_state_y(conn, t, i, is_client, by_frame, timer_y) for i, t in enumerate(history)]
    marks: list[StateMark] = []
    floor = float("-inf")
    for index, (t, y) in enumerate(zip(history, ys, strict=True)):
        last = index == len(history) - 1
        detail = f"2·MSL = {seconds(2 * conn.timeouts.msl)}" if t.state.value == "TIME_WAIT" else ""
        text_y = max(y, floor)
        floor = text_y + MARK_ROWS + (DETAIL_ROWS if detail else 0.0)
        marks.append(StateMark(is_client, str(t.state), y, bottom if last else ys[index + 1], text_y,
                               t.frame, t.ts, detail, last))
    return marks


def _state_y(conn: Connection, t: Transition, index: int, is_client: bool, by_frame: dict[int, Arrow],
             timer_y: dict[tuple[bool, float], float]) -> float:
    if t.frame is None:
        return timer_y[(is_client, t.ts)]
    arrow = by_frame.get(t.frame)
    if arrow is None:  # not one of its segments: the SYN that reused its 4-tuple ended a TIME_WAIT, at the end
        return max((a.y_recv for a in by_frame.values()), default=0.0)
    if index == 0 and conn.labels.get("open") == "partial":
        return arrow.y_send  # the state the capture found it in, at its first segment
    return arrow.y_send if arrow.from_client == is_client else arrow.y_recv


# -- words ----------------------------------------------------------------


def title(conn: Connection) -> str:
    return f"connection {conn.id}: {endpoint_name(conn.client)} → {endpoint_name(conn.server)}"


def subtitle(conn: Connection) -> str:
    """The connection's labels in words: 'open: handshake · close: four-way · ...'."""
    labels = conn.labels
    parts = [f"open: {labels.get('open')}", f"close: {labels.get('close')}"]
    if labels.get("active_closer"):
        parts.append(f"active closer: {labels['active_closer']}")
    if labels.get("half_close"):
        parts.append("half-close")
    if labels.get("reset_by"):
        parts.append(f"reset by {labels['reset_by']} in {labels['reset_state']}")
    return " · ".join(parts)


def seconds(value: float) -> str:
    """A duration, two significant digits or whole units: '3.2 s', '42 s', '60 s', '2.5 min'."""
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.1f} s" if value < 10 and value != int(value) else f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def human_bytes(size: int) -> str:
    """Decimal units as people say them: '850 B', '12.3 kB', '1.6 MB'."""
    if size < 1000:
        return f"{size} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if size < scale * 1000 or unit == "GB":
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"

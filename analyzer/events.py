"""Events as they happen: a connection opened, an endpoint changed state, a connection closed.

`EventWatcher` is hung on the pipeline (`on_segment`) and told about every
finished connection. It emits plain dicts, the JSON Lines form of `synfin
live --format json`; `format_event` gives the one-line text form.

* ``open`` once the way the connection opened is decided (handshake,
  simultaneous-open, refused, partial), or at its end (unanswered, incomplete).
* ``state`` for every new entry in an endpoint's history, with how long the
  previous state lasted (``after``, seconds; null for the first).
* ``close`` once neither end can move any more but by a timer (both CLOSED,
  LISTEN or TIME_WAIT), with the close labels; or at its end if that never
  happened. Should the finished connection's labels differ from the ones
  announced (a late RST), a second ``close`` with ``"revised": true`` follows.

The watcher keeps a few counters per *open* connection and forgets them when
the connection is finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analyzer.connection import Connection
from analyzer.decode import Segment
from analyzer.endpoint import Endpoint
from analyzer.fsm import State
from analyzer.labels import label, open_label
from analyzer.report import endpoint_name

Event = dict[str, Any]
DECIDED_OPENS = frozenset({"handshake", "simultaneous-open", "refused", "partial"})
AT_REST = frozenset({State.CLOSED, State.LISTEN, State.TIME_WAIT})
CLOSE_KEYS = ("open", "close", "half_close", "active_closer", "reset_by", "reset_state")


@dataclass(slots=True)
class _Seen:
    """What has been announced about one open connection."""

    client: str  # the endpoints' names, made once
    server: str
    states: list[int] = field(default_factory=lambda: [0, 0])  # history entries announced
    opened: bool = False
    closed: dict[str, object] | None = None


class EventWatcher:
    """Turns the pipeline's progress into events, passed to `emit`."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self.emit = emit
        self._seen: dict[int, _Seen] = {}

    def on_segment(self, conn: Connection, seg: Segment) -> None:
        seen = self._seen.get(conn.id)
        if seen is None:
            seen = self._seen[conn.id] = _new_seen(conn)
        if len(conn.client.history) != seen.states[0] or len(conn.server.history) != seen.states[1]:
            self._states(conn, seen)
        if not seen.opened and open_label(conn) in DECIDED_OPENS:
            self._open(conn, seen, seg.ts)
        if seen.closed is None and _at_rest(conn):
            self._close(conn, seen, label(conn), seg.ts)

    def finished(self, conn: Connection) -> None:
        """`conn` is finished and labelled: announce what is left, then forget it."""
        seen = self._seen.pop(conn.id, None) or _new_seen(conn)
        self._states(conn, seen)
        if not seen.opened:
            self._open(conn, seen, conn.end)
        final = {key: conn.labels[key] for key in CLOSE_KEYS}
        if seen.closed is None:
            self._close(conn, seen, final, conn.end)
        elif seen.closed != final:
            self._close(conn, seen, final, conn.end, revised=True)

    @property
    def watching(self) -> int:
        return len(self._seen)

    def _states(self, conn: Connection, seen: _Seen) -> None:
        new = []
        for side, (role, ep, name) in enumerate((("client", conn.client, seen.client),
                                                 ("server", conn.server, seen.server))):
            for index in range(seen.states[side], len(ep.history)):
                new.append(_state_event(conn, role, ep, name, index))
            seen.states[side] = len(ep.history)
        new.sort(key=lambda event: (event["ts"], event["frame"] or 0))
        for event in new:
            self.emit(event)

    def _open(self, conn: Connection, seen: _Seen, ts: float) -> None:
        seen.opened = True
        self.emit({"event": "open", "ts": ts, "id": conn.id, "client": seen.client,
                   "server": seen.server, "open": open_label(conn)})

    def _close(self, conn: Connection, seen: _Seen, labels: dict[str, object], ts: float,
               revised: bool = False) -> None:
        seen.closed = {key: labels[key] for key in CLOSE_KEYS}
        event: Event = {"event": "close", "ts": ts, "id": conn.id, "client": seen.client,
                        "server": seen.server, **seen.closed,
                        "duration": round(conn.end - conn.start, 9)}
        if revised:
            event["revised"] = True
        self.emit(event)


def _new_seen(conn: Connection) -> _Seen:
    return _Seen(endpoint_name(conn.client), endpoint_name(conn.server))


def _at_rest(conn: Connection) -> bool:
    """Neither end can move but by a timer, and nothing sent is still on its way."""
    return all(ep.state in AT_REST and not ep.unreceived for ep in (conn.client, conn.server))


def _state_event(conn: Connection, role: str, ep: Endpoint, name: str, index: int) -> Event:
    entry = ep.history[index]
    if index:
        before = ep.history[index - 1]
        previous: str | None = str(before.state)
        after: float | None = round(entry.ts - before.ts, 9)
    else:
        after = None  # no bare SYN: the capture began mid-connection, from no known state
        previous = str(State.LISTEN if ep.passive else State.CLOSED) if conn.bare_syns else None
    return {"event": "state", "ts": entry.ts, "id": conn.id, "endpoint": name,
            "role": role, "from": previous, "to": str(entry.state), "after": after,
            "frame": entry.frame}


# -- the two ways of printing an event ---------------------------------------

_ENCODER = json.JSONEncoder(separators=(", ", ": "))


def event_json(event: Event) -> str:
    return _ENCODER.encode(event)


def format_event(event: Event) -> str:
    """One line of text: the time, the connection id, what happened."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"])) + f"{event['ts'] % 1:.6f}"[1:]
    head = f"{stamp} #{event['id']}"
    kind = event["event"]
    if kind == "state":
        before = event["from"] or "(mid-connection)"
        after = f" after {format_duration(event['after'])}" if event["after"] is not None else ""
        return f"{head} {event['endpoint']} {before} -> {event['to']}{after}"
    pair = f"{event['client']} > {event['server']}"
    if kind == "open":
        return f"{head} opened {pair}: {event['open']}"
    return f"{head} closed {pair}: {_close_words(event)}"


def _close_words(event: Event) -> str:
    words = [str(event["close"])]
    if event["active_closer"]:
        words.append(f"closed by {event['active_closer']}")
    if event["half_close"]:
        words.append("half-closed")
    if event["reset_by"]:
        words.append(f"reset by {event['reset_by']} in {event['reset_state']}")
    text = ", ".join(words) + f" ({format_duration(event['duration'])})"
    return text + " [revised]" if event.get("revised") else text


def format_duration(seconds: float) -> str:
    if seconds < 1e-4:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"

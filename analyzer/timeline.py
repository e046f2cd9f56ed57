"""States over time: the offline netstat census of a capture, per server endpoint and side.

`ss`/`netstat` show how many sockets sit in each state at one instant on one
host. A capture holds every instant of both hosts: each finished record
(analyzer.record's JSON dict) lists each end's transitions with their times,
so the number of connections of a server endpoint ("ip:port") whose server
side (or client side) is in TIME_WAIT at time t is the number of intervals
[entered, left) of that state that contain t.

Records arrive in the order connections finish, not in time order, and a
capture may hold millions of them; so the census is a sweep over deltas
kept in time bins, never the records: each transition adds +1 to the new
state and -1 to the old one in the bin of its time; the final state is
removed at the moment the analyzer finished the connection (its last
transition plus `final_age`: the capture's end for one still open then, or
the timer that gave it up). A sample point is a bin's upper edge and counts
every change at or before it. Bins are powers of two microseconds wide,
starting at 1 ms, doubled (and merged pairwise) whenever the capture spans
more than MAX_BINS of them: memory is bounded by endpoints x states x
MAX_BINS, whatever the number of connections. Peaks are read at the sample
points, so a peak is the largest census at any sample point (a state that
comes and goes between two samples is not seen); the census at the capture's
end is exact (the connections still there when the last segment was seen).

CLOSED and LISTEN are not counted: netstat shows no connection in CLOSED, and
LISTEN is the listening socket, not a connection.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

MAX_BINS = 512
FIRST_WIDTH_US = 1024  # 2**10 microseconds, about 1 ms
SIDES = ("server", "client")
STATES = ("SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
          "CLOSING", "LAST_ACK", "TIME_WAIT")
TOTAL = "*"  # the endpoint key of the whole capture's census

Key = tuple[str, str, str]  # (endpoint, side, state)


def micros(seconds: float) -> int:
    """A record's time (seconds, rounded to the microsecond) as whole microseconds."""
    return round(seconds * 1_000_000)


@dataclass
class Peak:
    """The largest census of one (endpoint, side, state) and the first sample time it was reached."""

    count: int
    at: float


@dataclass
class Census:
    """The sweep: deltas per (endpoint, side, state) in bins of `width` microseconds."""

    width: int = FIRST_WIDTH_US
    changes: dict[Key, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    lows: dict[Key, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    first_bin: int | None = None
    last_bin: int | None = None
    end_us: int | None = None  # the latest time seen: the capture's end
    finish_us: int | None = None  # the latest time a final state was left at
    last_finishes: dict[Key, int] = field(default_factory=lambda: defaultdict(int))  # those left then

    def add(self, rec: dict[str, Any]) -> None:
        """Count one finished record (analyzer.record's dict)."""
        endpoint = rec["server"]
        for side in SIDES:
            steps = rec["states"][side]
            if not steps:
                continue
            age = (rec.get("final_age") or {}).get(side) or 0.0
            self._side(endpoint, side, steps, micros(steps[-1][1] + age))

    def _side(self, endpoint: str, side: str, steps: list[list[Any]], finish: int) -> None:
        previous = None
        for state, ts, _frame in steps:
            when = micros(ts)
            if previous in STATES:
                self._change(endpoint, side, previous, when, -1)
            if state in STATES:
                self._change(endpoint, side, state, when, +1)
            previous = state
        if previous in STATES:
            self._finish(endpoint, side, previous, finish)

    def _change(self, endpoint: str, side: str, state: str, when: int, delta: int) -> None:
        index = -(-when // self.width)  # the first sample point at or after `when`
        self._note_bin(index, when)
        index = -(-when // self.width)  # the width may have doubled
        for name in (endpoint, TOTAL):
            self.changes[(name, side, state)][index] += delta

    def _finish(self, endpoint: str, side: str, state: str, when: int) -> None:
        """The final state ends at `when`: still counted at a sample point equal to it."""
        index = when // self.width + 1
        self._note_bin(index, when)
        index = when // self.width + 1
        for name in (endpoint, TOTAL):
            self.lows[(name, side, state)][index] -= 1
        if self.finish_us is None or when > self.finish_us:
            self.finish_us = when
            self.last_finishes.clear()
        if when == self.finish_us:
            for name in (endpoint, TOTAL):
                self.last_finishes[(name, side, state)] += 1

    def _note_bin(self, index: int, when: int) -> None:
        self.end_us = when if self.end_us is None else max(self.end_us, when)
        self.first_bin = index if self.first_bin is None else min(self.first_bin, index)
        self.last_bin = index if self.last_bin is None else max(self.last_bin, index)
        while self.last_bin - self.first_bin >= MAX_BINS:
            self._double()

    def _double(self) -> None:
        """Twice as wide bins: index k becomes ceil(k/2), for both tables.

        `changes` sit at ceil(t/w), and ceil(t/2w) = ceil(ceil(t/w)/2); `lows` at floor(t/w)+1, and
        floor(t/2w)+1 = floor((k-1)/2)+1, which is ceil(k/2) for an integer k."""
        self.width *= 2
        for table in (self.changes, self.lows):
            for key, bins in table.items():
                merged: dict[int, int] = defaultdict(int)
                for index, delta in bins.items():
                    merged[-(-index // 2)] += delta
                table[key] = merged
        assert self.first_bin is not None and self.last_bin is not None
        self.first_bin = -(-self.first_bin // 2)
        self.last_bin = -(-self.last_bin // 2)

    @property
    def at_end(self) -> dict[Key, int]:
        """The final states still held at the capture's end (left at the latest time of all)."""
        return self.last_finishes if self.finish_us == self.end_us else {}

    def endpoints(self) -> list[str]:
        """The server endpoints counted, in order of their names (the total not included)."""
        return sorted({key[0] for key in (*self.changes, *self.lows)} - {TOTAL})

    def series(self, endpoint: str, side: str) -> tuple[list[float], dict[str, list[int]]]:
        """Sample times (seconds) and the census of each state at them, the capture's end last."""
        if self.first_bin is None or self.last_bin is None or self.end_us is None:
            return [], {}
        indexes = range(self.first_bin, min(self.last_bin, (self.end_us - 1) // self.width) + 1)
        times = [index * self.width / 1e6 for index in indexes] + [self.end_us / 1e6]
        counts: dict[str, list[int]] = {}
        for state in STATES:
            key = (endpoint, side, state)
            if key not in self.changes:
                continue
            ups, downs, total, values = self.changes[key], self.lows.get(key, {}), 0, []
            for index in indexes:
                total += ups.get(index, 0) + downs.get(index, 0)
                values.append(total)
            values.append(self.at_end.get(key, 0))
            counts[state] = values
        return times, counts

    def peaks(self, endpoint: str, side: str) -> dict[str, Peak]:
        """Each state's largest census and when (the first sample time it was reached)."""
        times, counts = self.series(endpoint, side)
        result = {}
        for state, values in counts.items():
            top = max(values)
            if top > 0:
                result[state] = Peak(top, times[values.index(top)])
        return result

    def end_census(self, endpoint: str, side: str) -> dict[str, int]:
        """The states of connections still there at the capture's end (what `ss` would have shown)."""
        at_end = self.at_end
        return {state: at_end[(endpoint, side, state)] for state in STATES if at_end.get((endpoint, side, state))}

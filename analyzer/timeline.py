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
COUNTED = frozenset(STATES)
END_SLACK_US = 2  # a final state held "at the end" if it ended this close to the end: a last transition
# and its final_age are each rounded to the microsecond, so their sum may miss the end by one

Key = tuple[str, str, str]  # (endpoint, side, state)


def micros(seconds: float) -> int:
    """A record's time (seconds, rounded to the microsecond) as whole microseconds."""
    return round(seconds * 1_000_000)


@dataclass
class Peak:
    """The largest census of one (endpoint, side, state) and the first sample time it was reached."""

    count: int
    at: float


Bins = dict[int, int]  # sample index -> change of the census there


def _bins() -> defaultdict[str, Bins]:
    return defaultdict(lambda: defaultdict(int))


@dataclass
class Census:
    """The sweep: per (endpoint, side), per state, the census's changes in bins of `width` microseconds.

    `changes` hold the transitions (at the first sample point at or after them), `lows` the ends of the
    final states (at the first sample point after them: still counted at a point equal to the end). The
    whole capture's census (TOTAL) is the sum over endpoints, made when asked for."""

    width: int = FIRST_WIDTH_US
    changes: dict[tuple[str, str], defaultdict[str, Bins]] = field(default_factory=lambda: defaultdict(_bins))
    lows: dict[tuple[str, str], defaultdict[str, Bins]] = field(default_factory=lambda: defaultdict(_bins))
    first_bin: int | None = None
    last_bin: int | None = None
    end_us: int | None = None  # the latest time seen: the capture's end
    finish_us: int | None = None  # the latest time a final state was left at
    last_finishes: dict[Key, int] = field(default_factory=lambda: defaultdict(int))  # those left then

    def add(self, rec: dict[str, Any]) -> None:
        """Count one finished record (analyzer.record's dict)."""
        endpoint = rec["server"]
        ages = rec.get("final_age") or {}
        for side in SIDES:
            steps = rec["states"][side]
            if steps:
                times = [round(step[1] * 1_000_000) for step in steps]
                finish = times[-1] + micros(ages.get(side) or 0.0)
                self._span(min(times), max(finish, *times))
                self._side(endpoint, side, steps, times, finish)

    def _side(self, endpoint: str, side: str, steps: list[list[Any]], times: list[int], finish: int) -> None:
        width, table, previous = self.width, self.changes[(endpoint, side)], None
        for step, when in zip(steps, times, strict=True):
            index = -(-when // width)  # the first sample point at or after `when`
            if previous is not None:
                table[previous][index] -= 1
            previous = step[0] if step[0] in COUNTED else None
            if previous is not None:
                table[previous][index] += 1
        if previous is not None:
            self._finish(endpoint, side, previous, finish)

    def _finish(self, endpoint: str, side: str, state: str, when: int) -> None:
        """The final state ends at `when`: still counted at a sample point equal to it."""
        self.lows[(endpoint, side)][state][when // self.width + 1] -= 1
        if self.finish_us is None or when > self.finish_us + END_SLACK_US:
            self.last_finishes.clear()
        if self.finish_us is None or when > self.finish_us:
            self.finish_us = when
        if when >= self.finish_us - END_SLACK_US:
            self.last_finishes[(endpoint, side, state)] += 1

    def _span(self, first: int, last: int) -> None:
        """Make room for times from `first` to `last` (microseconds): bins doubled until they fit."""
        self.end_us = last if self.end_us is None else max(self.end_us, last)
        low, high = -(-first // self.width), last // self.width + 1
        self.first_bin = low if self.first_bin is None else min(self.first_bin, low)
        self.last_bin = high if self.last_bin is None else max(self.last_bin, high)
        while self.last_bin - self.first_bin >= MAX_BINS:
            self._double()

    def _double(self) -> None:
        """Twice as wide bins: index k becomes ceil(k/2), for both tables.

        `changes` sit at ceil(t/w), and ceil(t/2w) = ceil(ceil(t/w)/2); `lows` at floor(t/w)+1, and
        floor(t/2w)+1 = floor((k-1)/2)+1, which is ceil(k/2) for an integer k."""
        self.width *= 2
        for table in (self.changes, self.lows):
            for states in table.values():
                for state, bins in states.items():
                    merged: Bins = defaultdict(int)
                    for index, delta in bins.items():
                        merged[-(-index // 2)] += delta
                    states[state] = merged
        assert self.first_bin is not None and self.last_bin is not None
        self.first_bin = -(-self.first_bin // 2)
        self.last_bin = -(-self.last_bin // 2)

    def _table(self, table: dict[tuple[str, str], defaultdict[str, Bins]], endpoint: str,
               side: str) -> dict[str, Bins]:
        """One endpoint's bins per state, or for TOTAL the sum over endpoints."""
        if endpoint != TOTAL:
            return table.get((endpoint, side), {})
        merged: defaultdict[str, Bins] = _bins()
        for (_name, which), states in table.items():
            if which == side:
                for state, bins in states.items():
                    for index, delta in bins.items():
                        merged[state][index] += delta
        return merged

    def end_census(self, endpoint: str, side: str) -> dict[str, int]:
        """The states of connections still there at the capture's end (what `ss` would have shown then)."""
        if self.finish_us is None or self.end_us is None or self.finish_us < self.end_us - END_SLACK_US:
            return {}
        counts = dict.fromkeys(STATES, 0)
        if endpoint == TOTAL:
            for (_name, which, state), n in self.last_finishes.items():
                counts[state] += n if which == side else 0
        else:
            for state in STATES:
                counts[state] = self.last_finishes.get((endpoint, side, state), 0)
        return {state: n for state, n in counts.items() if n}

    def endpoints(self) -> list[str]:
        """The server endpoints counted, in order of their names."""
        return sorted({key[0] for key in (*self.changes, *self.lows)})

    def series(self, endpoint: str, side: str) -> tuple[list[float], dict[str, list[int]]]:
        """Sample times (seconds) and the census of each state at them, the capture's end last."""
        if self.first_bin is None or self.last_bin is None or self.end_us is None:
            return [], {}
        indexes = range(self.first_bin, min(self.last_bin, (self.end_us - 1) // self.width) + 1)
        times = [index * self.width / 1e6 for index in indexes] + [self.end_us / 1e6]
        changes, lows = self._table(self.changes, endpoint, side), self._table(self.lows, endpoint, side)
        at_end = self.end_census(endpoint, side)
        counts: dict[str, list[int]] = {}
        for state in STATES:
            if state not in changes:
                continue
            ups, downs, total, values = changes[state], lows.get(state, {}), 0, []
            for index in indexes:
                total += ups.get(index, 0) + downs.get(index, 0)
                values.append(total)
            values.append(at_end.get(state, 0))
            counts[state] = values
        return times, counts

    def peaks(self, endpoint: str, side: str) -> dict[str, Peak]:
        """Each state's largest census and when (the first sample time it was reached), as `series` has
        them; computed over the bins that change only (the census is flat between them), so an endpoint
        with few connections costs little however many sample points the capture has."""
        if self.first_bin is None or self.end_us is None:
            return {}
        last = (self.end_us - 1) // self.width  # the last sample point before the capture's end
        changes, lows = self._table(self.changes, endpoint, side), self._table(self.lows, endpoint, side)
        at_end = self.end_census(endpoint, side)
        result = {}
        for state in STATES:
            if state not in changes:
                continue
            ups, downs = changes[state], lows.get(state, {})
            top, top_at, total = 0, 0.0, 0
            for index in sorted({*ups, *downs}):
                if index > last:
                    break
                total += ups.get(index, 0) + downs.get(index, 0)
                if total > top:
                    top, top_at = total, index * self.width / 1e6
            if at_end.get(state, 0) > top:
                top, top_at = at_end[state], self.end_us / 1e6
            if top > 0:
                result[state] = Peak(top, top_at)
        return result

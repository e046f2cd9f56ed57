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

import numpy as np

from analyzer.columns import STATE_NAMES, Batch

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
_COUNTED = np.array([name in COUNTED for name in STATE_NAMES])  # by state index (columns.STATE_NAMES)
_SIDE_NAMES = ("client", "server")  # a step's side: columns.Batch.step_server


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
        """Count one finished record (analyzer.record's dict, or as much of it as the census reads)."""
        self.add_batch(Batch.of_records([rec]))

    def add_batch(self, batch: Batch) -> None:
        """Count a batch of finished records (columns.py), as if added one by one in their order."""
        if not len(batch.steps):
            return
        names, endpoint = batch.endpoints
        record, server = batch.step_record, batch.step_server
        state = batch.step_states
        times = np.round(batch.step_times * 1_000_000).astype(np.int64)  # micros(), step by step
        group = record * 2 + server  # one group per (record, side), in order
        last = np.ones(len(group), dtype=bool)
        last[:-1] = group[1:] != group[:-1]
        ages = np.where(server, batch.number("age_server")[record], batch.number("age_client")[record])
        finish = times[last] + np.round(ages[last] * 1_000_000).astype(np.int64)
        self._span(int(times.min()), int(max(times.max(), finish.max())))
        counted = _COUNTED[state]
        where = (endpoint[record], server.astype(np.int64))
        for key in np.flatnonzero(np.bincount(where[0] * 2 + where[1])).tolist():
            self.changes[(names[key // 2], _SIDE_NAMES[key % 2])]  # the side is seen, even with no state counted
        index = -(-times // self.width)  # the first sample point at or after each transition
        follows = np.zeros(len(group), dtype=bool)  # a step whose previous step (same side) was counted
        follows[1:] = (group[1:] == group[:-1]) & counted[:-1]
        ups, downs = np.flatnonzero(counted), np.flatnonzero(follows)
        self._add(self.changes, names, [np.concatenate([column[ups], column[downs]]) for column in where]
                  + [np.concatenate([state[ups], state[downs - 1]]), np.concatenate([index[ups], index[downs]])],
                  np.concatenate([np.ones(len(ups)), -np.ones(len(downs))]))
        self._finishes(names, [column[last] for column in where] + [state[last]], finish, counted[last],
                       record[last], server[last])

    def _finishes(self, names: list[str], keys: list[np.ndarray], finish: np.ndarray, counted: np.ndarray,
                  record: np.ndarray, server: np.ndarray) -> None:
        """The final states end at `finish`: still counted at a sample point equal to it. The connections
        left at the capture's end are those that ended within END_SLACK_US of the latest end seen so far
        (as each record came: the server side before the client side), since the last end that came more
        than END_SLACK_US after all before it."""
        keys, finish = [column[counted] for column in keys], finish[counted]
        if not len(finish):
            return
        self._add(self.lows, names, [*keys, finish // self.width + 1], -np.ones(len(finish)))
        order = np.lexsort((~server[counted], record[counted]))  # by record, its server side first
        keys, finish = [column[order] for column in keys], finish[order]
        latest = np.maximum.accumulate(finish)
        if self.finish_us is not None:
            latest = np.maximum(latest, self.finish_us)
        before = np.concatenate([[latest[0] if self.finish_us is None else self.finish_us], latest[:-1]])
        clears = finish > before + END_SLACK_US
        if self.finish_us is None:
            clears[0] = True
        kept = finish >= latest - END_SLACK_US
        if clears.any():
            self.last_finishes.clear()
            kept[:np.flatnonzero(clears)[-1]] = False
        self.finish_us = int(latest[-1])
        for key in zip(*(column[kept].tolist() for column in keys), strict=True):
            self.last_finishes[(names[key[0]], _SIDE_NAMES[key[1]], STATE_NAMES[key[2]])] += 1

    def _add(self, table: dict[tuple[str, str], defaultdict[str, Bins]], names: list[str],
             keys: list[np.ndarray], deltas: np.ndarray) -> None:
        """Add `deltas` at (endpoint, side, state, bin index) `keys`, summed per key first."""
        if not len(deltas):
            return
        name, side, state, index = keys
        low = int(index.min())
        span = int(index.max()) - low + 1
        code = ((name * 2 + side) * len(STATE_NAMES) + state) * span + (index - low)  # one integer per key
        if int(code.max()) < 4 * len(code) + (1 << 20):  # few keys possible: count them all, no sort
            present = np.bincount(code)
            unique = np.flatnonzero(present)
            sums = np.bincount(code, weights=deltas)[unique]
        else:
            unique, inverse = np.unique(code, return_inverse=True)
            sums = np.bincount(inverse.reshape(-1), weights=deltas, minlength=len(unique))
        groups: dict[int, Bins] = {}  # (name, side, state) code -> its bins
        for key, delta in zip(unique.tolist(), sums.tolist(), strict=True):
            group, offset = divmod(key, span)
            bins = groups.get(group)
            if bins is None:
                rest, state_index = divmod(group, len(STATE_NAMES))
                bins = groups[group] = self._bins(table, names[rest // 2], rest % 2, state_index)
            bins[offset + low] += int(delta)

    @staticmethod
    def _bins(table: dict[tuple[str, str], defaultdict[str, Bins]], name: str, side: int, state: int) -> Bins:
        return table[(name, _SIDE_NAMES[side])][STATE_NAMES[state]]

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

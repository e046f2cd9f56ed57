"""The connection table: segments in, finished connections out.

Connections are keyed by the bidirectional 4-tuple, the VLAN ids (the first
two tags met, as Zeek's vlan and inner_vlan) and the VXLAN/Geneve network id
of any tunnel: two VLANs or two virtual networks reusing one 4-tuple carry
two connections. Other tunnel identities (outer addresses, GRE keys, MPLS
labels, GTP TEIDs) are not in the key: they differ by direction, or change on
the way, while the inner connection is one (Zeek keys them alike). A bare SYN with a new
ISN on a known 4-tuple ends the old connection and starts a new one (port
reuse), and an end of the old one still in TIME_WAIT leaves it at that SYN
(RFC 6191: connection.py); a retransmitted or reordered SYN with the old ISN
does not.

Memory stays bounded by the number of *open* connections: a connection is
finished and handed back once both ends are gone (after a short linger for
stray segments), once its TIME_WAIT has run 2·MSL, or once it has been idle
past a timeout. A handshake that never completes gets a shorter timeout, as
in the kernel, so a flood of SYNs cannot grow the table without bound. All of
this runs on packet time; the clock is never read.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from analyzer.connection import Connection, Timeouts
from analyzer.decode import Segment

Key = tuple[tuple[bytes, int], tuple[bytes, int], tuple[int, ...], int]


def connection_key(seg: Segment) -> Key:
    a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
    return (a, b, seg.vlan, seg.vni) if a <= b else (b, a, seg.vlan, seg.vni)


class Tracker:
    """Routes segments to connections and retires connections on packet time."""

    def __init__(self, timeouts: Timeouts | None = None, keep_segments: bool = False,
                 on_segment: Callable[[Connection, Segment], None] | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self.keep_segments = keep_segments
        self.on_segment = on_segment
        self.open: dict[Key, Connection] = {}
        self._heap: list[tuple[float, int, Connection]] = []
        self._next_id = 0
        self.now = float("-inf")
        self.last_segment_ts = float("-inf")  # the capture's end, for the flush (not a live tick's clock)

    def add(self, seg: Segment) -> list[Connection]:
        """Feed one segment; return the connections that finished before it."""
        finished = list(self.expire(seg.ts))
        self.last_segment_ts = max(self.last_segment_ts, seg.ts)
        key = connection_key(seg)
        conn = self.open.get(key)
        if conn is not None and conn.starts_anew(seg):
            finished.append(self._retire(key, conn, seg.ts, reused_by=seg))
            conn = None
        if conn is None:
            conn = Connection(self._next_id, seg, self.timeouts, self.keep_segments)
            self._next_id += 1
            self.open[key] = conn
        conn.add(seg)
        wake = conn.wake_time()
        if wake < conn.scheduled:
            conn.scheduled = wake
            heapq.heappush(self._heap, (wake, conn.id, conn))
            self._drop_superseded()
        if self.on_segment is not None:
            self.on_segment(conn, seg)
        return finished

    def expire(self, now: float) -> Iterator[Connection]:
        """Finish the connections whose timers packet time `now` has passed."""
        if now <= self.now:
            return
        self.now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, conn = heapq.heappop(heap)
            if when != conn.scheduled:
                continue  # superseded by an earlier wake-up
            conn.advance(now)
            wake = conn.wake_time()
            if wake <= now:
                yield self._retire(connection_key_of(conn), conn, wake)
            else:
                conn.scheduled = wake
                heapq.heappush(heap, (wake, conn.id, conn))

    def _drop_superseded(self) -> None:
        """Rebuild the heap once superseded entries outnumber the live ones.

        A wake-up that moves earlier pushes a new entry and leaves the old one
        behind; left there, the old entry would keep its (finished) connection
        in memory until its time came, up to the idle timeout later. Rebuilding
        when the heap is twice the open table keeps memory bounded by the open
        connections, at an amortized constant cost per push.
        """
        heap = self._heap
        if len(heap) > 2 * len(self.open) + 64:
            self._heap = [(c.scheduled, c.id, c) for c in self.open.values()]
            heapq.heapify(self._heap)

    def flush(self, at: float | None = None) -> list[Connection]:
        """End of input: finish everything still open, in order of first packet, at the time of
        the last segment (a live capture's last tick may be later: a file has no record of it), or
        at packet time `at` (a capture replayed in part ends where the whole one did: ladder_source)."""
        end = self.last_segment_ts if at is None else at
        remaining = sorted(self.open.items(), key=lambda item: item[1].id)
        return [self._retire(key, conn, end) for key, conn in remaining]

    def _retire(self, key: Key, conn: Connection, at: float, reused_by: Segment | None = None) -> Connection:
        """Finish `conn` at packet time `at`: its timer's, the reusing SYN's (`reused_by`: TIME_WAIT ends
        there, connection.py), or the capture's end."""
        if self.open.get(key) is conn:
            del self.open[key]
        conn.scheduled = float("nan")  # any heap entry left for it is now stale
        conn.finish(at, reused_by)
        return conn


def connection_key_of(conn: Connection) -> Key:
    a = (conn.client.addr, conn.client.port)
    b = (conn.server.addr, conn.server.port)
    return (a, b, conn.vlan, conn.vni) if a <= b else (b, a, conn.vlan, conn.vni)

"""Build a TCP conversation segment by segment, with real sequence arithmetic.

    w = Wire()
    w.c("S"); w.s("SA"); w.c("A")          # the three-way handshake
    w.c("PA", data=10); w.s("A")
    conns = w.analyze()

Each side keeps its own snd_nxt. By default a segment acknowledges everything
the peer has sent so far; `ack=N` acknowledges up to the peer's ISN + N
instead (as tcpdump's relative numbers count), which is how crossing segments
are written. `seq=N` (relative to the sender's ISN) re-sends old sequence
space: retransmissions and keep-alive probes.
"""

from __future__ import annotations

import ipaddress

from analyzer.connection import Connection, Timeouts
from analyzer.decode import ACK, FIN, PSH, RST, SYN, Segment
from analyzer.tracker import Tracker

FLAG_LETTERS = {"S": SYN, "A": ACK, "F": FIN, "R": RST, "P": PSH}
MOD = 1 << 32


class Wire:
    def __init__(self, client: str = "10.0.0.1:40000", server: str = "10.0.0.2:80",
                 isn_c: int = 1000, isn_s: int = 5000, t0: float = 100.0, dt: float = 0.01) -> None:
        self.addr = {"c": _endpoint(client), "s": _endpoint(server)}
        self.isn = {"c": isn_c, "s": isn_s}
        self.nxt = {"c": isn_c, "s": isn_s}
        self.t, self.dt = t0, dt
        self.segments: list[Segment] = []

    def c(self, flags: str, **kw: int | float) -> Segment:
        return self.send("c", flags, **kw)

    def s(self, flags: str, **kw: int | float) -> Segment:
        return self.send("s", flags, **kw)

    def wait(self, seconds: float) -> None:
        self.t += seconds

    def send(self, who: str, flags: str, data: int = 0, ack: int | None = None,
             seq: int | None = None, at: float | None = None) -> Segment:
        peer = "s" if who == "c" else "c"
        bits = sum(FLAG_LETTERS[letter] for letter in flags)
        start = self.nxt[who] if seq is None else (self.isn[who] + seq) % MOD
        length = data + (1 if bits & SYN else 0) + (1 if bits & FIN else 0)
        end = (start + length) % MOD
        if (end - self.nxt[who]) % MOD < (1 << 31):
            self.nxt[who] = end
        ack_value = 0
        if bits & ACK:
            ack_value = self.nxt[peer] if ack is None else (self.isn[peer] + ack) % MOD
        self.t = self.t + self.dt if at is None else at
        (src, sport), (dst, dport) = self.addr[who], self.addr[peer]
        segment = Segment(len(self.segments) + 1, self.t, 4 if len(src) == 4 else 6, src, dst,
                          sport, dport, start, ack_value, bits, data, 65535)
        self.segments.append(segment)
        return segment

    def analyze(self, timeouts: Timeouts | None = None, keep_segments: bool = False) -> list[Connection]:
        tracker = Tracker(timeouts, keep_segments)
        done: list[Connection] = []
        for segment in self.segments:
            done.extend(tracker.add(segment))
        done.extend(tracker.flush())
        return done

    def one(self, timeouts: Timeouts | None = None, keep_segments: bool = False) -> Connection:
        conns = self.analyze(timeouts, keep_segments)
        assert len(conns) == 1, [c.labels for c in conns]
        return conns[0]


def _endpoint(text: str) -> tuple[bytes, int]:
    host, _, port = text.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")).packed, int(port)


def path(conn: Connection, side: str) -> list[str]:
    """An endpoint's history as 'STATE@frame' strings (frame '-' for a timer)."""
    ep = conn.client if side == "client" else conn.server
    return [f"{t.state}@{t.frame if t.frame is not None else '-'}" for t in ep.history]


def handshake(w: Wire) -> None:
    w.c("S")
    w.s("SA")
    w.c("A")

"""Findings: what a capture says about each server endpoint, with the evidence and the advice that fits.

`Tally` reads finished records (analyzer.record's dicts) once, in the order
they come, and keeps per server endpoint ("ip:port") only counts, the first
few examples of each kind (connection id and frame) and bounded histograms:
memory grows with endpoints, never with connections. Each finding kind is a
small function over the tally (and the census of timeline.py) returning
`Finding`s; FINDERS lists them in the order a report shows them.

The advice states Linux's behaviour (tcp(7), Documentation/networking/ip-sysctl):
tcp_fin_timeout bounds orphaned FIN_WAIT_2, it does not shorten TIME_WAIT
(fixed at 60 s, TCP_TIMEWAIT_LEN); tcp_tw_reuse lets *outgoing* connections
reuse a TIME_WAIT 4-tuple; a full accept queue drops the third ACK (with
tcp_abort_on_overflow 0) and the server resends its SYN-ACK; a full SYN queue
drops SYNs unless SYN cookies answer them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analyzer.timeline import Census

EXAMPLES = 3
RTT_BINS_PER_DECADE = 50
MIN_PILE = 50  # TIME_WAIT at once on one endpoint's side before it is called a pile (synfin report --min-time-wait)
MIN_LINGER = 10.0  # seconds a FIN_WAIT_2 must have lasted at the capture's end
SLOW_RTT = 0.2  # seconds: a median handshake this slow is reported


@dataclass
class Limits:
    """What the finders need besides the records: 2*MSL, and the thresholds (synfin report's options)."""

    msl: float = 30.0
    min_pile: int = MIN_PILE
OVERFLOW_NOTE = "resent its SYN-ACK after the ACK of it"


@dataclass
class Finding:
    """One finding: `kind`, the server endpoint, how many, the evidence and the advice."""

    kind: str
    endpoint: str
    count: int
    evidence: dict[str, Any]
    advice: str
    examples: list[tuple[int, int]] = field(default_factory=list)  # (connection id, frame)

    def json(self) -> dict[str, Any]:
        return {"kind": self.kind, "endpoint": self.endpoint, "count": self.count, "evidence": self.evidence,
                "advice": self.advice, "examples": [{"id": i, "frame": f} for i, f in self.examples]}


@dataclass
class Group:
    """Counts of one kind of event at one endpoint, with its first examples."""

    count: int = 0
    examples: list[tuple[int, int]] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    ages: list[float] = field(default_factory=list)  # the first EXAMPLES final ages
    max_age: float = 0.0

    def note(self, rec: dict[str, Any], frame: int, when: float | None = None, age: float | None = None) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append((rec["id"], frame))
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        if age is not None:
            self.max_age = max(self.max_age, age)
            if len(self.ages) < EXAMPLES:
                self.ages.append(age)


@dataclass
class Endpoint:
    """What the tally keeps for one server endpoint."""

    connections: int = 0
    handshakes: int = 0  # handshakes completed without any SYN or SYN-ACK resent
    groups: dict[str, Group] = field(default_factory=lambda: defaultdict(Group))
    rtt: Counter[int] = field(default_factory=Counter)  # log-scale bins of handshake_rtt.total
    retransmits: Counter[str] = field(default_factory=Counter)


class Tally:
    """Per-endpoint counts over finished records; `add` each record, then run `findings`."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = defaultdict(Endpoint)
        self.records = 0

    def add(self, rec: dict[str, Any]) -> None:
        self.records += 1
        end = self.endpoints[rec["server"]]
        end.connections += 1
        retx = rec["retransmits"]
        end.retransmits.update({k: v for k, v in retx.items() if v})
        if rec["open"] == "handshake" and not retx["syn"] and not retx["synack"]:
            end.handshakes += 1
        rtt = (rec.get("handshake_rtt") or {}).get("total")
        if rtt is not None and rtt > 0:
            end.rtt[math.floor(math.log10(rtt) * RTT_BINS_PER_DECADE)] += 1
        for kind, frame, when, age in events(rec):
            end.groups[kind].note(rec, frame, when, age)


def events(rec: dict[str, Any]) -> list[tuple[str, int, float | None, float | None]]:
    """The notable things about one record: (group name, frame, time, age at the end)."""
    found: list[tuple[str, int, float | None, float | None]] = []
    ages = rec.get("final_age") or {}
    for side in ("server", "client"):
        steps = rec["states"][side]
        for state, ts, frame in steps:
            if state == "TIME_WAIT":
                found.append((f"time-wait:{side}", frame or rec["last_frame"], ts, None))
        final = rec["final"][side]
        if final in ("CLOSE_WAIT", "FIN_WAIT_2") and steps:
            found.append((f"{final}:{side}", steps[-1][2] or rec["last_frame"], steps[-1][1], ages.get(side) or 0.0))
    if rec["open"] in ("refused", "unanswered"):
        found.append((rec["open"], rec["first_frame"], rec["start"], None))
    if rec["close"] == "reset":
        found.append((f"reset:{rec['reset_by']}:{rec['reset_state']}", rec["last_frame"], rec["end"], None))
    overflow = [a["frame"] for a in rec.get("anomalies") or [] if OVERFLOW_NOTE in a["what"]]
    if overflow or rec["retransmits"]["syn"]:
        found.append(("overflow", overflow[0] if overflow else rec["first_frame"], rec["start"], None))
    if rec.get("keepalives"):
        found.append(("keepalive", rec["first_frame"], rec["start"], None))
    return found


def rtt_percentile(bins: Counter[int], share: float) -> float | None:
    """The handshake time below which `share` of them fall (to the bin: within 5%), in seconds."""
    total = sum(bins.values())
    if not total:
        return None
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= share * total:
            return round(10 ** ((index + 0.5) / RTT_BINS_PER_DECADE), 6)
    return None


ADVICE = {
    "time-wait-pile:server": (
        "The server closes first, so the server holds each connection's TIME_WAIT for 2*MSL (60 s on Linux, "
        "fixed: TCP_TIMEWAIT_LEN). TIME_WAIT sockets cost little memory and do not block the listening port; "
        "they matter when they reach net.ipv4.tcp_max_tw_buckets (beyond it a closing socket skips TIME_WAIT "
        "and the kernel counts TcpExtTCPTimeWaitOverflow, see `nstat -az`). Fixes: let the client close "
        "first (HTTP: the client ends the exchange), or keep connections alive and reuse them. "
        "net.ipv4.tcp_fin_timeout does NOT shorten "
        "TIME_WAIT on Linux (it bounds orphaned FIN_WAIT_2); net.ipv4.tcp_tw_reuse helps only outgoing "
        "connections, not a server's accepted ones; SO_REUSEADDR lets a restarted server bind its port while "
        "old connections are in TIME_WAIT, nothing more."),
    "time-wait-pile:client": (
        "The clients close first, so each client host holds TIME_WAIT for 2*MSL (60 s on Linux) per "
        "connection, with an ephemeral port tied up in each: at a high rate of new connections to one server "
        "address and port they run out of ports (connect() fails with EADDRNOTAVAIL). Fixes: reuse connections "
        "(keep-alive, pooling); net.ipv4.tcp_tw_reuse=1 (the default 2 covers loopback only) lets outgoing "
        "connections reuse a TIME_WAIT 4-tuple when TCP timestamps are on; widen "
        "net.ipv4.ip_local_port_range. net.ipv4.tcp_fin_timeout does not shorten TIME_WAIT."),
    "close-wait-leak": (
        "The peer sent its FIN and this end's kernel acknowledged it, but the application never called close(): "
        "CLOSE_WAIT lasts until it does, there is no timer. The application leaks sockets: find the code path "
        "that stops reading at end-of-file (read() returning 0) or on an error without closing the socket (a "
        "missing close/finally, a connection pool that never evicts dead connections). No sysctl fixes this."),
    "fin-wait-2": (
        "This end closed and the peer acknowledged the FIN but never sent its own: the peer's application "
        "has not closed (it sits in CLOSE_WAIT there). On Linux an orphaned FIN_WAIT_2 (the application "
        "closed fully) is dropped after net.ipv4.tcp_fin_timeout (60 s); one the application only shut down "
        "for writing waits as long as the application does. Fix the peer; use a read timeout here."),
    "listen-overflow": (
        "Handshakes to this endpoint were dropped while others completed: the listen queues were full. A SYN "
        "resent by the client means the SYN was dropped (SYN queue full, or the accept queue full: Linux then "
        "drops new SYNs too); a SYN-ACK resent after the client's ACK means the ACK was dropped because the "
        "accept queue was full (tcp_abort_on_overflow=0). Each drop costs the client a retransmission "
        "timeout (1 s, then 2, 4...). Fixes: accept() faster (more workers, no blocking in the accept loop); "
        "a larger listen() backlog, which Linux caps at net.core.somaxconn; net.ipv4.tcp_max_syn_backlog for "
        "the SYN queue; keep net.ipv4.tcp_syncookies=1 so a full SYN queue answers with cookies. "
        "Check with `ss -lnt` (Recv-Q vs Send-Q) and `nstat -az TcpExtListenOverflows TcpExtListenDrops`."),
    "refused": (
        "SYNs answered by RST: nothing listens on this port (or a firewall rejects with tcp-reset). Check that "
        "the service runs and listens on this address (`ss -lnt`), and that clients use the right port."),
    "unanswered": (
        "SYNs with no answer at all: the server host is down or unreachable, or a firewall drops them "
        "silently, or the packets were not captured. Clients wait through their SYN retries "
        "(net.ipv4.tcp_syn_retries: about 127 s on Linux)."),
    "keepalive": (
        "TCP keep-alive probes were seen (SO_KEEPALIVE): fine for finding dead peers of idle connections; on "
        "Linux the first probe goes after net.ipv4.tcp_keepalive_time (7200 s) unless the application sets "
        "TCP_KEEPIDLE."),
    "slow-handshake": (
        "Handshakes take long: the SYN -> SYN-ACK part is the network path to the server plus the server's "
        "turnaround; a slow SYN-ACK with a fast network points at a busy server (see listen-overflow) or a "
        "SYN-cookie fallback; a slow final ACK points at the client's side of the path."),
}

RESET_ADVICE = {
    "ESTABLISHED": (
        "{by} reset connections in ESTABLISHED: an abortive close. Linux sends RST instead of FIN when the "
        "application closes with SO_LINGER set to 0, or closes a socket with data still unread in its receive "
        "buffer (RFC 2525), or the process exits/crashes. Intended (linger-0 to avoid TIME_WAIT) it is a "
        "choice: the peer loses data in flight and sees ECONNRESET; otherwise read everything before close() "
        "or shutdown(SHUT_WR) first."),
    "SYN_RCVD": (
        "{by} reset connections in SYN_RCVD: the handshake was refused after the SYN-ACK (the accept queue "
        "overflowed with net.ipv4.tcp_abort_on_overflow=1, or an ACK that did not fit the handshake)."),
    "after-fin": (
        "{by} reset connections after the close had begun ({state}): data arrived for a socket that was "
        "already closed (the peer kept sending after this end's close(): the application protocol disagrees "
        "about who stops first), or a linger-0 close after a half-close."),
}


def reset_advice(by: str, state: str) -> str:
    key = state if state in RESET_ADVICE else "after-fin"
    return RESET_ADVICE[key].format(by=f"The {by}", state=state)


def time_wait_piles(tally: Tally, census: Census, limits: Limits) -> list[Finding]:
    """Endpoints whose one side held at least `limits.min_pile` TIME_WAIT at once."""
    found = []
    for name, end in tally.endpoints.items():
        for side in ("server", "client"):
            group = end.groups.get(f"time-wait:{side}")
            peak = census.peaks(name, side).get("TIME_WAIT")
            if group is None or peak is None or peak.count < limits.min_pile:
                continue
            span = (group.last or 0.0) - (group.first or 0.0)
            rate = group.count / span if span > 0 else None
            evidence = {"side": side, "peak": peak.count, "peak_at": peak.at, "closes": group.count,
                        "closes_per_second": round(rate, 3) if rate else None,
                        "steady_state": round(rate * 2 * limits.msl) if rate else None,
                        "at_end": census.end_census(name, side).get("TIME_WAIT", 0)}
            found.append(Finding("time-wait-pile", name, peak.count, evidence,
                                 ADVICE[f"time-wait-pile:{side}"], group.examples))
    return found


LINGERING = (("CLOSE_WAIT", "close-wait-leak", 0.0), ("FIN_WAIT_2", "fin-wait-2", MIN_LINGER))


def lingering(tally: Tally, census: Census, limits: Limits) -> list[Finding]:
    """CLOSE_WAIT at the capture's end (any age: it has no timer) and FIN_WAIT_2 older than MIN_LINGER."""
    found = []
    for name, end in tally.endpoints.items():
        for side in ("server", "client"):
            for state, kind, least in LINGERING:
                group = end.groups.get(f"{state}:{side}")
                if group is None or group.max_age < least:
                    continue
                evidence = {"side": side, "state": state, "max_age": group.max_age, "ages": group.ages}
                found.append(Finding(kind, name, group.count, evidence, ADVICE[kind], group.examples))
    return found


def listen_overflows(tally: Tally, census: Census, limits: Limits) -> list[Finding]:
    found = []
    for name, end in tally.endpoints.items():
        group = end.groups.get("overflow")
        if group is None or end.handshakes == 0:
            continue
        evidence = {"dropped_handshakes": group.count, "clean_handshakes": end.handshakes,
                    "syn_retransmits": end.retransmits["syn"], "synack_retransmits": end.retransmits["synack"]}
        found.append(Finding("listen-overflow", name, group.count, evidence, ADVICE["listen-overflow"],
                             group.examples))
    return found


def simple(kind: str) -> Callable[[Tally, Census, Limits], list[Finding]]:
    """A finding for each endpoint with any connection in group `kind`."""

    def finder(tally: Tally, census: Census, limits: Limits) -> list[Finding]:
        found = []
        for name, end in tally.endpoints.items():
            group = end.groups.get(kind)
            if group is not None:
                evidence = {"connections": end.connections, "first": group.first, "last": group.last}
                found.append(Finding(kind, name, group.count, evidence, ADVICE[kind], group.examples))
        return found

    return finder


def aborts(tally: Tally, census: Census, limits: Limits) -> list[Finding]:
    found = []
    for name, end in tally.endpoints.items():
        for key, group in end.groups.items():
            if key.startswith("reset:"):
                _, by, state = key.split(":")
                evidence = {"sender": by, "state": state, "connections": end.connections}
                found.append(Finding("aborts", name, group.count, evidence, reset_advice(by, state),
                                     group.examples))
    return found


def slow_handshakes(tally: Tally, census: Census, limits: Limits) -> list[Finding]:
    found = []
    for name, end in tally.endpoints.items():
        median = rtt_percentile(end.rtt, 0.5)
        if median is None or median < SLOW_RTT:
            continue
        evidence = {"handshakes": sum(end.rtt.values()), "p50": median, "p90": rtt_percentile(end.rtt, 0.9),
                    "p99": rtt_percentile(end.rtt, 0.99)}
        found.append(Finding("slow-handshake", name, evidence["handshakes"], evidence, ADVICE["slow-handshake"]))
    return found


FINDERS: list[Callable[[Tally, Census, Limits], list[Finding]]] = [
    time_wait_piles, lingering, listen_overflows, simple("refused"), aborts, simple("unanswered"),
    slow_handshakes, simple("keepalive"),
]


def findings(tally: Tally, census: Census, limits: Limits | None = None) -> list[Finding]:
    """Every finding, kind by kind in FINDERS' order, endpoints in name order within a kind."""
    result: list[Finding] = []
    for finder in FINDERS:
        result.extend(sorted(finder(tally, census, limits or Limits()), key=lambda f: (f.endpoint, str(f.evidence))))
    return result

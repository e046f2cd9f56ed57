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

import numpy as np

from analyzer.columns import RETRANSMITS, ROLES, STATE_NAMES, Batch
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS
from analyzer.thresholds import MIN_LINGER, MIN_PILE, SLOW_RTT
from analyzer.timeline import Census

EXAMPLES = 3
RTT_BINS_PER_DECADE = 50


@dataclass
class Limits:
    """What the finders need besides the records: 2*MSL, and the thresholds (synfin report's options)."""

    msl: float = 30.0
    min_pile: int = MIN_PILE
_TIME_WAIT = STATE_NAMES.index("TIME_WAIT")
_HANDSHAKE = OPEN_LABELS.index("handshake")
#: the tally's group names; a reset's is "reset:<sender>:<state>", every pair (None: not known) from _RESETS on
GROUPS = [*(f"{kind}:{side}" for kind in ("time-wait", "CLOSE_WAIT", "FIN_WAIT_2") for side in ("server", "client")),
          "refused", "unanswered", "overflow", "keepalive"]
_RESETS = len(GROUPS)
GROUPS += [f"reset:{by}:{state}" for by in (None, *ROLES) for state in (None, *STATE_NAMES)]
_GROUP = {name: i for i, name in enumerate(GROUPS)}


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
    """Per-endpoint counts over finished records; `add` each record (or `add_batch` them), then run `findings`."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = defaultdict(Endpoint)
        self.records = 0

    def add(self, rec: dict[str, Any]) -> None:
        """Count one finished record (analyzer.record's dict)."""
        self.add_batch(Batch.of_records([rec]))

    def add_batch(self, batch: Batch) -> None:
        """Count a batch of finished records (columns.py), as if added one by one in their order."""
        if not len(batch):
            return
        self.records += len(batch)
        names, endpoint = batch.endpoints
        ends = [self.endpoints[name] for name in names]
        for end, count in zip(ends, np.bincount(endpoint, minlength=len(names)).tolist(), strict=True):
            end.connections += count
        self._retransmits(ends, endpoint, batch)
        clean = (batch.number("open") == _HANDSHAKE) & (batch.number("syn") == 0) & (batch.number("synack") == 0)
        for end, count in zip(ends, np.bincount(endpoint[clean], minlength=len(names)).tolist(), strict=True):
            end.handshakes += count
        rtt = batch.number("rtt")
        timed = rtt > 0  # 0.0: no handshake RTT
        values, which = np.unique(rtt[timed], return_inverse=True)
        bins = np.array([math.floor(math.log10(v) * RTT_BINS_PER_DECADE) for v in values.tolist()], dtype=np.int64)
        if len(values):
            index = bins[which.reshape(-1)]
            low = int(index.min())
            span = int(index.max()) - low + 1
            counts = np.bincount(endpoint[timed] * span + (index - low))  # per (endpoint, bin): no sort
            for code in np.flatnonzero(counts).tolist():
                ends[code // span].rtt[code % span + low] += int(counts[code])
        _note_events(ends, endpoint, batch)

    @staticmethod
    def _retransmits(ends: list[Endpoint], endpoint: np.ndarray, batch: Batch) -> None:
        """Each endpoint's retransmissions, the kinds in the order they were first seen (as Counter.update
        of each record's non-zero counts leaves them)."""
        firsts, sums = [], []
        for kind in RETRANSMITS:
            counts = batch.number(kind)
            seen = np.flatnonzero(counts)
            first = np.full(len(ends), len(batch))
            np.minimum.at(first, endpoint[seen], seen)
            firsts.append(first.tolist())
            sums.append(np.bincount(endpoint[seen], weights=counts[seen], minlength=len(ends)).tolist())
        for e, end in enumerate(ends):
            order = sorted((firsts[k][e], k) for k in range(len(RETRANSMITS)) if firsts[k][e] < len(batch))
            for _, k in order:
                end.retransmits[RETRANSMITS[k]] += int(sums[k][e])


def _note_events(ends: list[Endpoint], endpoint: np.ndarray, batch: Batch) -> None:
    """Each group's events (`events`), noted in the order of the records."""
    found = events(batch)
    if not len(found.key):
        return
    code = endpoint[found.record] * len(GROUPS) + found.key
    order = np.argsort(code, kind="stable")
    code = code[order]
    starts = np.flatnonzero(np.concatenate([[True], code[1:] != code[:-1]]))
    ids = batch.number("id")
    for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(code)], strict=True):
        rows = order[start:stop]
        name, key = divmod(int(code[start]), len(GROUPS))
        group = ends[name].groups[GROUPS[key]]
        group.count += len(rows)
        head = rows[:EXAMPLES - len(group.examples)]
        group.examples.extend(zip(ids[found.record[head]].tolist(), found.frame[head].tolist(), strict=True))
        whens = found.when[rows]
        first, last = float(whens.min()), float(whens.max())
        group.first = first if group.first is None else min(group.first, first)
        group.last = last if group.last is None else max(group.last, last)
        ages = found.age[rows]
        if not np.isnan(ages[0]):  # a group's events all have an age, or none has
            group.ages.extend(ages[:EXAMPLES - len(group.ages)].tolist())
            group.max_age = max(group.max_age, float(ages.max()))


@dataclass
class Events:
    """The notable things about a batch's records: group (index in GROUPS), record, frame, time, age (NaN: none)."""

    key: np.ndarray
    record: np.ndarray
    frame: np.ndarray
    when: np.ndarray
    age: np.ndarray


def events(batch: Batch) -> Events:
    """Each record's TIME_WAIT entries, final CLOSE_WAIT or FIN_WAIT_2 (with its age at the end), refused or
    unanswered open, reset (by whom, in which state), overflow (a third ACK ignored or a SYN resent) and
    keep-alives, as rows."""
    parts: list[tuple[np.ndarray | int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    first_frame, last_frame = batch.number("first_frame"), batch.number("last_frame")
    start, end = batch.number("start"), batch.number("end")
    record, server = batch.step_record, batch.step_server
    frame = np.where(batch.step_frames > 0, batch.step_frames, last_frame[record])  # a timer's: the last frame
    entered = np.flatnonzero(batch.step_states == _TIME_WAIT)
    parts.append((np.where(server[entered], _GROUP["time-wait:server"], _GROUP["time-wait:client"]),
                  record[entered], frame[entered], batch.step_times[entered], None))
    ends = np.cumsum(batch.step_counts)
    for side, last_step in (("server", ends - 1), ("client", ends - batch.step_counts + batch.number("n_client") - 1)):
        final = batch.number(f"final_{side}")
        for state in ("CLOSE_WAIT", "FIN_WAIT_2"):
            rows = np.flatnonzero((final == STATE_NAMES.index(state)) & (batch.number(f"n_{side}") > 0))
            at = last_step[rows]
            parts.append((_GROUP[f"{state}:{side}"], rows, frame[at], batch.step_times[at],
                          batch.number(f"age_{side}")[rows]))
    opened = batch.number("open")
    for label in ("refused", "unanswered"):
        rows = np.flatnonzero(opened == OPEN_LABELS.index(label))
        parts.append((_GROUP[label], rows, first_frame[rows], start[rows], None))
    rows = np.flatnonzero(batch.number("close") == CLOSE_LABELS.index("reset"))
    by, state = batch.number("reset_by")[rows], batch.number("reset_state")[rows]
    parts.append((_RESETS + (by + 1) * (len(STATE_NAMES) + 1) + state + 1, rows, last_frame[rows], end[rows], None))
    overflow = batch.number("overflow")
    rows = np.flatnonzero((overflow > 0) | (batch.number("syn") > 0))
    parts.append((_GROUP["overflow"], rows, np.where(overflow[rows] > 0, overflow[rows], first_frame[rows]),
                  start[rows], None))
    rows = np.flatnonzero(batch.number("keepalives") > 0)
    parts.append((_GROUP["keepalive"], rows, first_frame[rows], start[rows], None))
    return Events(np.concatenate([np.broadcast_to(p[0], len(p[1])) for p in parts]).astype(np.int64),
                  np.concatenate([p[1] for p in parts]).astype(np.int64),
                  np.concatenate([p[2] for p in parts]).astype(np.int64),
                  np.concatenate([p[3] for p in parts]),
                  np.concatenate([np.full(len(p[1]), np.nan) if p[4] is None else p[4] for p in parts]))


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

"""`--where`: a filter on the finished connections (by label, state, who reset, endpoint).

Frames are selected by `--filter` (BPF, before analysis); connections by
`--where`, after it, on what the analyzer decided::

    synfin analyze x.pcap --where close=reset                  # reset connections only
    synfin analyze x.pcap --where 'reset_by=server' --where port=443
    synfin analyze x.pcap --where 'state!=CLOSED,TIME_WAIT'     # an end left in another state
    synfin ladder x.pcap --where open=refused --text

A term is `KEY=VALUE` or `KEY!=VALUE`; VALUE may be a comma list (any of
them: OR); several terms (repeated --where, or separated by spaces in one
string) must all hold (AND). `KEY!=V1,V2` is exactly "not KEY=V1,V2": for the
keys about either end (`state`, `host`, `port`, `endpoint`), `state!=CLOSED`
means neither end is in CLOSED. Values are checked here, at parse time, against
the names the analyzer uses (labels, RFC 9293 state names in any case): a typo
is a `WhereError` naming the key and listing the allowed values, never a filter
that silently matches nothing.

The same parsed filter runs in both engines: `Where.matches` here, on a
`Connection` (the reference pipeline) or a JSON record dict, and, through
`Where.for_engine()`, the compiled engine's `where.c`, which gets the terms as
bitmasks of allowed values and address/port patterns (the layout is
`_CLAUSE` and `_PATTERN` below, read back by where.c) and tests each finished
connection before counting and writing it.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from analyzer.fsm import State
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS

STATE_NAMES = tuple(str(s) for s in State)
YES_NO = ("no", "yes")

#: key -> (field number in where.c, the allowed values in bit order); the endpoint keys have no value list
ENUM_KEYS: dict[str, tuple[int, tuple[str, ...]]] = {
    "open": (0, OPEN_LABELS),
    "close": (1, CLOSE_LABELS),
    "closer": (2, ("client", "server", "both", "none")),
    "reset_by": (3, ("client", "server", "none")),
    "reset_state": (4, (*STATE_NAMES, "none")),
    "half_close": (5, YES_NO),
    "client_state": (6, STATE_NAMES),
    "server_state": (7, STATE_NAMES),
    "state": (8, STATE_NAMES),
    "retransmits": (9, YES_NO),
    "anomalies": (10, YES_NO),
    "ip_version": (11, ("4", "6")),
}
#: key -> (field number, what its values may be: "any" endpoint form, "address" only, "port" only)
ENDPOINT_KEYS: dict[str, tuple[int, str]] = {
    "client": (12, "any"), "server": (13, "any"),
    "endpoint": (14, "any"), "host": (14, "address"), "port": (14, "port"),
}
KEYS = (*ENUM_KEYS, *ENDPOINT_KEYS)
ALIASES = {"active_closer": "closer"}  # the JSON record's name for it

_CLAUSE = struct.Struct("<BBHI")      # field, negate, number of patterns, mask of allowed values
_PATTERN = struct.Struct("<BBBxH16s")  # version (0: any address), prefix bits, has port, port, address
_HEADER = struct.Struct("<4sI")        # b"WHR1", number of clauses


class WhereError(ValueError):
    """A --where term that cannot be understood; the message is one line, meant for the user."""


@dataclass(frozen=True)
class Pattern:
    """An endpoint pattern: an address or network (version 0: any), and a port (None: any)."""

    version: int
    network: bytes  # 16 bytes, the address masked to `prefix` bits (IPv4 in the first 4)
    prefix: int
    port: int | None

    def matches(self, version: int, address: bytes, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.version == 0:
            return True
        return version == self.version and _masked(address.ljust(16, b"\0"), self.prefix) == self.network


@dataclass(frozen=True)
class Clause:
    key: str
    negate: bool
    values: tuple[str, ...]  # as normalized, in the order given
    mask: int = 0  # the enum keys: a bit per allowed value
    patterns: tuple[Pattern, ...] = ()

    def text(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{','.join(self.values)}"

    def holds(self, facts: Facts) -> bool:
        if self.key in ENUM_KEYS:
            found = bool(self.mask & facts.bits[self.key])
        else:
            ends = {"client": facts.ends[:1], "server": facts.ends[1:]}.get(self.key, facts.ends)
            found = any(p.matches(facts.version, addr, port) for addr, port in ends for p in self.patterns)
        return found != self.negate


@dataclass(frozen=True)
class Facts:
    """What a connection offers the filter: a bit (of its value) per enum key, and its two ends."""

    bits: dict[str, int]
    version: int
    ends: tuple[tuple[bytes, int], tuple[bytes, int]]  # client, server


T = TypeVar("T")


class Where:
    """Parsed --where terms, all of which must hold."""

    def __init__(self, clauses: Sequence[Clause]) -> None:
        self.clauses = tuple(clauses)

    @property
    def text(self) -> str:
        """The terms as the summary names them (values normalized: `state=time_wait` is `state=TIME_WAIT`)."""
        return " ".join(clause.text() for clause in self.clauses)

    def matches(self, conn: Any) -> bool:
        """Whether a connection (a finished `Connection`, an API `Record`, or a JSON record as a dict) passes
        every term."""
        if isinstance(conn, dict):
            facts = facts_of_record(conn)
        elif hasattr(conn, "csv_row"):  # an analyzer.records.Record: its JSON record
            facts = facts_of_record(conn.record())
        else:
            facts = facts_of_connection(conn)
        return all(clause.holds(facts) for clause in self.clauses)

    def filter(self, conns: Iterable[T]) -> Iterator[T]:
        return (conn for conn in conns if self.matches(conn))

    def for_engine(self) -> bytes:
        """The terms as the compiled engine reads them (where.c): a header, then each clause and its patterns."""
        out = bytearray(_HEADER.pack(b"WHR1", len(self.clauses)))
        for clause in self.clauses:
            field = ENUM_KEYS[clause.key][0] if clause.key in ENUM_KEYS else ENDPOINT_KEYS[clause.key][0]
            out += _CLAUSE.pack(field, clause.negate, len(clause.patterns), clause.mask)
            for p in clause.patterns:
                out += _PATTERN.pack(p.version, p.prefix, p.port is not None, p.port or 0, p.network)
        return bytes(out)


def parse(terms: str | Iterable[str] | Where | None) -> Where | None:
    """`--where` terms (a string, or several: each may hold several terms separated by spaces) as a Where (a
    Where as it is); None for no terms at all. Raises WhereError on the first term it cannot read."""
    if terms is None or isinstance(terms, Where):
        return terms
    texts = [terms] if isinstance(terms, str) else list(terms)
    clauses = [_clause(term) for text in texts for term in text.split()]
    if not clauses:
        raise WhereError("--where needs a term such as close=reset")
    return Where(clauses)


def _clause(term: str) -> Clause:
    negate = "!=" in term
    key, sep, value = term.partition("!=" if negate else "=")
    key = key.strip().lower()
    key = ALIASES.get(key, key)
    if not sep or not key:
        raise WhereError(f"--where {term!r}: expected KEY=VALUE or KEY!=VALUE; keys: {', '.join(KEYS)}")
    if key not in KEYS:
        raise WhereError(f"--where {term!r}: unknown key {key!r}; keys: {', '.join(KEYS)}")
    values = value.split(",")
    if not value or any(not v for v in values):
        raise WhereError(f"--where {term!r}: an empty value; give {key}=VALUE[,VALUE...]")
    if key in ENUM_KEYS:
        return _enum_clause(term, key, negate, values)
    kind = ENDPOINT_KEYS[key][1]
    patterns = tuple(_pattern(term, key, kind, v) for v in values)
    return Clause(key, negate, tuple(values), patterns=patterns)


def _enum_clause(term: str, key: str, negate: bool, values: list[str]) -> Clause:
    allowed = ENUM_KEYS[key][1]
    by_name = {name.lower(): i for i, name in enumerate(allowed)}
    by_name |= {"true": 1, "false": 0} if allowed == YES_NO else {}
    mask, names = 0, []
    for value in values:
        index = by_name.get(value.lower())
        if index is None:
            raise WhereError(f"--where {term!r}: {value!r} is not a value of {key}; allowed: {', '.join(allowed)}")
        mask |= 1 << index
        names.append(allowed[index])
    return Clause(key, negate, tuple(names), mask=mask)


def _pattern(term: str, key: str, kind: str, text: str) -> Pattern:
    """One endpoint value: a port (digits), an address or network (v4, v6, v6 in brackets), or address:port."""
    address, port = _split_endpoint(text)
    if kind == "port" and (address is not None or port is None):
        raise WhereError(f"--where {term!r}: {text!r} is not a port (0 to 65535)")
    if kind == "address" and (address is None or port is not None):
        raise WhereError(f"--where {term!r}: {text!r} is not an address or network "
                         "(host=10.0.0.1, host=10.0.0.0/24, host=fe80::1; endpoint=ADDRESS:PORT for both)")
    number = None
    if port is not None:
        if not port.isdigit() or int(port) > 65535:
            raise WhereError(f"--where {term!r}: {port!r} is not a port (0 to 65535)")
        number = int(port)
    if address is None:
        return Pattern(0, bytes(16), 0, number)
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        raise WhereError(f"--where {term!r}: {address!r} is not an IP address or network "
                         f"(e.g. 10.0.0.1, 10.0.0.0/24, [fe80::1]:443)") from None
    packed = network.network_address.packed.ljust(16, b"\0")
    return Pattern(network.version, packed, network.prefixlen, number)


def _split_endpoint(text: str) -> tuple[str | None, str | None]:
    """(address, port) of a value, either None: "80", "10.0.0.1", "10.0.0.1:80", "fe80::1", "[fe80::1]:80"."""
    if text.isdigit():
        return None, text
    if text.startswith("["):
        inside, close, rest = text[1:].partition("]")
        if close and rest.startswith(":"):
            return inside, rest[1:]
        return (inside, None) if close and not rest else (text, None)
    if text.count(":") == 1:
        address, _, port = text.partition(":")
        return address, port
    return text, None


def _masked(address: bytes, prefix: int) -> bytes:
    whole, rest = divmod(prefix, 8)
    head = address[:whole] + (bytes([address[whole] & (0xFF << (8 - rest)) & 0xFF]) if rest else b"")
    return head.ljust(16, b"\0")


# -- the facts of a connection, from a Connection or from its JSON record -------------------------------------


def _bit(allowed: tuple[str, ...], value: object) -> int:
    return 1 << allowed.index("none" if value is None else str(value))


def _facts(labels: dict[str, Any], finals: tuple[str, str], retransmits: int, anomalies: int, version: int,
           ends: tuple[tuple[bytes, int], tuple[bytes, int]]) -> Facts:
    def bit(key: str, value: object) -> int:
        return _bit(ENUM_KEYS[key][1], value)

    bits = {key: bit(key, labels[name]) for key, name in
            (("open", "open"), ("close", "close"), ("closer", "active_closer"), ("reset_by", "reset_by"),
             ("reset_state", "reset_state"))}
    bits |= {"half_close": 1 << bool(labels["half_close"]), "client_state": bit("client_state", finals[0]),
             "server_state": bit("server_state", finals[1]),
             "state": bit("state", finals[0]) | bit("state", finals[1]),
             "retransmits": 1 << (retransmits > 0), "anomalies": 1 << (anomalies > 0),
             "ip_version": 1 << (version == 6)}
    return Facts(bits, version, ends)


def facts_of_connection(conn: Any) -> Facts:
    """A finished `analyzer.connection.Connection` (its labels are set)."""
    client, server = conn.client, conn.server
    return _facts(conn.labels, (str(client.state), str(server.state)), sum(conn.retransmits.values()),
                  len(conn.anomalies), conn.ip_version,
                  ((bytes(client.addr), client.port), (bytes(server.addr), server.port)))


def facts_of_record(rec: dict[str, Any]) -> Facts:
    """A JSON record (report.record), as the API and `synfin analyze -f json` give it."""
    return _facts(rec, (rec["final"]["client"], rec["final"]["server"]), sum(rec["retransmits"].values()),
                  len(rec["anomalies"]), rec["ip_version"], (_end(rec["client"]), _end(rec["server"])))


def _end(name: str) -> tuple[bytes, int]:
    """'10.0.0.1:80' or '[fe80::1]:80' as (packed address, port)."""
    address, _, port = name.rpartition(":")
    return ipaddress.ip_address(address.strip("[]")).packed, int(port)


# -- which connections: their ids, for `synfin ladder --where` ---------------------------------------------------


def matching_ids(path: Any, where: Where, *, timeouts: Any = None, bpf: str | None = None) -> list[int]:
    """The ids of the capture's connections that `where` matches, in order, numbered as `synfin analyze` (with
    the same `bpf` filter and `timeouts`, a connection.Timeouts) numbers them (`path` may be a rotated set):
    analyzer.analyze with where=, so the compiled engine tests them when it can, else the reference pipeline.
    The capture is read once, to the end. Raises CaptureError as analyze does."""
    from analyzer.connection import Timeouts
    from analyzer.records import analyze  # not at the top: records.py imports this module

    timeouts = timeouts or Timeouts()
    conns = analyze(path, msl=timeouts.msl, idle_timeout=timeouts.idle, handshake_timeout=timeouts.handshake,
                    bpf=bpf, where=where)
    return sorted(conn.id for conn in conns)

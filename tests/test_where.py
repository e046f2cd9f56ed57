"""`--where` (issue 12): a filter on the finished connections, in both engines, the API and the ladder.

Expectations are the samples' own descriptions, not the code's output:
samples/busy.manifest.json says which kind of connection each server port
carries (client_close on 9101, server_reset on 9104, refused on 9109, ...),
so every key's expected set of connections is written here as a set of
ports, by reading the manifest's "how" against RFC 9293: e.g. the active
closer (FIN first) ends in TIME_WAIT, a SO_LINGER 0 close resets from
ESTABLISHED, a refused SYN gets a RST from a CLOSED server. The only thing
taken from an analysis is which id has which ports (the capture's facts).
A small crafted capture covers what busy.pcap lacks: IPv6, anomalies.

Both engines are then held to the same bytes (output and summary) with
several --where expressions on every sample and on crafted captures, and
with --filter.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import analyzer
from analyzer import engine
from analyzer.where import WhereError, matching_ids, parse
from tests.crafting import crafted
from tests.engine_compare import difference, run_cli, run_engines
from tests.pcapwrite import LINKTYPE_RAW, handshake_packets, write_pcap

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
BUSY = SAMPLES / "busy.pcap"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.name.endswith((".pcap", ".pcapng")))
needs_engine = pytest.mark.skipif(not engine.available(), reason="the compiled engine is not built")
#: where.c picks the same records whatever the format; the formats' C is test_engine.py's (make sanitize: JSON only)
plain_only = pytest.mark.plain_only

# busy.manifest.json's kinds by port (client 10.77.0.1, server 10.77.0.2)
CLIENT_CLOSE, SERVER_CLOSE, CLIENT_RESET, SERVER_RESET, HALF_CLOSE, REFUSED = 9101, 9102, 9103, 9104, 9105, 9109
ALL = {CLIENT_CLOSE, SERVER_CLOSE, CLIENT_RESET, SERVER_RESET, HALF_CLOSE, REFUSED}
COUNTS = {CLIENT_CLOSE: 100, SERVER_CLOSE: 80, CLIENT_RESET: 40, SERVER_RESET: 40, HALF_CLOSE: 50, REFUSED: 30}

#: --where terms -> the kinds (server ports) of busy.pcap they select, worked out from the manifest by hand
BUSY_CASES: list[tuple[list[str], set[int]]] = [
    (["open=refused"], {REFUSED}),
    (["open=handshake"], ALL - {REFUSED}),
    (["open!=handshake,refused"], set()),
    (["close=reset"], {CLIENT_RESET, SERVER_RESET}),
    (["close=four-way"], {CLIENT_CLOSE, SERVER_CLOSE, HALF_CLOSE}),  # half-close still ends in four segments
    (["close=none"], {REFUSED}),  # never established
    (["close!=four-way"], {CLIENT_RESET, SERVER_RESET, REFUSED}),
    (["closer=client"], {CLIENT_CLOSE, HALF_CLOSE}),
    (["active_closer=server"], {SERVER_CLOSE}),
    (["closer=none"], {CLIENT_RESET, SERVER_RESET, REFUSED}),  # a reset is no FIN
    (["reset_by=client"], {CLIENT_RESET}),
    (["reset_by=server"], {SERVER_RESET, REFUSED}),  # the refusing RST comes from the server's side
    (["reset_by=none"], {CLIENT_CLOSE, SERVER_CLOSE, HALF_CLOSE}),
    (["reset_state=ESTABLISHED"], {CLIENT_RESET, SERVER_RESET}),  # SO_LINGER 0 on an open connection
    (["reset_state=closed"], {REFUSED}),  # no listener: the server end is CLOSED
    (["reset_state=none"], {CLIENT_CLOSE, SERVER_CLOSE, HALF_CLOSE}),
    (["half_close=yes"], {HALF_CLOSE}),
    (["half_close=no"], ALL - {HALF_CLOSE}),
    (["client_state=TIME_WAIT"], {CLIENT_CLOSE, HALF_CLOSE}),  # the active closer waits 2 MSL
    (["server_state=time_wait"], {SERVER_CLOSE}),
    (["client_state=CLOSED", "server_state=CLOSED"], {CLIENT_RESET, SERVER_RESET, REFUSED}),
    (["state=TIME_WAIT"], {CLIENT_CLOSE, SERVER_CLOSE, HALF_CLOSE}),
    (["state!=TIME_WAIT"], {CLIENT_RESET, SERVER_RESET, REFUSED}),
    (["state=ESTABLISHED,CLOSE_WAIT,FIN_WAIT_2"], set()),  # every connection ended
    (["retransmits=no"], ALL),
    (["anomalies=yes"], set()),
    (["ip_version=4"], ALL),
    (["ip_version=6"], set()),
    (["port=9102"], {SERVER_CLOSE}),
    (["port=9103,9104"], {CLIENT_RESET, SERVER_RESET}),
    (["port!=9101,9102,9103"], {SERVER_RESET, HALF_CLOSE, REFUSED}),
    (["server=10.77.0.2:9105"], {HALF_CLOSE}),
    (["server=9109"], {REFUSED}),
    (["client=10.77.0.1"], ALL),
    (["client=10.77.0.2"], set()),  # the server's address is never the client's
    (["host=10.77.0.2"], ALL),
    (["host=10.77.0.0/24"], ALL),
    (["host=10.77.1.0/24"], set()),
    (["host!=10.77.0.1"], set()),
    (["endpoint=10.77.0.2:9101"], {CLIENT_CLOSE}),
    (["endpoint=[fd77::2]:9101"], set()),  # an IPv6 address matches no IPv4 connection
    (["close=reset", "closer=none", "port=9104"], {SERVER_RESET}),  # several terms: all must hold
    (["close=reset reset_by=client"], {CLIENT_RESET}),  # several terms in one string
    (["close=reset,none", "reset_by!=server"], {CLIENT_RESET}),
]


def _records(text: bytes | str) -> list[dict]:
    lines = text.decode() if isinstance(text, bytes) else text
    return [json.loads(line) for line in lines.splitlines()]


@pytest.fixture(scope="module")
def busy_ports() -> dict[int, int]:
    """Each busy.pcap connection's server port, by id (and the manifest's counts hold)."""
    out = run_cli(["analyze", "-f", "json", str(BUSY)])
    ports = {r["id"]: int(r["server"].rpartition(":")[2]) for r in _records(out.stdout)}
    assert {port: list(ports.values()).count(port) for port in ALL} == COUNTS
    return ports


def _ids(ports: dict[int, int], kinds: set[int]) -> list[int]:
    return sorted(i for i, port in ports.items() if port in kinds)


# -- every key, hand-checked on busy.pcap --------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ["reference", "compiled"])
@pytest.mark.parametrize(("terms", "kinds"), BUSY_CASES, ids=[" ".join(t) for t, _ in BUSY_CASES])
def test_every_key_on_busy(busy_ports: dict[int, int], terms: list[str], kinds: set[int], engine_name: str) -> None:
    if engine_name == "compiled" and not engine.available():
        pytest.skip("the compiled engine is not built")
    where = [arg for term in terms for arg in ("--where", term)]
    out = run_cli(["analyze", "--engine", engine_name, "-f", "json", *where, str(BUSY)])
    assert out.status == 0, out.stderr
    assert sorted(r["id"] for r in _records(out.stdout)) == _ids(busy_ports, kinds)
    matched = sum(COUNTS[k] for k in kinds)
    assert f"  {matched} of 340 connections matched --where " in out.stderr


def test_summary_counts_the_matched_connections() -> None:
    """The summary: the capture's totals first, then the census of what matched (40 + 40 resets, by hand: the
    manifest's client_reset on 9103 and server_reset on 9104; busy.pcap resends nothing)."""
    out = run_cli(["analyze", "--where", "close=reset", "--where", "reset_state=established", str(BUSY)])
    tail = out.stdout.decode().splitlines()[-11:]
    assert tail == [
        "samples/busy.pcap: 3280 frames, 3280 TCP segments, 340 connections (EN10MB 3280)".replace(
            "samples/busy.pcap", str(BUSY)),
        "  80 of 340 connections matched --where close=reset reset_state=ESTABLISHED",
        "  open:  handshake 80",
        "  close: reset 80",
        "  final client states: CLOSED 80",
        "  final server states: CLOSED 80",
        "  retransmitted: SYN 0, SYN-ACK 0, FIN 0",
        "  busiest server endpoints (2 of 2):",
        "    10.77.0.2:9103: 40 connections, 40 handshake, 0 closed, 40 reset",
        "    10.77.0.2:9104: 40 connections, 40 handshake, 0 closed, 40 reset",
        "  per endpoint over time, findings and advice: synfin report CAPTURE",
    ]


def test_summary_when_nothing_matched() -> None:
    """Every busy.pcap connection ends with one end CLOSED, so none has neither end in CLOSED: the summary says
    none matched and breaks nothing down (as for a capture with no connection at all)."""
    out = run_cli(["analyze", "-f", "json", "--where", "state!=CLOSED", str(BUSY)])
    assert out.status == 0 and out.stdout == b""
    assert out.stderr.splitlines()[1:] == ["  0 of 340 connections matched --where state!=CLOSED"]


def test_without_where_the_summary_is_unchanged() -> None:
    out = run_cli(["analyze", str(BUSY)])
    assert "matched --where" not in out.stdout.decode()


def test_retransmits_on_samples() -> None:
    """syn_lost_once: its first SYN was lost and sent again; unanswered: the kernel resends its SYNs."""
    for name, want in (("syn_lost_once.pcap", 1), ("unanswered.pcap", 1), ("half_close.pcap", 0)):
        for value, expect in (("yes", want), ("no", 1 - want)):
            out = run_cli(["analyze", "-f", "json", "--where", f"retransmits={value}", str(SAMPLES / name)])
            assert len(_records(out.stdout)) == expect, (name, value)


# -- IPv6 and anomalies: a crafted capture ----------------------------------------------------------------


def _crafted_where_capture(tmp_path: Path) -> Path:
    """crafted_where.pcap: (0) 10.0.0.1:40000 > 10.0.0.2:80, a clean four-way close; (1) 10.0.0.1:40001 >
    10.0.0.2:80 without its SYN, so it starts with the SYN-ACK (an anomaly: "capture starts after the SYN",
    open partial); (2) [fd00::1]:40002 > [fd00::2]:80, a clean close over IPv6."""
    first = handshake_packets(sport=40000)
    late = handshake_packets(sport=40001)[1:]
    v6 = handshake_packets(v6=True, sport=40002)
    frames = [bytes(p) for p in (*first, *late, *v6)]
    return write_pcap(tmp_path / "crafted_where.pcap", frames, LINKTYPE_RAW)


CRAFTED_CASES = [
    ("anomalies=yes", [1]), ("anomalies=no", [0, 2]), ("open=partial", [1]), ("ip_version=6", [2]),
    ("host=fd00::2", [2]), ("host=fd00::/64", [2]), ("endpoint=[fd00::1]:40002", [2]), ("client=[fd00::1]", [2]),
    ("server=[fd00::1]", []), ("endpoint=[fd00::1]:40000", []), ("client=10.0.0.1:40001", [1]),
    ("host=10.0.0.2", [0, 1]), ("host=::ffff:10.0.0.2", []), ("port=40000,40002", [0, 2]), ("port=80", [0, 1, 2]),
]


@pytest.mark.parametrize("engine_name", ["reference", "compiled"])
def test_crafted_ipv6_and_anomalies(tmp_path: Path, engine_name: str) -> None:
    if engine_name == "compiled" and not engine.available():
        pytest.skip("the compiled engine is not built")
    path = _crafted_where_capture(tmp_path)
    for term, ids in CRAFTED_CASES:
        out = run_cli(["analyze", "--engine", engine_name, "-f", "json", "--where", term, str(path)])
        assert out.status == 0, out.stderr
        assert sorted(r["id"] for r in _records(out.stdout)) == ids, term


# -- bad terms: one line, exit status 2 ------------------------------------------------------------------------

BAD_TERMS = [
    ("close", "expected KEY=VALUE or KEY!=VALUE"),
    ("=reset", "expected KEY=VALUE or KEY!=VALUE"),
    ("clse=reset", "unknown key 'clse'; keys: open, close, closer,"),
    ("close=rst", "'rst' is not a value of close; allowed: four-way, three-way, simultaneous, reset, half-closed, "
                  "open, none"),
    ("state=TIME_WAIT,TIMEWAIT", "'TIMEWAIT' is not a value of state; allowed: CLOSED, LISTEN,"),
    ("half_close=maybe", "'maybe' is not a value of half_close; allowed: no, yes"),
    ("close=", "an empty value"),
    ("close=reset,", "an empty value"),
    ("port=http", "'http' is not a port"),
    ("port=65536", "'65536' is not a port"),
    ("port=10.0.0.1", "'10.0.0.1' is not a port"),
    ("host=10.0.0.1:80", "'10.0.0.1:80' is not an address or network"),
    ("host=80", "'80' is not an address or network"),
    ("host=10.0.0.256", "'10.0.0.256' is not an IP address or network"),
    ("endpoint=[fd00::1:80", "is not an IP address or network"),
    ("client=10.0.0.1:99999", "'99999' is not a port"),
]


@pytest.mark.parametrize(("term", "message"), BAD_TERMS, ids=[t for t, _ in BAD_TERMS])
def test_bad_terms(term: str, message: str) -> None:
    with pytest.raises(WhereError, match=None) as caught:
        parse([term])
    assert message in str(caught.value) and "\n" not in str(caught.value)
    for command in (["analyze", "-f", "json"], ["ladder", "--text"]):
        out = run_cli([*command, "--where", term, str(BUSY)])
        assert out.status == 2 and out.stdout == b""
        assert out.stderr == f"synfin: --where {term!r}: {str(caught.value).split(': ', 1)[1]}\n"


def test_an_empty_where_is_an_error() -> None:
    out = run_cli(["analyze", "--where", " ", str(BUSY)])
    assert out.status == 2 and out.stderr == "synfin: --where needs a term such as close=reset\n"


@needs_engine
@pytest.mark.parametrize("program", [b"", b"WHR1", b"WHR1\x01\0\0\0", b"WHR1\x01\0\0\0\x0e\0\x05\0\0\0\0\0",
                                     b"WHR1\x01\0\0\0\x63\0\0\0\1\0\0\0", b"WHR1\x01\0\0\0\x01\0\0\0\1\0\0\0xx",
                                     b"WHR1\x01\0\0\0\x0e\0\x01\0\0\0\0\0" + struct.pack("<BBBxH16s", 4, 33, 0, 0,
                                                                                        bytes(16))])
def test_the_engine_refuses_a_malformed_program(program: bytes) -> None:
    """where.c checks every size and range of what it is handed (never reads past it)."""
    from analyzer import _engine

    engine.configure()
    with open(BUSY, "rb") as capture, pytest.raises(ValueError, match="malformed --where program"):
        _engine.run(capture.readinto, -1, None, lambda chunk: None, -1, 0, (30.0, 900.0, 40.0, 1.0),
                    None, False, None, program)


# -- both engines, byte for byte ------------------------------------------------------------------------------

COMPARED = [
    ["--where", "close=reset"], ["--where", "state=TIME_WAIT", "--where", "half_close=no"],
    ["--where", "open!=handshake"], ["--where", "port=9000,9102,80"], ["--where", "anomalies=yes"],
    ["--where", "retransmits=yes"], ["--where", "closer=none,both"], ["--where", "host=10.77.0.0/16"],
    ["--where", "state!=CLOSED"],
]


@needs_engine
@pytest.mark.parametrize("fmt", ["json", *(pytest.param(f, marks=plain_only) for f in ("csv", "table"))])
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_engines_agree_on_every_sample(tmp_path: Path, capture: Path, fmt: str) -> None:
    for options in COMPARED:
        outcomes = run_engines([capture], fmt, options, tmp_path)
        found = difference(outcomes["reference"], outcomes["compiled"], fmt)
        assert found is None, f"{capture.name} {' '.join(options)} -f {fmt}:\n{found}"
        assert outcomes["reference"].status == 0


@needs_engine
def test_engines_agree_on_several_captures_and_with_filter(tmp_path: Path) -> None:
    several = [SAMPLES / "busy.pcap", SAMPLES / "ipv6.pcap", SAMPLES / "refused.pcap"]
    for fmt in ("json", "csv", "table"):
        for options in (["--where", "open=refused,handshake"], ["--filter", "tcp port 9104 or tcp port 9109",
                                                                "--where", "reset_by=server", "--where", "port=9104"]):
            outcomes = run_engines(several, fmt, options, tmp_path)
            assert difference(outcomes["reference"], outcomes["compiled"], fmt) is None, (fmt, options)


@needs_engine
@pytest.mark.parametrize("batch", range(4))
def test_engines_agree_on_crafted_captures(tmp_path: Path, batch: int) -> None:
    """Crafted (mutated) captures, 30 a batch, each with a few --where terms, JSON (and the table for some)."""
    terms = [["--where", "close=reset,half-closed,open"], ["--where", "anomalies=yes", "--where", "ip_version=4"],
             ["--where", "state=SYN_SENT,SYN_RCVD,ESTABLISHED,CLOSE_WAIT"], ["--where", "open!=handshake"],
             ["--where", "reset_state!=none"], ["--where", "closer=both"]]
    failures = []
    for seed in range(batch * 30, (batch + 1) * 30):
        made = crafted(seed)
        path = made.write(tmp_path)
        for options in (terms[seed % len(terms)], terms[(seed + 3) % len(terms)]):
            fmt = "table" if seed % 5 == 0 else "json"
            outcomes = run_engines([path], fmt, [*made.options, *options], tmp_path)
            found = difference(outcomes["reference"], outcomes["compiled"], fmt)
            if found:
                failures.append(f"{made.describe()} {options}\n{found}")
    assert not failures, "\n\n".join(failures[:3])


# -- the Python API -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["compiled", "reference"])
def test_api_where(busy_ports: dict[int, int], engine: str) -> None:
    stats = analyzer.Stats()
    conns = list(analyzer.analyze(BUSY, where="close=reset reset_by=client", stats=stats, engine=engine))
    assert sorted(c.id for c in conns) == _ids(busy_ports, {CLIENT_RESET})
    assert stats.connections == 340  # all of them were analyzed
    listed = analyzer.analyze(BUSY, where=["close=reset", "reset_by=client"], engine=engine)
    assert sorted(c.id for c in listed) == _ids(busy_ports, {CLIENT_RESET})


def test_api_where_records_equal_the_cli() -> None:
    """The engine's where= gives exactly the JSON lines of `synfin analyze --where`."""
    terms = "state=TIME_WAIT port=9102,9103"
    cli = [json.loads(line) for line in _cli_json(BUSY, "--where", terms)]
    api = [analyzer.record(c) for c in analyzer.analyze(BUSY, where=terms, engine="compiled")]
    assert api == cli and len(api) > 0


def test_api_bad_where_raises_at_the_call() -> None:
    with pytest.raises(analyzer.WhereError, match="unknown key 'colse'"):
        analyzer.analyze("no-such-file.pcap", where="colse=reset")  # before anything is read


def test_matches_records_and_connections_alike(busy_ports: dict[int, int]) -> None:
    """Where.matches takes a JSON record and an API Record as well as a Connection, with the same answers."""
    conns = list(analyzer.analyze(BUSY, engine="reference"))
    records = list(analyzer.analyze(BUSY, engine="compiled"))
    for terms, kinds in BUSY_CASES:
        where = parse(terms)
        assert where is not None
        by_conn = sorted(c.id for c in conns if where.matches(c))
        by_record = sorted(c.id for c in conns if where.matches(analyzer.record(c)))
        by_api = sorted(c.id for c in records if where.matches(c))
        assert by_conn == by_record == by_api == _ids(busy_ports, kinds), terms


def test_matching_ids(busy_ports: dict[int, int]) -> None:
    where = parse("close=reset")
    assert where is not None
    assert matching_ids(BUSY, where) == _ids(busy_ports, {CLIENT_RESET, SERVER_RESET})
    # with a BPF filter, ids are numbered as `analyze --filter` numbers them: only the 40 client resets are there
    assert matching_ids(BUSY, where, bpf="tcp port 9103") == list(range(COUNTS[CLIENT_RESET]))
    assert matching_ids(BUSY, where, bpf="tcp port 9101") == []


# -- synfin ladder --where -----------------------------------------------------------------------------------


def _drawn(text: bytes) -> list[int]:
    return [int(line.split()[1].rstrip(":")) for line in text.decode().splitlines() if line.startswith("connection ")]


def test_ladder_where(busy_ports: dict[int, int]) -> None:
    out = run_cli(["ladder", "--text", "--where", "open=refused", str(BUSY)])
    assert out.status == 0 and _drawn(out.stdout) == _ids(busy_ports, {REFUSED})
    both = _ids(busy_ports, {CLIENT_RESET})[:2] + _ids(busy_ports, {REFUSED})[:1]
    out = run_cli(["ladder", str(BUSY), "--text", "--where", "close=reset", "--conn", *map(str, both)])
    assert out.status == 0 and _drawn(out.stdout) == both[:2]  # --conn and --where must both hold


def test_ladder_where_on_standard_input(busy_ports: dict[int, int]) -> None:
    """Standard input is read once: each connection is tested as it comes (no ids first)."""
    with open(BUSY, "rb") as stdin:
        done = subprocess.run([sys.executable, "-m", "analyzer", "ladder", "--text", "--where", "reset_by=client",
                               "-"], stdin=stdin, capture_output=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _drawn(done.stdout) == _ids(busy_ports, {CLIENT_RESET})


def test_ladder_where_matches_nothing(busy_ports: dict[int, int]) -> None:
    out = run_cli(["ladder", "--text", "--where", "close=simultaneous", str(BUSY)])
    assert out.status == 1 and out.stdout == b""
    assert out.stderr == f"synfin: {BUSY}: no connection matches --where close=simultaneous\n"
    first = _ids(busy_ports, {CLIENT_CLOSE})[0]
    out = run_cli(["ladder", str(BUSY), "--text", "--where", "close=reset", "--conn", str(first)])
    assert out.status == 1
    assert out.stderr == f"synfin: {BUSY}: no connection among connections {first} matches --where close=reset\n"


def test_ladder_where_too_many_pictures(tmp_path: Path) -> None:
    out = run_cli(["ladder", "--where", "open=refused", "-o", str(tmp_path / "x.png"), str(BUSY)])
    assert out.status == 2 and "has 30 connections matching --where" in out.stderr


def _cli_json(path: Path, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-f", "json", "--no-summary", str(path), *args],
                          capture_output=True, check=True)
    return done.stdout.decode().splitlines()

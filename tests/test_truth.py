"""Issue 13's rules on real-world captures, the compiled engine against the reference: port reuse out of
TIME_WAIT, RSTs that are not acceptable (blind-reset injection), the listen-queue overflow, bounded
anomaly lists.

Each scenario is written segment by segment with tests/wire.py (real sequence arithmetic), saved as a
raw-IP pcap with the segments' own timestamps, and run through both engines in every format: the outputs
must be byte-identical. The rules themselves are checked on the reference in tests/test_connection.py.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from analyzer import engine
from analyzer.decode import ACK, FIN, PSH, RST, SYN
from tests.engine_compare import difference, run_engines
from tests.wire import Wire, handshake

pytestmark = pytest.mark.skipif(not engine.available(), reason="the compiled engine is not built")

LINKTYPE_RAW = 101
FORMATS = ("json", "csv", "table")


def _tcp_flags(bits: int) -> int:
    return sum(bit for bit in (FIN, SYN, RST, PSH, ACK) if bits & bit)


def write_wire(w: Wire, path: Path) -> Path:
    """The wire's segments as raw IPv4 frames in a pcap, each at its own time (checksums left 0)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
    for seg in w.segments:
        tcp = struct.pack("!HHIIBBHHH", seg.sport, seg.dport, seg.seq, seg.ack, 5 << 4, _tcp_flags(seg.flags),
                          seg.window, 0, 0) + bytes(seg.payload_len)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, seg.src, seg.dst) + tcp
        sec = int(seg.ts)
        out += struct.pack("<IIII", sec, round((seg.ts - sec) * 1e6), len(ip), len(ip)) + ip
    path.write_bytes(bytes(out))
    return path


def both(tmp_path: Path, w: Wire, options: list[str] | None = None) -> list[dict]:
    """Run both engines on the wire in every format; fail on any byte of difference; the JSON records."""
    capture = write_wire(w, tmp_path / "wire.pcap")
    records: list[dict] = []
    for fmt in FORMATS:
        outcomes = run_engines([capture], fmt, options or [], tmp_path, True)
        found = difference(outcomes["reference"], outcomes["compiled"], fmt)
        assert found is None, found
        if fmt == "json":
            text = (outcomes["reference"].output or b"").decode()
            records = [json.loads(line) for line in text.splitlines()]
    return records


def _reuse_server_time_wait(w: Wire) -> None:
    handshake(w)
    w.s("FA"), w.c("A"), w.c("FA"), w.s("A")
    w.isn["c"], w.nxt["c"] = 900_000, 900_000
    w.isn["s"], w.nxt["s"] = 700_000, 700_000
    handshake(w)


def _reuse_client_time_wait(w: Wire) -> None:
    handshake(w)
    w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
    w.isn["c"], w.nxt["c"] = 900_000, 900_000
    w.c("S")


def _reuse_pending_fin(w: Wire) -> None:
    handshake(w)
    w.s("FA"), w.c("A"), w.c("FA")
    w.isn["c"], w.nxt["c"] = 900_000, 900_000
    w.c("S")


REUSE: dict[str, Callable[[Wire], None]] = {
    "server in TIME_WAIT": _reuse_server_time_wait,
    "client in TIME_WAIT": _reuse_client_time_wait,
    "FIN still pending": _reuse_pending_fin,
}


@pytest.mark.parametrize("name", list(REUSE))
def test_reuse_out_of_time_wait_same_in_both_engines(tmp_path: Path, name: str) -> None:
    w = Wire()
    REUSE[name](w)
    old = both(tmp_path, w)[0]
    reuse_frame = next(i + 1 for i, seg in enumerate(w.segments) if i > 0 and seg.flags == SYN)
    ended = [side for side in ("client", "server") if old["states"][side][-1][2] == reuse_frame]
    assert len(ended) == 1 and old["states"][ended[0]][-2][0] == "TIME_WAIT"
    assert old["final"][ended[0]] == "CLOSED" and "TIME_WAIT" not in old["final"].values()


def _injected_before_synack(w: Wire) -> None:
    """Issue 13's case: a RST 'from the server' whose ack is the client's ISN, not ISN + 1, before the SYN-ACK;
    then the connection goes on normally."""
    w.c("S")
    w.s("RA", ack=0, seq=0)
    w.s("SA", seq=0)
    w.c("A"), w.c("PA", data=10), w.s("A"), w.c("FA"), w.s("FA"), w.c("A")


def _injected_in_window_established(w: Wire) -> None:
    """A blind RST in ESTABLISHED with a guessed sequence number 5000 past what the client has sent."""
    handshake(w)
    w.c("PA", data=100), w.s("A")
    w.c("R", seq=5101)
    w.c("PA", data=10), w.s("A"), w.c("FA"), w.s("FA"), w.c("A")


def _genuine_reset(w: Wire) -> None:
    """An abort with seq = snd.nxt: accepted, the connection ends by it."""
    handshake(w)
    w.c("PA", data=100), w.s("A"), w.c("RA")


def _reset_after_peer_fin(w: Wire) -> None:
    """The server got the client's FIN (CLOSE_WAIT); a RST from the client at RCV.NXT - 1 (its FIN's seq) is
    still acceptable (Linux tcp_reset_check)."""
    handshake(w)
    w.c("FA"), w.s("A"), w.c("R", seq=1)


RSTS: dict[str, Callable[[Wire], None]] = {
    "injected before the SYN-ACK": _injected_before_synack,
    "injected in ESTABLISHED": _injected_in_window_established,
    "genuine abort": _genuine_reset,
    "RCV.NXT - 1 after the peer's FIN": _reset_after_peer_fin,
}


@pytest.mark.parametrize("name", list(RSTS))
def test_rst_acceptability_same_in_both_engines(tmp_path: Path, name: str) -> None:
    w = Wire()
    RSTS[name](w)
    records = both(tmp_path, w)
    assert len(records) == 1
    record = records[0]
    injected = name.startswith("injected")
    ignored = [a for a in record["anomalies"] if "possible blind reset" in a["what"]]
    assert len(ignored) == injected
    assert (record["close"] == "reset") == (not injected)
    if injected:
        assert record["reset_by"] is None and record["reset_state"] is None
        assert record["final"] == {"client": "TIME_WAIT", "server": "CLOSED"}

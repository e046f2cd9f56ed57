"""Issue 13: encapsulations, link types and the VLAN in the connection key.

Each case of tests/tunnelled.py (one TCP connection wrapped in one kind of
layers) must give the connection the plain capture gives, with the tunnel
text and VLAN ids worked out by hand in the case, the summary's count of
segments through tunnels, tshark's view of the same conversation, and the
same bytes from both engines. Then the key (two VLANs reusing one 4-tuple,
two VXLAN networks), and damage: cut or contradictory tunnel headers and
nesting without end are counted as malformed, by frame, never followed
forever.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

import analyzer
from analyzer import engine
from tests.engine_compare import difference, run_engines
from tests.pcapwrite import handshake_packets, write_pcap
from tests.tunnelled import CASES, Case, write_case

FORMATS = ("json", "csv", "table")


def Eth(**fields: int) -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)
compiled = pytest.mark.skipif(not engine.available(), reason="the compiled engine is not built")


def records(path: Path) -> tuple[list[dict], analyzer.Stats]:
    stats = analyzer.Stats()
    return [analyzer.record(c) for c in analyzer.analyze(path, stats=stats)], stats


def assert_same_in_both_engines(tmp_path: Path, capture: Path) -> None:
    for fmt in FORMATS:
        outcomes = run_engines([capture], fmt, [], tmp_path)
        found = difference(outcomes["reference"], outcomes["compiled"], fmt)
        assert found is None, f"the engines differ on {capture.name} (-f {fmt}):\n{found}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_inner_connection_is_the_connection(tmp_path: Path, case: Case) -> None:
    [rec], stats = records(write_case(case, tmp_path / f"crafted_{case.name}.pcap"))
    client = "[fd00::1]:40000" if case.v6 else "10.0.0.1:40000"
    assert (rec["client"], rec["open"], rec["close"], rec["final"]) == \
        (client, "handshake", "four-way", {"client": "TIME_WAIT", "server": "CLOSED"})
    assert (rec["tunnel"], rec["vlan"]) == (case.tunnel, case.vlan)
    assert (stats.segments, stats.bad_frames, dict(stats.tunnels)) == (7, 0, case.kinds)
    assert stats.tunnelled == (7 if case.kinds else 0)


@compiled
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_both_engines_write_the_same_bytes(tmp_path: Path, case: Case) -> None:
    assert_same_in_both_engines(tmp_path, write_case(case, tmp_path / f"crafted_{case.name}.pcap"))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.plain_only  # its engine run is test_both_engines_write_the_same_bytes's; the rest is tshark's C
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tshark_sees_the_same_inner_segments(tmp_path: Path, case: Case) -> None:
    """tshark's dissectors (not ours) find the seven segments between the same inner endpoints."""
    path = write_case(case, tmp_path / f"crafted_{case.name}.pcap")
    fields = ["-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "tcp.flags.str"]
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "tcp", "-T", "fields", "-E", "occurrence=l", *fields],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    inner_client = "fd00::1" if case.v6 else "10.0.0.1"
    senders = [line.split("\t") for line in out]
    assert len(senders) == 7
    [rec], _ = records(path)
    assert rec["packets"]["client"] == sum(1 for s in senders if inner_client in s[:2] and s[2] == "40000")


def test_two_vlans_reusing_one_four_tuple_are_two_connections(tmp_path: Path) -> None:
    """The same 4-tuple, the same ISNs, on VLAN 10 and VLAN 20 at once (interleaved): two clean connections.
    Keyed by the 4-tuple alone, the second VLAN's segments were retransmissions of the first's."""
    packets = handshake_packets()
    frames = []
    for p in packets:
        for vlan in (10, 20):
            frames.append(bytes(Eth() / Dot1Q(vlan=vlan) / p))
    recs, _ = records(write_pcap(tmp_path / "crafted_two_vlans.pcap", frames, 1))
    assert [(r["vlan"], r["open"], r["close"], r["retransmits"], r["packets"]) for r in recs] == [
        ([10], "handshake", "four-way", {"syn": 0, "synack": 0, "fin": 0}, {"client": 4, "server": 3}),
        ([20], "handshake", "four-way", {"syn": 0, "synack": 0, "fin": 0}, {"client": 4, "server": 3}),
    ]


def test_two_vxlan_networks_reusing_one_four_tuple_are_two_connections(tmp_path: Path) -> None:
    frames = []
    for p in handshake_packets():
        fwd = p.src == "10.0.0.1"
        outer = IP(src="192.0.2.1", dst="192.0.2.2") if fwd else IP(src="192.0.2.2", dst="192.0.2.1")
        for vni in (100, 200):
            frames.append(bytes(Eth() / outer / UDP(sport=49152, dport=4789) / VXLAN(vni=vni) / Eth() / p))
    recs, _ = records(write_pcap(tmp_path / "crafted_two_vnis.pcap", frames, 1))
    assert [(r["tunnel"].split(" over")[0], r["close"], r["packets"]) for r in recs] == [
        ("vxlan 4789 vni 100", "four-way", {"client": 4, "server": 3}),
        ("vxlan 4789 vni 200", "four-way", {"client": 4, "server": 3}),
    ]


def _gre_nest(depth: int) -> bytes:
    """`depth` GRE-in-IPv4 layers around a SYN (packed by hand: scapy recurses per layer)."""
    inner = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="S"))
    outer = bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=47))
    for _ in range(depth):
        size = len(outer) + 4 + len(inner)
        inner = outer[:2] + struct.pack("!H", size & 0xFFFF) + outer[4:] + struct.pack("!HH", 0, 0x0800) + inner
    return bytes(Eth(type=0x0800)) + inner


def test_nesting_is_bounded(tmp_path: Path) -> None:
    """Eight layers are read; a ninth is damage, named by frame (a hostile capture cannot nest forever)."""
    path = write_pcap(tmp_path / "crafted_deep.pcap", [_gre_nest(8), _gre_nest(9), _gre_nest(400)], 1)
    recs, stats = records(path)
    assert len(recs) == 1 and recs[0]["tunnel"].count("gre over") == 8
    assert stats.problem_frames == [(2, "encapsulations nested deeper than 8"),
                                    (3, "encapsulations nested deeper than 8")]


DAMAGED = [  # (frame, the malformed reason), each checked against its header's format
    (bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=4789) / b"\x08\x00\x00"),
     "VXLAN header cut short"),
    (bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2", proto=47) / b"\x00"), "GRE header cut short"),
    (bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2", proto=47) / struct.pack("!HH", 2, 0x0800)),
     "GRE version 2"),
    (bytes(Eth(type=0x8847) / (struct.pack("!I", 16 << 12) * 8)), "MPLS label stack deeper than 8"),
    (bytes(Eth(type=0x8847) / struct.pack("!I", 16 << 12)), "MPLS label stack cut short"),
    (bytes(Eth(type=0x8864) / b"\x12\x00\x00\x01\x00\x10\x00\x21"), "PPPoE version and type 0x12, not 0x11"),
    (bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=2152)
           / bytes([0x34, 0xFF, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x85, 0, 0, 0, 0])), "GTP-U extension header length 0"),
    (bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=2152) / bytes([0x50, 0xFF, 0, 0, 0, 0, 0, 1])),
     "GTP-U version 2"),
    (bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=6081) / bytes([0x40] + [0] * 7)),
     "Geneve version 1"),
]


@pytest.mark.parametrize("frame, reason", DAMAGED, ids=[r for _, r in DAMAGED])
def test_a_malformed_tunnel_header_is_damage_named_by_frame(tmp_path: Path, frame: bytes, reason: str) -> None:
    path = write_pcap(tmp_path / "crafted_damaged_tunnel.pcap", [frame], 1)
    recs, stats = records(path)
    assert recs == [] and stats.problem_frames == [(1, reason)]
    if engine.available():
        assert_same_in_both_engines(tmp_path, path)


def test_nflog_tlv_length_under_4_stops_the_walk(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "crafted_nflog_zero.pcap", [bytes([2, 0, 0, 0]) + struct.pack("<HH", 0, 10)], 239)
    _, stats = records(path)
    assert stats.problem_frames == [(1, "NFLOG TLV length 0 is under 4")]


def test_ordinary_udp_is_still_not_tcp(tmp_path: Path) -> None:
    frames = [bytes(Eth() / IP() / UDP(sport=5353, dport=53) / (b"x" * 20)),
              bytes(Eth() / IP(flags="MF", frag=0) / UDP(dport=4789) / (b"\x08" + b"\0" * 3))]
    _, stats = records(write_pcap(tmp_path / "crafted_udp.pcap", frames, 1))
    assert stats.skipped["not TCP (UDP, ICMP, ...)"] == 1 and stats.bad_frames == 1


def test_the_summary_names_the_tunnels(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "nested")
    path = write_case(case, tmp_path / "crafted_nested.pcap")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--engine", "reference", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "  in tunnels: 7 TCP segments (mpls 7, vxlan 7, 4in6 7)\n" in out
    line = json.loads(subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-f", "json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    keys = list(line)  # the new keys come after the timing figures, in the order README gives
    assert keys[keys.index("state_time") + 1:][:2] == ["tunnel", "vlan"]


SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "crafted_encapsulations.pcapng"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_the_encapsulations_sample_against_tshark() -> None:
    """Every copy's segments, as tshark dissects them (frame time, client port, length), are the
    record's: its packets per side, payload bytes, and its first and last frames' times."""
    fields = ["-e", "frame.number", "-e", "frame.time_epoch", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e",
              "tcp.len"]
    out = subprocess.run(["tshark", "-r", str(SAMPLE), "-Y", "tcp", "-T", "fields", "-E", "occurrence=l", *fields],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    seen: dict[int, list[tuple[int, float, bool, int]]] = {}
    for line in out.splitlines():
        number, ts, sport, dport, length = line.split("\t")
        client_sent = int(sport) > 50000
        seen.setdefault(int(sport) if client_sent else int(dport), []).append(
            (int(number), float(ts), client_sent, int(length)))
    recs, _ = records(SAMPLE)
    assert len(recs) == len(seen) == len(CASES)
    for rec in recs:
        theirs = seen[int(rec["client"].rsplit(":", 1)[1])]
        assert [theirs[0][0], theirs[-1][0]] == [rec["first_frame"], rec["last_frame"]]
        assert [theirs[0][1], theirs[-1][1]] == pytest.approx([rec["start"], rec["end"]], abs=1e-6)
        for side, sent in (("client", True), ("server", False)):
            mine = [t for t in theirs if t[2] == sent]
            assert (rec["packets"][side], rec["payload_bytes"][side]) == (len(mine), sum(t[3] for t in mine))


@compiled
def test_the_samples_read_the_same_in_both_engines(tmp_path: Path) -> None:
    for name in ("crafted_encapsulations.pcapng", "vxlan.pcap", "vlan_reuse.pcap"):
        assert_same_in_both_engines(tmp_path, SAMPLE.with_name(name))


def test_tunnels_not_decoded_are_named_among_the_skipped(tmp_path: Path) -> None:
    """GRE with source routing, a GRE protocol that is not IP, a Geneve payload that is not IP, a GTP-U echo:
    counted by name, not as damage (the summary's "skipped" line names them)."""
    outer = IP(src="192.0.2.1", dst="192.0.2.2")
    frames = [bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2", proto=47) / struct.pack("!HH", 0x4000, 0x0800)),
              bytes(Eth() / IP(src="192.0.2.1", dst="192.0.2.2", proto=47) / struct.pack("!HH", 0, 0x0806)),
              bytes(Eth() / outer / UDP(dport=6081) / struct.pack("!BBHI", 0, 0, 0x8847, 0)),
              bytes(Eth() / outer / UDP(dport=2152) / bytes([0x30, 1, 0, 0, 0, 0, 0, 0]))]
    _, stats = records(write_pcap(tmp_path / "crafted_undecoded.pcap", frames, 1))
    assert stats.bad_frames == 0
    assert stats.skipped == {"tunnel not decoded (GRE with source routing)": 1, "not IP (GRE protocol 0x0806)": 1,
                             "not IP (Geneve protocol 0x8847)": 1, "not TCP (GTP-U signalling)": 1}

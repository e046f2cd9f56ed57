"""Every capture format and link type gives the same connection."""

import pytest
from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop

import analyzer
from tests.pcapwrite import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_SLL,
    LINKTYPE_SLL2,
    frame,
    gzip_file,
    handshake_packets,
    write_pcap,
    write_pcapng,
)


def summary(path):
    stats = analyzer.Stats()
    conns = list(analyzer.analyze(path, stats=stats))
    assert stats.bad_frames == 0, stats.problem_frames
    return [(c.labels["open"], c.labels["close"], str(c.client.state), str(c.server.state)) for c in conns]


EXPECTED = [("handshake", "four-way", "TIME_WAIT", "CLOSED")]


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcap_resolutions_and_byte_orders(tmp_path, nano, big_endian):
    frames = [frame(p, LINKTYPE_ETHERNET) for p in handshake_packets()]
    path = write_pcap(tmp_path / "c.pcap", frames, LINKTYPE_ETHERNET, nano=nano, big_endian=big_endian)
    assert summary(path) == EXPECTED
    first = next(iter(analyzer.analyze(path)))
    assert first.start == pytest.approx(1700000000.0, abs=1e-6)


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2,
                                      LINKTYPE_NULL, LINKTYPE_LOOP, 228])
@pytest.mark.parametrize("v6", [False, True])
def test_link_types(tmp_path, linktype, v6):
    if linktype == 228 and v6:
        linktype = 229
    frames = [frame(p, linktype) for p in handshake_packets(v6=v6)]
    assert summary(write_pcap(tmp_path / "c.pcap", frames, linktype)) == EXPECTED


@pytest.mark.parametrize("vlans", [1, 2, 3])
def test_vlan_and_qinq(tmp_path, vlans):
    frames = [frame(p, LINKTYPE_ETHERNET, vlans=vlans) for p in handshake_packets()]
    assert summary(write_pcap(tmp_path / "c.pcap", frames, LINKTYPE_ETHERNET)) == EXPECTED


def test_ipv6_extension_headers_are_skipped(tmp_path):
    packets = handshake_packets(v6=True)
    packets = [p[0].__class__(src=p.src, dst=p.dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
               / p.payload for p in packets]
    frames = [frame(p, LINKTYPE_RAW) for p in packets]
    assert summary(write_pcap(tmp_path / "c.pcap", frames, LINKTYPE_RAW)) == EXPECTED


def test_ipv6_endpoint_names(tmp_path):
    frames = [frame(p, LINKTYPE_RAW) for p in handshake_packets(v6=True)]
    conn = next(iter(analyzer.analyze(write_pcap(tmp_path / "c.pcap", frames, LINKTYPE_RAW))))
    record = analyzer.record(conn)
    assert (record["client"], record["server"], record["ip_version"]) == ("[fd00::1]:40000", "[fd00::2]:80", 6)


@pytest.mark.parametrize("nano", [False, True])
def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path, nano):
    packets = handshake_packets()
    frames = [(i % 2, frame(p, LINKTYPE_ETHERNET if i % 2 == 0 else LINKTYPE_SLL2))
              for i, p in enumerate(packets)]
    path = write_pcapng(tmp_path / "c.pcapng", frames, [LINKTYPE_ETHERNET, LINKTYPE_SLL2], tsresol_nano=nano)
    assert summary(path) == EXPECTED
    conn = next(iter(analyzer.analyze(path)))
    assert conn.client.history[1].ts == pytest.approx(1700000000.001, abs=1e-6)


def test_gzip_compressed(tmp_path):
    frames = [frame(p, LINKTYPE_ETHERNET) for p in handshake_packets()]
    path = gzip_file(write_pcap(tmp_path / "c.pcap", frames, LINKTYPE_ETHERNET))
    assert summary(path) == EXPECTED


def test_format_is_told_by_magic_not_name(tmp_path):
    frames = [(0, frame(p, LINKTYPE_ETHERNET)) for p in handshake_packets()]
    path = write_pcapng(tmp_path / "misnamed.pcap", frames, [LINKTYPE_ETHERNET])
    assert summary(path) == EXPECTED


def test_unsupported_link_type_is_counted_by_name(tmp_path):
    path = write_pcap(tmp_path / "c.pcap", [b"\x00" * 40] * 3, 119)
    stats = analyzer.Stats()
    assert list(analyzer.analyze(path, stats=stats)) == []
    assert stats.skipped == {"unsupported link type IEEE802_11_PRISM": 3}


def test_non_tcp_frames_are_skipped_not_malformed(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether

    frames = [bytes(Ether() / ARP()), bytes(Ether() / IP(dst="10.0.0.9") / UDP())]
    frames += [frame(p, LINKTYPE_ETHERNET) for p in handshake_packets()]
    stats = analyzer.Stats()
    conns = list(analyzer.analyze(write_pcap(tmp_path / "c.pcap", frames, LINKTYPE_ETHERNET), stats=stats))
    assert len(conns) == 1 and conns[0].first_frame == 3
    assert stats.bad_frames == 0
    assert sum(stats.skipped.values()) == 2

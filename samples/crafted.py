"""Captures crafted with scapy: TCP situations the kernel will not make on demand.

Same addresses and MACs as the namespace lab (client 10.77.0.1, server
10.77.0.2), realistic ISNs, SYN options (MSS, SACK-permitted, timestamps,
window scale), timestamps a few milliseconds apart, Ethernet framing.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

CLIENT, SERVER = "10.77.0.1", "10.77.0.2"
CLIENT_MAC, SERVER_MAC = "02:77:00:00:00:01", "02:77:00:00:00:02"
CPORT, SPORT = 51724, 9000
ISN_C, ISN_S = 0x6A1F3C27, 0xC4B50E91
T0 = 1_700_000_000.125  # fixed capture start, so files are reproducible
TS_C, TS_S = 2_761_339_001, 1_407_880_412  # TCP timestamp clocks (ms)


def syn_options(tsval: int, tsecr: int) -> list[tuple[str, Any]]:
    return [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (tsval, tsecr)),
            ("NOP", None), ("WScale", 7)]


def ts_options(tsval: int, tsecr: int) -> list[tuple[str, Any]]:
    return [("NOP", None), ("NOP", None), ("Timestamp", (tsval, tsecr))]


class Builder:
    """Builds frames of one connection with increasing IP ids and times."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.ipid = {CLIENT: 0x3C1A, SERVER: 0x0000}

    def add(self, at_ms: float, from_client: bool, flags: str, seq: int, ack: int,
            options: list[tuple[str, Any]], window: int = 502) -> None:
        src, dst = (CLIENT, SERVER) if from_client else (SERVER, CLIENT)
        smac, dmac = (CLIENT_MAC, SERVER_MAC) if from_client else (SERVER_MAC,
                                                                   CLIENT_MAC)
        sport, dport = (CPORT, SPORT) if from_client else (SPORT, CPORT)
        frame = (Ether(src=smac, dst=dmac)
                 / IP(src=src, dst=dst, id=self.ipid[src], flags="DF", ttl=64)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=seq & 0xFFFFFFFF,
                       ack=ack & 0xFFFFFFFF, window=window, options=options))
        self.ipid[src] = (self.ipid[src] + 1) & 0xFFFF
        frame = Ether(bytes(frame))  # freeze lengths and checksums
        frame.time = T0 + at_ms / 1000
        self.frames.append(frame)

    def write(self, path: Path) -> Path:
        wrpcap(str(path), self.frames, linktype=1)
        return path


def rst_answers_synack(path: Path) -> Path:
    """Client side: SYN, SYN-ACK (2.1 ms later), RST with seq = SYN-ACK's ack."""
    b = Builder()
    b.add(0.0, True, "S", ISN_C, 0, syn_options(TS_C, 0), window=64240)
    b.add(2.1, False, "SA", ISN_S, ISN_C + 1, syn_options(TS_S, TS_C), window=65160)
    b.add(2.3, True, "R", ISN_C + 1, 0, [], window=0)
    return b.write(path)


def synrcvd_fin(path: Path) -> Path:
    """Server side, 20 ms RTT: the server's FIN leaves in SYN_RCVD, before the
    client's ACK of the SYN-ACK arrives; then the client ACKs and closes."""
    b = Builder()
    b.add(0.0, True, "S", ISN_C, 0, syn_options(TS_C, 0), window=64240)
    b.add(0.1, False, "SA", ISN_S, ISN_C + 1, syn_options(TS_S, TS_C), window=65160)
    b.add(4.0, False, "FA", ISN_S + 1, ISN_C + 1, ts_options(TS_S + 4, TS_C))
    b.add(20.2, True, "A", ISN_C + 1, ISN_S + 1, ts_options(TS_C + 20, TS_S))
    b.add(24.1, True, "A", ISN_C + 1, ISN_S + 2, ts_options(TS_C + 24, TS_S + 4))
    b.add(27.5, True, "FA", ISN_C + 1, ISN_S + 2, ts_options(TS_C + 27, TS_S + 4))
    b.add(37.6, False, "A", ISN_S + 2, ISN_C + 2, ts_options(TS_S + 37, TS_C + 27))
    return b.write(path)


def _pcapng(path: Path, frames: list[tuple[float, int, bytes]]) -> Path:
    """A pcapng with one interface per link type (in order of first use); microsecond times."""
    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = bytearray(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    interfaces: dict[int, int] = {}
    for _, linktype, _ in frames:
        if linktype not in interfaces:
            interfaces[linktype] = len(interfaces)
            out += block(1, struct.pack("<HHI", linktype, 0, 65535))
    for ts, linktype, data in frames:
        micros = round(ts * 1e6)
        out += block(6, struct.pack("<IIIII", interfaces[linktype], micros >> 32, micros & 0xFFFFFFFF, len(data),
                                    len(data)) + data)
    path.write_bytes(bytes(out))
    return path


def encapsulations_cases() -> list:
    try:
        from .encapsulations import CASES
    except ImportError:
        from encapsulations import CASES  # type: ignore[no-redef]
    return CASES


def encapsulations(path: Path, samples: Path) -> Path:
    """The kernel's connections of handshake_fourway_client_close.pcap (IPv4) and ipv6.pcap (IPv6),
    re-wrapped once per case of encapsulations.py, one second apart; copy i gets client port 50001 + i.
    The payload the kernel captures' snaplen left out is zeros here, so every tunnel header's length
    agrees with the inner packet's."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap
    kernel = {4: rdpcap(str(samples / "handshake_fourway_client_close.pcap")), 6: rdpcap(str(samples / "ipv6.pcap"))}
    t0 = float(kernel[4][0].time)
    frames = []
    for i, case in enumerate(encapsulations_cases()):
        packets = kernel[6 if case.v6 else 4]
        client = packets[0].payload.src
        for packet in packets:
            inner = packet.payload.copy()  # the IP packet
            fwd = inner.src == client
            if fwd:
                inner[TCP].sport = 50001 + i
            else:
                inner[TCP].dport = 50001 + i
            del inner[TCP].chksum
            whole = bytes(inner)  # the kernel captures' snaplen cut the payload: zeros make it whole again,
            wire = inner.len if inner.version == 4 else inner.plen + 40  # so outer lengths fit the inner packet
            inner = inner.__class__(whole + bytes(max(0, wire - len(whole))))
            when = t0 + i + float(packet.time) - float(packets[0].time)
            frames.append((when, case.linktype, case.wrap(inner, fwd)))
    return _pcapng(path, frames)


def fin_in_syn_sent(path: Path) -> Path:
    """The client's FIN in SYN_SENT (no ACK: it has nothing to acknowledge yet),
    then the SYN-ACK, the client's FIN+ACK sent again from ESTABLISHED, and a
    four-way close."""
    b = Builder()
    b.add(0.0, True, "S", ISN_C, 0, syn_options(TS_C, 0), window=64240)
    b.add(0.4, True, "F", ISN_C + 1, 0, ts_options(TS_C, 0))
    b.add(2.1, False, "SA", ISN_S, ISN_C + 1, syn_options(TS_S, TS_C), window=65160)
    b.add(2.3, True, "FA", ISN_C + 1, ISN_S + 1, ts_options(TS_C + 2, TS_S))
    b.add(4.2, False, "A", ISN_S + 1, ISN_C + 2, ts_options(TS_S + 2, TS_C + 2))
    b.add(9.8, False, "FA", ISN_S + 1, ISN_C + 2, ts_options(TS_S + 7, TS_C + 2))
    b.add(11.9, True, "A", ISN_C + 2, ISN_S + 2, ts_options(TS_C + 11, TS_S + 7))
    return b.write(path)


def swap_frames(source: Path, path: Path, first: int, second: int) -> Path:
    """The frames of `source` with frames `first` and `second` (1-based) trading
    places and times: the packets stay as captured, only their order changes."""
    frames = list(rdpcap(str(source)))
    a, b = frames[first - 1], frames[second - 1]
    a.time, b.time = b.time, a.time
    frames[first - 1], frames[second - 1] = b, a
    wrpcap(str(path), frames, linktype=1)
    return path

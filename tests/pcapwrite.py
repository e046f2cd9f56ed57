"""Write small captures in every format the reader accepts, byte by byte.

The writer is deliberately independent of analyzer/capture.py (it follows
the pcap and pcapng specifications directly), so that reading what it wrote
tests the reader rather than the reader's own assumptions.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether

LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_NULL, LINKTYPE_LOOP = 1, 101, 0, 108
LINKTYPE_SLL, LINKTYPE_SLL2 = 113, 276


def handshake_packets(v6: bool = False, sport: int = 40000, dport: int = 80) -> list:
    """SYN, SYN-ACK, ACK, FIN, ACK, FIN, ACK as scapy L3 packets (a four-way close)."""
    net = (IPv6(src="fd00::1", dst="fd00::2"), IPv6(src="fd00::2", dst="fd00::1")) if v6 else \
          (IP(src="10.0.0.1", dst="10.0.0.2"), IP(src="10.0.0.2", dst="10.0.0.1"))
    c, s = net
    return [
        c / TCP(sport=sport, dport=dport, flags="S", seq=100, options=[("MSS", 1460)]),
        s / TCP(sport=dport, dport=sport, flags="SA", seq=500, ack=101),
        c / TCP(sport=sport, dport=dport, flags="A", seq=101, ack=501),
        c / TCP(sport=sport, dport=dport, flags="FA", seq=101, ack=501),
        s / TCP(sport=dport, dport=sport, flags="A", seq=501, ack=102),
        s / TCP(sport=dport, dport=sport, flags="FA", seq=501, ack=102),
        c / TCP(sport=sport, dport=dport, flags="A", seq=102, ack=502),
    ]


def frame(l3, linktype: int, vlans: int = 0) -> bytes:
    """Wrap an IP packet in the link layer of `linktype` (Ethernet may get VLAN tags)."""
    v6 = l3.haslayer(IPv6)
    if linktype == LINKTYPE_ETHERNET:
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        tags = [Dot1AD(vlan=100)] + [Dot1Q(vlan=200 + i) for i in range(vlans - 1)] if vlans else []
        packet = eth
        for tag in tags:
            packet = packet / tag
        return bytes(packet / l3)
    if linktype == LINKTYPE_SLL:
        return bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02" * 6 + b"\0\0") / l3)
    if linktype == LINKTYPE_SLL2:
        proto = 0x86DD if v6 else 0x0800
        return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02" * 6 + b"\0\0") + bytes(l3)
    if linktype == LINKTYPE_NULL:
        return struct.pack("<I", 30 if v6 else 2) + bytes(l3)
    if linktype == LINKTYPE_LOOP:
        return struct.pack(">I", 24 if v6 else 2) + bytes(l3)
    return bytes(l3)


def write_pcap(path: Path, frames: list[bytes], linktype: int, *, nano: bool = False,
               big_endian: bool = False, t0: float = 1700000000.0, snaplen: int = 65535,
               wire_lens: list[int] | None = None) -> Path:
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = bytearray(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    for i, data in enumerate(frames):
        ts = t0 + i * 0.001
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        wire = wire_lens[i] if wire_lens else len(data)
        out += struct.pack(order + "IIII", sec, frac, len(data), wire) + data
    path.write_bytes(bytes(out))
    return path


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = 12 + len(body)
    return struct.pack("<II", block_type, size) + body + struct.pack("<I", size)


def write_pcapng(path: Path, frames: list[tuple[int, bytes]], linktypes: list[int],
                 t0: float = 1700000000.0, tsresol_nano: bool = False) -> Path:
    """`frames` are (interface index, bytes); one interface block per link type."""
    out = bytearray(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    for linktype in linktypes:
        options = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0) if tsresol_nano else b""
        out += _block(1, struct.pack("<HHI", linktype, 0, 0) + options)
    unit = 1e9 if tsresol_nano else 1e6
    for i, (iface, data) in enumerate(frames):
        ticks = round((t0 + i * 0.001) * unit)
        out += _block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                                     len(data), len(data)) + data)
    path.write_bytes(bytes(out))
    return path


def gzip_file(path: Path) -> Path:
    target = path.with_suffix(path.suffix + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


__all__ = ["IPv6ExtHdrDestOpt", "IPv6ExtHdrHopByHop", "frame", "handshake_packets",
           "write_pcap", "write_pcapng"]

"""A tiny standard-library reader of TCP segments in pcap and pcapng files.

Only what the sample generator needs to verify its own captures: Ethernet
(one VLAN tag, whose id the segment keeps), Linux cooked v1/v2 and raw-IP
link types, IPv4 and IPv6 (no extension headers), VXLAN on port 4789 (the
inner frame's segment), TCP header fields. Payload length comes from the IP length field, so
it is right even for captures with a small snaplen.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_SLL2 = 1, 101, 113, 276
PCAPNG_MAGIC = 0x0A0D0D0A


@dataclass(frozen=True)
class Segment:
    """One TCP segment as seen in a capture."""

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    plen: int
    options: bytes
    vlan: int = 0  # the VLAN id of the outer Ethernet header's tag, 0: none

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def tag(self) -> str:
        """tcpdump-like flag string: S, S., ., P., F., R, R., ..."""
        letters = "".join(ch for bit, ch in ((SYN, "S"), (FIN, "F"), (PSH, "P"),
                                             (RST, "R")) if self.flags & bit)
        return letters + ("." if self.has_ack else "")

    @property
    def seq_end(self) -> int:
        """Sequence number after this segment (SYN and FIN count one)."""
        return (self.seq + self.plen + self.syn + self.fin) & 0xFFFFFFFF


@dataclass(frozen=True)
class Capture:
    linktype: int
    fmt: str  # "pcap" or "pcapng"
    frames: int
    segments: list[Segment]


def read(path: Path) -> Capture:
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == PCAPNG_MAGIC:
        linktype, frames = _pcapng_frames(data)
        fmt = "pcapng"
    else:
        linktype, frames = _pcap_frames(data)
        fmt = "pcap"
    segs = [s for ts, lt, frame in frames if (s := _segment(ts, lt, frame))]
    return Capture(linktype, fmt, len(frames), segs)


def _pcap_frames(data: bytes) -> tuple[int, list[tuple[float, int, bytes]]]:
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    frames, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        ts = sec + frac / (1e9 if nano else 1e6)
        frames.append((ts, linktype, data[pos + 16:pos + 16 + caplen]))
        pos += 16 + caplen
    return linktype, frames


def _pcapng_frames(data: bytes) -> tuple[int, list[tuple[float, int, bytes]]]:
    endian = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    links: list[tuple[int, float]] = []
    frames, pos = [], 0
    while pos + 12 <= len(data):
        btype, blen = struct.unpack(endian + "II", data[pos:pos + 8])
        body = data[pos + 8:pos + blen - 4]
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack(endian + "H", body[:2])[0]
            links.append((linktype, _tsresol(endian, body[8:])))
        elif btype == 6:  # Enhanced Packet Block
            ifid, hi, lo, caplen, _ = struct.unpack(endian + "IIIII", body[:20])
            linktype, unit = links[ifid]
            frames.append((((hi << 32) | lo) * unit, linktype, body[20:20 + caplen]))
        pos += blen
    return (links[0][0] if links else -1), frames


def _tsresol(endian: str, opts: bytes) -> float:
    """Seconds per timestamp tick from an IDB's if_tsresol option (code 9)."""
    i = 0
    while i + 4 <= len(opts):
        code, length = struct.unpack(endian + "HH", opts[i:i + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            res = opts[i + 4]
            return 2.0 ** -(res & 0x7F) if res & 0x80 else 10.0 ** -res
        i += 4 + (length + 3) // 4 * 4
    return 1e-6


def _network_payload(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """Return (ethertype, L3 bytes) for the link types we know."""
    if linktype == LINK_ETHERNET:
        etype, off = struct.unpack("!H", frame[12:14])[0], 14
        if etype == 0x8100:
            etype, off = struct.unpack("!H", frame[16:18])[0], 18
        pkt = frame[off:]
        if etype == 0x0800 and len(pkt) >= 44 and pkt[9] == 17 and pkt[22:24] == b"\x12\xb5":  # VXLAN, 4789
            return _network_payload(LINK_ETHERNET, pkt[(pkt[0] & 0x0F) * 4 + 16:])
        return etype, pkt
    if linktype == LINK_SLL:
        return struct.unpack("!H", frame[14:16])[0], frame[16:]
    if linktype == LINK_SLL2:
        return struct.unpack("!H", frame[0:2])[0], frame[20:]
    if linktype == LINK_RAW and frame:
        return (0x0800 if frame[0] >> 4 == 4 else 0x86DD), frame
    return None


def _segment(ts: float, linktype: int, frame: bytes) -> Segment | None:
    l3 = _network_payload(linktype, frame)
    if l3 is None:
        return None
    etype, pkt = l3
    if etype == 0x0800 and len(pkt) >= 20 and pkt[9] == 6:
        ihl, total = (pkt[0] & 0x0F) * 4, struct.unpack("!H", pkt[2:4])[0]
        src, dst = ipaddress.ip_address(pkt[12:16]), ipaddress.ip_address(pkt[16:20])
        tcp, tcp_room = pkt[ihl:], total - ihl
    elif etype == 0x86DD and len(pkt) >= 40 and pkt[6] == 6:
        src, dst = ipaddress.ip_address(pkt[8:24]), ipaddress.ip_address(pkt[24:40])
        tcp, tcp_room = pkt[40:], struct.unpack("!H", pkt[4:6])[0]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", tcp[:14])
    hlen = (off >> 4) * 4
    vlan = struct.unpack("!H", frame[14:16])[0] & 0x0FFF if linktype == LINK_ETHERNET and frame[12:14] == b"\x81\x00" \
        else 0
    return Segment(ts, str(src), sport, str(dst), dport, seq, ack, flags,
                   tcp_room - hlen, bytes(tcp[20:hlen]), vlan)


def tcp_options(seg: Segment) -> Iterator[tuple[int, bytes]]:
    """Yield (kind, value) for each TCP option of a segment."""
    opts, i = seg.options, 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return
        length = opts[i + 1]
        yield kind, opts[i + 2:i + length]
        i += length

"""From a captured frame to a TCP segment: link layer, IPv4/IPv6, TCP header.

`decode(frame)` returns a `Segment`, or a `Skip` saying why the frame holds no
TCP segment we can use. A `Skip` is either ordinary (ARP, UDP, a link type we
do not read) or `malformed` (a header that contradicts itself); the pipeline
counts both and names the first few malformed frames in its summary.

The headers are read with `struct` at fixed offsets rather than through an
object per layer: this is the per-packet hot path (see issue 6). Sequence
numbers stay plain unsigned 32-bit integers; comparing them is
`connection.py`'s business. TCP options are parsed (with dpkt) only on SYN
segments, the one place where they describe the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from analyzer.capture import RawFrame

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

LINKTYPE_NAMES = {
    0: "NULL", 1: "EN10MB", 9: "PPP", 12: "RAW", 14: "RAW", 101: "RAW", 105: "IEEE802_11",
    108: "LOOP", 113: "LINUX_SLL", 127: "IEEE802_11_RADIOTAP", 228: "IPV4", 229: "IPV6",
    276: "LINUX_SLL2",
}
VLAN_TYPES = frozenset({0x8100, 0x88A8, 0x9100})
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
BSD_AF_INET6 = frozenset({10, 24, 28, 30})
IPV6_SKIPPABLE = frozenset({0, 43, 60, 135, 139, 140})

_HALF = struct.Struct("!H")
_TCP = struct.Struct("!HHIIBBH")


@dataclass(slots=True)
class Segment:
    """The fields of one TCP segment that the analysis needs."""

    frame: int
    ts: float
    ip_version: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload_len: int
    window: int
    options: dict[str, int | bool] | None = None  # only on SYN segments

    @property
    def seq_len(self) -> int:
        """Sequence space the segment occupies: payload, plus one each for SYN and FIN."""
        return self.payload_len + (self.flags & SYN and 1) + (self.flags & FIN and 1)


@dataclass(slots=True, frozen=True)
class Skip:
    """Why a frame gave no segment."""

    reason: str
    malformed: bool = False


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"linktype {linktype}")


def decode(frame: RawFrame) -> Segment | Skip:
    """Decode one frame down to its TCP segment."""
    located = _network_layer(frame.linktype, frame.data)
    if isinstance(located, Skip):
        return located
    version, offset = located
    if version == 4:
        return _ipv4(frame, offset)
    return _ipv6(frame, offset)


def _network_layer(linktype: int, data: bytes) -> tuple[int, int] | Skip:
    """Return (IP version, offset of the IP header) for the frame's link type."""
    if linktype == 1:
        return _ethertype(data, 12)
    if linktype == 113:
        return _ethertype(data, 14)
    if linktype == 276:
        return _ethertype(data, 0, header_end=20)
    if linktype in (12, 14, 101):
        return _raw_ip(data, 0)
    if linktype == 228:
        return (4, 0)
    if linktype == 229:
        return (6, 0)
    if linktype in (0, 108):
        return _bsd_loopback(linktype, data)
    return Skip(f"unsupported link type {linktype_name(linktype)}")


def _ethertype(data: bytes, at: int, header_end: int | None = None) -> tuple[int, int] | Skip:
    """Follow the EtherType at `at` (and any VLAN tags) to the IP header."""
    end = at + 2 if header_end is None else header_end
    if len(data) < end:
        return Skip("link-layer header cut short", malformed=True)
    kind = _HALF.unpack_from(data, at)[0]
    while kind in VLAN_TYPES:  # 802.1Q / 802.1ad / QinQ: TCI, then the next EtherType
        at, end = end + 2, end + 4
        if len(data) < end:
            return Skip("VLAN tag cut short", malformed=True)
        kind = _HALF.unpack_from(data, at)[0]
    if kind == ETH_IPV4:
        return (4, end)
    if kind == ETH_IPV6:
        return (6, end)
    return Skip("not IP (ARP, LLC, ...)")


def _raw_ip(data: bytes, at: int) -> tuple[int, int] | Skip:
    if len(data) <= at:
        return Skip("empty raw IP frame", malformed=True)
    version = data[at] >> 4
    if version in (4, 6):
        return (version, at)
    return Skip(f"raw frame with IP version {version}", malformed=True)


def _bsd_loopback(linktype: int, data: bytes) -> tuple[int, int] | Skip:
    if len(data) < 4:
        return Skip("loopback header cut short", malformed=True)
    family = int.from_bytes(data[:4], "big" if linktype == 108 else "little")
    if family > 0xFFFF:  # written in the other byte order
        family = int.from_bytes(data[:4], "big")
    if family == 2:
        return (4, 4)
    if family in BSD_AF_INET6:
        return (6, 4)
    return Skip("not IP (loopback family)")


def _cut(frame: RawFrame, what: str) -> Skip:
    if frame.wire_len > len(frame.data):
        return Skip(f"cut by the snaplen before the end of the {what}", malformed=True)
    return Skip(f"{what} cut short", malformed=True)


def _ipv4(frame: RawFrame, at: int) -> Segment | Skip:
    data = frame.data
    if len(data) < at + 20:
        return _cut(frame, "IPv4 header")
    first = data[at]
    if first >> 4 != 4:
        return Skip(f"IPv4 header with version {first >> 4}", malformed=True)
    ihl = (first & 0x0F) * 4
    if ihl < 20:
        return Skip(f"IPv4 header length {ihl} is under 20", malformed=True)
    if data[at + 9] != 6:
        return Skip("not TCP (UDP, ICMP, ...)")
    total = _HALF.unpack_from(data, at + 2)[0] or len(data) - at  # 0: TSO on the capturing host
    if total < ihl:
        return Skip(f"IPv4 total length {total} is under its header length {ihl}", malformed=True)
    if _HALF.unpack_from(data, at + 6)[0] & 0x1FFF:
        return Skip("IP fragment")
    src, dst = data[at + 12:at + 16], data[at + 16:at + 20]
    return _tcp(frame, 4, src, dst, at + ihl, total - ihl)


def _ipv6(frame: RawFrame, at: int) -> Segment | Skip:
    data = frame.data
    if len(data) < at + 40:
        return _cut(frame, "IPv6 header")
    if data[at] >> 4 != 6:
        return Skip(f"IPv6 header with version {data[at] >> 4}", malformed=True)
    length = _HALF.unpack_from(data, at + 4)[0] or len(data) - at - 40  # 0: jumbogram / TSO
    src, dst = data[at + 8:at + 24], data[at + 24:at + 40]
    nxt, pos, end = data[at + 6], at + 40, at + 40 + length
    while nxt != 6:
        if nxt == 44:  # fragment header
            if len(data) < pos + 8:
                return _cut(frame, "IPv6 fragment header")
            if _HALF.unpack_from(data, pos + 2)[0] & 0xFFF8:
                return Skip("IP fragment")
            nxt, pos = data[pos], pos + 8
        elif nxt in IPV6_SKIPPABLE or nxt == 51:
            if len(data) < pos + 2:
                return _cut(frame, "IPv6 extension header")
            size = (data[pos + 1] + 2) * 4 if nxt == 51 else (data[pos + 1] + 1) * 8
            nxt, pos = data[pos], pos + size
        else:
            return Skip("not TCP (UDP, ICMPv6, ...)")
    return _tcp(frame, 6, src, dst, pos, end - pos)


def _tcp(frame: RawFrame, version: int, src: bytes, dst: bytes, at: int, length: int) -> Segment | Skip:
    data = frame.data
    if len(data) < at + 20:
        return _cut(frame, "TCP header")
    sport, dport, seq, ack, offset_byte, flags, window = _TCP.unpack_from(data, at)
    header = (offset_byte >> 4) * 4
    if header < 20:
        return Skip(f"TCP data offset {header // 4} is under 5", malformed=True)
    if header > length:
        return Skip(f"TCP data offset {header // 4} runs past the segment's {length} bytes", malformed=True)
    segment = Segment(frame.number, frame.ts, version, src, dst, sport, dport, seq, ack,
                      flags, length - header, window)
    if flags & SYN and header > 20:
        segment.options = parse_options(data[at + 20:at + header])
    return segment


def parse_options(raw: bytes) -> dict[str, int | bool]:
    """The handshake options of a SYN: MSS, window scale, SACK permitted, timestamps."""
    import dpkt  # here, not at the top: 60 ms of import that only SYNs with options need
    found: dict[str, int | bool] = {}
    for option in dpkt.tcp.parse_opts(raw):
        if option is None:
            break
        kind, value = option
        if kind == dpkt.tcp.TCP_OPT_MSS and len(value) == 2:
            found["mss"] = _HALF.unpack(value)[0]
        elif kind == dpkt.tcp.TCP_OPT_WSCALE and len(value) == 1:
            found["wscale"] = value[0]
        elif kind == dpkt.tcp.TCP_OPT_SACKOK:
            found["sack"] = True
        elif kind == dpkt.tcp.TCP_OPT_TIMESTAMP:
            found["timestamps"] = True
        elif kind == 34:
            found["fastopen"] = True
    return found

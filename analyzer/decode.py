"""From a captured frame to a TCP segment: link layer, IPv4/IPv6, TCP header.

The layers before the inner IP header (link types, VLAN tags, MPLS, PPPoE,
PBB, VN-Tag) are layers.py's, the tunnels inside IP tunnels.py's; `decode`
walks them step by step, a bounded number of steps, and the segment keeps
what it went through (`vlan`, `vni`, `tunnel`) for its connection's key and
record.

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
from analyzer.layers import (
    ETHER,
    IP4,
    IP6,
    LLC,
    MAX_LAYERS,
    MPLS,
    PPP,
    WIFI,
    Path,
    Skip,
    Step,
    cut,
    ethertype,
    fddi,
    llc,
    mpls,
    nflog,
    ppp,
    ppp_hdlc,
    radiotap,
    wifi,
)
from analyzer.tunnels import IP_TUNNEL_PROTOCOLS, ip_tunnel, udp_tunnel_port

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

LINKTYPE_NAMES = {
    0: "NULL", 1: "EN10MB", 9: "PPP", 10: "FDDI", 12: "RAW", 14: "RAW", 50: "PPP_HDLC", 101: "RAW",
    104: "C_HDLC", 105: "IEEE802_11", 108: "LOOP", 113: "LINUX_SLL", 119: "IEEE802_11_PRISM",
    127: "IEEE802_11_RADIOTAP", 163: "IEEE802_11_AVS", 192: "PPI", 228: "IPV4", 229: "IPV6", 239: "NFLOG",
    276: "LINUX_SLL2",
}  # 119, 163 and 192 are named, not read
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
BSD_AF_INET6 = frozenset({10, 24, 28, 30})
IPV6_SKIPPABLE = frozenset({0, 43, 60, 135, 139, 140})
_MAX_STEPS = 4 * MAX_LAYERS + 8  # more than any chain of MAX_LAYERS encapsulations needs

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
    vlan: tuple[int, ...] = ()   # the first two VLAN ids on the way (part of the connection key)
    vni: int = -1                # the VXLAN/Geneve network id (part of the key), -1: none
    tunnel: str | None = None    # the encapsulations around it, outermost first
    kinds: int = 0               # layers.KIND_BIT of each kind of encapsulation

    @property
    def seq_len(self) -> int:
        """Sequence space the segment occupies: payload, plus one each for SYN and FIN."""
        return self.payload_len + (self.flags & SYN and 1) + (self.flags & FIN and 1)


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"linktype {linktype}")


def decode(frame: RawFrame) -> Segment | Skip:
    """Decode one frame down to its TCP segment, through whatever encapsulates it."""
    path = Path()
    step = _network_layer(frame.linktype, frame, path)
    for _ in range(_MAX_STEPS):
        if not isinstance(step, tuple):
            return step
        kind, at = step
        if kind == IP4:
            step = _ipv4(frame, at, path)
        elif kind == IP6:
            step = _ipv6(frame, at, path)
        elif kind == ETHER:
            step = ethertype(frame, at, at + 2, path)
        else:
            step = _LAYERS[kind](frame, at, path)
    return step if not isinstance(step, tuple) else Skip("encapsulations nested too deep", malformed=True)


def _network_layer(linktype: int, frame: RawFrame, path: Path) -> Step | Skip:
    """The first step for the frame's link type."""
    data = frame.data
    if linktype == 1:
        return ethertype(frame, 12, 14, path)
    if linktype == 113:
        return ethertype(frame, 14, 16, path)
    if linktype == 276:
        return ethertype(frame, 0, 20, path)
    if linktype in (12, 14, 101):
        return _raw_ip(data, 0)
    if linktype == 228:
        return (IP4, 0)
    if linktype == 229:
        return (IP6, 0)
    if linktype in (0, 108):
        return _bsd_loopback(linktype, data)
    if linktype in _LINKS:
        return _LINKS[linktype](frame)
    return Skip(f"unsupported link type {linktype_name(linktype)}")


def _raw_ip(data: bytes, at: int) -> Step | Skip:
    if len(data) <= at:
        return Skip("empty raw IP frame", malformed=True)
    version = data[at] >> 4
    if version in (4, 6):
        return (IP4 if version == 4 else IP6, at)
    return Skip(f"raw frame with IP version {version}", malformed=True)


def _bsd_loopback(linktype: int, data: bytes) -> Step | Skip:
    if len(data) < 4:
        return Skip("loopback header cut short", malformed=True)
    family = int.from_bytes(data[:4], "big" if linktype == 108 else "little")
    if family > 0xFFFF:  # written in the other byte order
        family = int.from_bytes(data[:4], "big")
    if family == 2:
        return (IP4, 4)
    if family in BSD_AF_INET6:
        return (IP6, 4)
    return Skip("not IP (loopback family)")


_LINKS = {9: lambda frame: (PPP, 0), 10: fddi, 50: ppp_hdlc, 104: lambda frame: (ETHER, 2),
          105: lambda frame: (WIFI, 0), 127: radiotap, 239: nflog}
_LAYERS = {MPLS: mpls, PPP: ppp, LLC: llc, WIFI: wifi}


def _ipv4(frame: RawFrame, at: int, path: Path) -> Segment | Step | Skip:
    data = frame.data
    if len(data) < at + 20:
        return cut(frame, "IPv4 header")
    first = data[at]
    if first >> 4 != 4:
        return Skip(f"IPv4 header with version {first >> 4}", malformed=True)
    ihl = (first & 0x0F) * 4
    if ihl < 20:
        return Skip(f"IPv4 header length {ihl} is under 20", malformed=True)
    protocol = data[at + 9]
    if protocol != 6 and (protocol not in IP_TUNNEL_PROTOCOLS or (protocol == 17 and (
            _HALF.unpack_from(data, at + 6)[0] & 0x1FFF or udp_tunnel_port(frame, at + ihl) is None))):
        return Skip("not TCP (UDP, ICMP, ...)")
    total = _HALF.unpack_from(data, at + 2)[0] or len(data) - at  # 0: TSO on the capturing host
    if total < ihl:
        return Skip(f"IPv4 total length {total} is under its header length {ihl}", malformed=True)
    if _HALF.unpack_from(data, at + 6)[0] & 0x1FFF:
        return Skip("IP fragment")
    src, dst = data[at + 12:at + 16], data[at + 16:at + 20]
    if protocol != 6:
        return ip_tunnel(frame, 4, protocol, src, dst, at + ihl, path) or Skip("not TCP (UDP, ICMP, ...)")
    return _tcp(frame, 4, src, dst, at + ihl, total - ihl, path)


def _ipv6(frame: RawFrame, at: int, path: Path) -> Segment | Step | Skip:
    data = frame.data
    if len(data) < at + 40:
        return cut(frame, "IPv6 header")
    if data[at] >> 4 != 6:
        return Skip(f"IPv6 header with version {data[at] >> 4}", malformed=True)
    length = _HALF.unpack_from(data, at + 4)[0] or len(data) - at - 40  # 0: jumbogram / TSO
    src, dst = data[at + 8:at + 24], data[at + 24:at + 40]
    nxt, pos, end = data[at + 6], at + 40, at + 40 + length
    while nxt != 6:
        if nxt == 44:  # fragment header
            if len(data) < pos + 8:
                return cut(frame, "IPv6 fragment header")
            if _HALF.unpack_from(data, pos + 2)[0] & 0xFFF8:
                return Skip("IP fragment")
            nxt, pos = data[pos], pos + 8
        elif nxt in IPV6_SKIPPABLE or nxt == 51:
            if len(data) < pos + 2:
                return cut(frame, "IPv6 extension header")
            size = (data[pos + 1] + 2) * 4 if nxt == 51 else (data[pos + 1] + 1) * 8
            nxt, pos = data[pos], pos + size
        elif nxt in IP_TUNNEL_PROTOCOLS:
            return ip_tunnel(frame, 6, nxt, src, dst, pos, path) or Skip("not TCP (UDP, ICMPv6, ...)")
        else:
            return Skip("not TCP (UDP, ICMPv6, ...)")
    return _tcp(frame, 6, src, dst, pos, end - pos, path)


def _tcp(frame: RawFrame, version: int, src: bytes, dst: bytes, at: int, length: int,
         path: Path) -> Segment | Skip:
    data = frame.data
    if len(data) < at + 20:
        return cut(frame, "TCP header")
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
    if path.vlans:
        segment.vlan = tuple(path.vlans)
    if path.layers:
        segment.tunnel = " / ".join(path.layers)
        segment.vni, segment.kinds = path.vni, path.kinds
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

"""Tunnels carried by IP: IP in IP, GRE (and ERSPAN, PPTP), and the UDP tunnels.

decode.py calls `ip_tunnel` when an IP header's protocol is not TCP; it says
what comes next (a step, as in layers.py), why the frame gives no segment, or
None when the packet is no tunnel we read (ordinary UDP: "not TCP", as
before). Each tunnel adds one layer to the frame's Path, written as its kind,
its identity (key, VNI, TEID, session) and the outer addresses it was seen
between, e.g. "vxlan 4789 vni 42 over 192.0.2.1>192.0.2.2". A UDP tunnel is
recognised by its well-known port, the destination's first, then the source's
(as Wireshark's default port registrations do). analyzer/_engine/decode.c
follows this file, branch by branch.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from analyzer.layers import ETHER, IP4, IP6, MPLS, PPP, UDP_TUNNELS, Path, Skip, Step, address, cut

if TYPE_CHECKING:
    from analyzer.capture import RawFrame

_HALF = struct.Struct("!H")
_WORD = struct.Struct("!I")
IP_TUNNEL_PROTOCOLS = frozenset({4, 41, 47, 17})


def ip_tunnel(frame: RawFrame, version: int, protocol: int, src: bytes, dst: bytes, at: int,
              path: Path) -> Step | Skip | None:
    """The tunnel an IP packet of this protocol carries from `at`, if it is one."""
    over = f"over {address(src)}>{address(dst)}"
    if protocol in (4, 41):
        inner = 4 if protocol == 4 else 6
        return path.add(f"{inner}in{version}", f"{inner}in{version} {over}") or (IP4 if inner == 4 else IP6, at)
    if protocol == 47:
        return gre(frame, at, path, "gre", over)
    return _udp(frame, at, path, over)


def udp_tunnel_port(frame: RawFrame, at: int) -> int | None:
    """The tunnel port of the UDP header at `at`, or None (not a tunnel, or no room for its header)."""
    if len(frame.data) < at + 8:
        return None
    sport, dport = struct.unpack_from("!HH", frame.data, at)
    if dport in UDP_TUNNELS:
        return dport
    return sport if sport in UDP_TUNNELS else None


def _udp(frame: RawFrame, at: int, path: Path, over: str) -> Step | Skip | None:
    port = udp_tunnel_port(frame, at)
    if port is None:
        return None
    kind, at = UDP_TUNNELS[port], at + 8
    if kind == "gre-udp":
        return gre(frame, at, path, f"gre-udp {port}", over)
    return _UDP_DECODERS[kind](frame, at, path, f"{port} {over}")


def gre(frame: RawFrame, at: int, path: Path, name: str, over: str) -> Step | Skip:
    """GRE (version 0, or 1 for PPTP): flags, protocol, then checksum, key, sequence, ack as flagged."""
    data = frame.data
    if len(data) < at + 4:
        return cut(frame, "GRE header")
    flags, protocol = struct.unpack_from("!HH", data, at)
    version = flags & 7
    if version > 1:
        return Skip(f"GRE version {version}", malformed=True)
    if flags & 0x4000:
        return Skip("tunnel not decoded (GRE with source routing)")
    pos = at + 4 + (4 if flags & 0x8000 else 0)
    key = _WORD.unpack_from(data, pos)[0] if flags & 0x2000 and len(data) >= pos + 4 else None
    pos += (4 if flags & 0x2000 else 0) + (4 if flags & 0x1000 else 0) + (4 if version and flags & 0x80 else 0)
    if len(data) < pos:
        return cut(frame, "GRE header")
    kind = "gre" if name == "gre" else "gre-udp"
    if protocol in (0x88BE, 0x22EB):
        return _erspan(frame, pos, path, protocol, bool(flags & 0x1000), over)
    if version == 1:
        call = key & 0xFFFF if key is not None else 0
        return path.add(kind, f"{name} pptp call {call} {over}") or (PPP, pos)
    skip = path.add(kind, f"{name} key {key} {over}" if key is not None else f"{name} {over}")
    if skip:
        return skip
    if protocol == 0x0800:
        return (IP4, pos)
    if protocol == 0x86DD:
        return (IP6, pos)
    if protocol == 0x6558:  # transparent Ethernet bridging (gretap)
        return (ETHER, pos + 12)
    if protocol in (0x8847, 0x8848):
        return (MPLS, pos)
    return Skip(f"not IP (GRE protocol 0x{protocol:04x})")


def _erspan(frame: RawFrame, at: int, path: Path, protocol: int, sequenced: bool, over: str) -> Step | Skip:
    """ERSPAN type I (no header, no GRE sequence), II (8 bytes) or III (12, and 8 more with O set)."""
    data = frame.data
    if protocol == 0x88BE and not sequenced:
        return path.add("erspan", f"erspan i {over}") or (ETHER, at + 12)
    size, wanted, name = (8, 1, "ii") if protocol == 0x88BE else (12, 2, "iii")
    if len(data) < at + size:
        return cut(frame, "ERSPAN header")
    version = data[at] >> 4
    if version != wanted:
        return Skip(f"ERSPAN type {name} header with version {version}", malformed=True)
    if wanted == 2 and data[at + 11] & 1:
        size += 8
    session = _HALF.unpack_from(data, at + 2)[0] & 0x3FF
    return path.add("erspan", f"erspan {name} session {session} {over}") or (ETHER, at + size + 12)


def _vxlan(frame: RawFrame, at: int, path: Path, where: str) -> Step | Skip:
    if len(frame.data) < at + 8:
        return cut(frame, "VXLAN header")
    vni = _WORD.unpack_from(frame.data, at + 4)[0] >> 8
    path.vni = vni
    return path.add("vxlan", f"vxlan {where.replace(' over', f' vni {vni} over', 1)}") or (ETHER, at + 20)


def _geneve(frame: RawFrame, at: int, path: Path, where: str) -> Step | Skip:
    data = frame.data
    if len(data) < at + 8:
        return cut(frame, "Geneve header")
    if data[at] >> 6:
        return Skip(f"Geneve version {data[at] >> 6}", malformed=True)
    inner = at + 8 + (data[at] & 0x3F) * 4
    protocol = _HALF.unpack_from(data, at + 2)[0]
    vni = _WORD.unpack_from(data, at + 4)[0] >> 8
    path.vni = vni
    skip = path.add("geneve", f"geneve {where.replace(' over', f' vni {vni} over', 1)}")
    if skip:
        return skip
    if protocol == 0x6558:
        return (ETHER, inner + 12)
    if protocol == 0x0800:
        return (IP4, inner)
    if protocol == 0x86DD:
        return (IP6, inner)
    return Skip(f"not IP (Geneve protocol 0x{protocol:04x})")


def _gtpu(frame: RawFrame, at: int, path: Path, where: str) -> Step | Skip:
    """GTP-U version 1: G-PDUs carry IP; the optional fields and extension headers are stepped over."""
    data = frame.data
    if len(data) < at + 8:
        return cut(frame, "GTP-U header")
    flags = data[at]
    if flags >> 5 != 1:
        return Skip(f"GTP-U version {flags >> 5}", malformed=True)
    if data[at + 1] != 0xFF:
        return Skip("not TCP (GTP-U signalling)")
    teid, pos = _WORD.unpack_from(data, at + 4)[0], at + 8
    if flags & 0x07:
        if len(data) < at + 12:
            return cut(frame, "GTP-U header")
        following, pos = data[at + 11] if flags & 0x04 else 0, at + 12
        while following:
            if len(data) < pos + 1:
                return cut(frame, "GTP-U extension header")
            size = data[pos] * 4
            if size == 0:
                return Skip("GTP-U extension header length 0", malformed=True)
            if len(data) < pos + size:
                return cut(frame, "GTP-U extension header")
            following, pos = data[pos + size - 1], pos + size
    skip = path.add("gtp-u", f"gtp-u {where.replace(' over', f' teid {teid} over', 1)}")
    return skip or _ip_payload(frame, pos, "GTP-U")


def _teredo(frame: RawFrame, at: int, path: Path, where: str) -> Step | Skip:
    """Teredo: IPv6 in UDP, after an optional authentication and origin indication."""
    data = frame.data
    if len(data) >= at + 4 and data[at] == 0 and data[at + 1] == 1:  # authentication
        at += 13 + data[at + 2] + data[at + 3]
    if len(data) >= at + 2 and data[at] == 0 and data[at + 1] == 0:  # origin indication
        at += 8
    if len(data) <= at:
        return cut(frame, "Teredo header")
    if data[at] >> 4 != 6:
        return Skip("not IP (Teredo payload)")
    return path.add("teredo", f"teredo {where}") or (IP6, at)


def _ayiya(frame: RawFrame, at: int, path: Path, where: str) -> Step | Skip:
    """AYIYA: identity and signature sized by the header, then the packet its next header names."""
    data = frame.data
    if len(data) < at + 8:
        return cut(frame, "AYIYA header")
    size = 8 + (1 << (data[at] >> 4)) + (data[at + 1] >> 4) * 4
    if len(data) < at + size:
        return cut(frame, "AYIYA header")
    if data[at + 2] & 0x0F != 1:
        return Skip("not TCP (AYIYA signalling)")
    following = data[at + 3]
    if following not in (4, 41):
        return Skip(f"not IP (AYIYA next header {following})")
    return path.add("ayiya", f"ayiya {where}") or (IP4 if following == 4 else IP6, at + size)


def _ip_payload(frame: RawFrame, at: int, what: str) -> Step | Skip:
    if len(frame.data) <= at:
        return cut(frame, f"{what} payload")
    nibble = frame.data[at] >> 4
    if nibble == 4:
        return (IP4, at)
    if nibble == 6:
        return (IP6, at)
    return Skip(f"not IP ({what} payload)")


_UDP_DECODERS = {"vxlan": _vxlan, "geneve": _geneve, "gtp-u": _gtpu, "teredo": _teredo, "ayiya": _ayiya}

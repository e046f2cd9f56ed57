"""The layers between a frame's start and its inner IP header: link types, tags and tunnels.

decode.py walks a frame as a chain of steps: each function here reads one
header and says what comes next, as `(NEXT, offset)` (ETHER: the offset of
an EtherType field; IP4/IP6/MPLS/PPP/LLC/WIFI: of that header), or why the
frame gives no segment (a `Skip`). On the way it notes, in a `Path`, the VLAN
ids and the encapsulations it went through: the inner TCP connection is the
connection, and the layers around it go in its record ("tunnel", "vlan").

Every length is checked before it is read; a header that contradicts itself
is a malformed `Skip`, like any other damage. Nesting is bounded: a frame
may go through at most MAX_LAYERS encapsulations (VLAN tags aside, which
cost four bytes each and end with the frame), so a hostile capture that
nests tunnels forever costs a bounded walk, and a tunnel text of bounded
length. analyzer/_engine/decode.c does the same, branch by branch, with the
same sentences.

Header formats: IEEE 802.1Q/802.1ad (VLAN), 802.1ah (PBB I-TAG), Cisco
VN-Tag, RFC 2516 (PPPoE), RFC 1661/1662 (PPP), RFC 3032 (MPLS), RFC 2784/2890
(GRE, key and sequence), RFC 2637 (GRE version 1, PPTP), ERSPAN types I-III
(draft-foschiano-erspan), RFC 8086 (GRE in UDP, port 4754), RFC 7348
(VXLAN, 4789; 8472 is Linux's old default), RFC 8926 (Geneve, 6081), 3GPP TS
29.281 (GTP-U, 2152), RFC 4380 (Teredo, 3544), draft-massar-v6ops-ayiya
(AYIYA, 5072), RFC 2003/4213/2473 (IP in IP), IEEE 802.11 with LLC/SNAP,
radiotap, FDDI (ANSI X3.139) and Linux NFLOG (tcpdump.org's LINKTYPE_NFLOG).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analyzer.capture import RawFrame

ETHER, IP4, IP6, MPLS, PPP, LLC, WIFI = range(7)
Step = tuple[int, int]

#: every kind of encapsulation decoded, in the order the summary lists them
TUNNEL_KINDS = ("vn-tag", "pbb", "pppoe", "mpls", "gre", "erspan", "gre-udp", "vxlan", "geneve", "gtp-u",
                "teredo", "ayiya", "4in4", "6in4", "4in6", "6in6")
KIND_BIT = {kind: 1 << i for i, kind in enumerate(TUNNEL_KINDS)}
MAX_LAYERS = 8   # encapsulations one frame may nest
MAX_LABELS = 8   # MPLS labels in one stack
KEY_VLANS = 2    # VLAN ids kept (the first two met: outer and inner, as Zeek's vlan and inner_vlan)
UDP_TUNNELS = {4789: "vxlan", 8472: "vxlan", 6081: "geneve", 2152: "gtp-u", 3544: "teredo", 5072: "ayiya",
               4754: "gre-udp"}
VLAN_TYPES = frozenset({0x8100, 0x88A8, 0x9100})

_HALF = struct.Struct("!H")
_WORD = struct.Struct("!I")


@dataclass(slots=True, frozen=True)
class Skip:
    """Why a frame gave no segment."""

    reason: str
    malformed: bool = False


class Path:
    """What a frame went through on its way to the inner IP header."""

    __slots__ = ("kinds", "layers", "vlans", "vni")

    def __init__(self) -> None:
        self.vlans: list[int] = []
        self.layers: list[str] = []
        self.kinds = 0
        self.vni = -1  # the VXLAN or Geneve network id, the innermost: part of the key

    def add(self, kind: str, text: str) -> Skip | None:
        if len(self.layers) == MAX_LAYERS:
            return Skip(f"encapsulations nested deeper than {MAX_LAYERS}", malformed=True)
        self.layers.append(text)
        self.kinds |= KIND_BIT[kind]
        return None


def cut(frame: RawFrame, what: str) -> Skip:
    if frame.wire_len > len(frame.data):
        return Skip(f"cut by the snaplen before the end of the {what}", malformed=True)
    return Skip(f"{what} cut short", malformed=True)


def address(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


# ---- Ethernet and what an EtherType names ----------------------------------------------

def ethertype(frame: RawFrame, at: int, end: int, path: Path) -> Step | Skip:
    """The EtherType at `at` (payload from `end`), past any VLAN tags."""
    data = frame.data
    if len(data) < end:
        return Skip("link-layer header cut short", malformed=True)
    kind = _HALF.unpack_from(data, at)[0]
    while kind in VLAN_TYPES:  # 802.1Q / 802.1ad / QinQ: TCI, then the next EtherType
        at, end = end + 2, end + 4
        if len(data) < end:
            return Skip("VLAN tag cut short", malformed=True)
        vid = _HALF.unpack_from(data, at - 2)[0] & 0x0FFF
        if vid and len(path.vlans) < KEY_VLANS:  # 0: a priority tag, no VLAN
            path.vlans.append(vid)
        kind = _HALF.unpack_from(data, at)[0]
    if kind == 0x0800:
        return (IP4, end)
    if kind == 0x86DD:
        return (IP6, end)
    if kind in _ETHER_LAYERS:
        return _ETHER_LAYERS[kind](frame, end, path)
    return Skip("not IP (ARP, LLC, ...)")


def _mpls_type(frame: RawFrame, end: int, path: Path) -> Step | Skip:
    return (MPLS, end)


def _pbb(frame: RawFrame, end: int, path: Path) -> Step | Skip:
    if len(frame.data) < end + 18:
        return cut(frame, "PBB I-TAG")
    isid = _WORD.unpack_from(frame.data, end)[0] & 0xFFFFFF
    return path.add("pbb", f"pbb isid {isid}") or (ETHER, end + 16)


def _vntag(frame: RawFrame, end: int, path: Path) -> Step | Skip:
    if len(frame.data) < end + 6:
        return cut(frame, "VN-Tag")
    return path.add("vn-tag", "vn-tag") or (ETHER, end + 4)


def _pppoe(frame: RawFrame, end: int, path: Path) -> Step | Skip:
    data = frame.data
    if len(data) < end + 6:
        return cut(frame, "PPPoE header")
    if data[end] != 0x11:
        return Skip(f"PPPoE version and type 0x{data[end]:02x}, not 0x11", malformed=True)
    session = _HALF.unpack_from(data, end + 2)[0]
    return path.add("pppoe", f"pppoe session {session}") or (PPP, end + 6)


_ETHER_LAYERS = {0x8847: _mpls_type, 0x8848: _mpls_type, 0x88E7: _pbb, 0x8926: _vntag, 0x8864: _pppoe}


def mpls(frame: RawFrame, at: int, path: Path) -> Step | Skip:
    """A label stack down to its bottom (S bit), then IP, or Ethernet after a pseudowire control word."""
    data, labels = frame.data, []
    while True:
        if len(data) < at + 4:
            return cut(frame, "MPLS label stack")
        word = _WORD.unpack_from(data, at)[0]
        labels.append(str(word >> 12))
        at += 4
        if word & 0x100:
            break
        if len(labels) == MAX_LABELS:
            return Skip(f"MPLS label stack deeper than {MAX_LABELS}", malformed=True)
    skip = path.add("mpls", "mpls " + "/".join(labels))
    if skip:
        return skip
    if len(data) <= at:
        return cut(frame, "MPLS payload")
    nibble = data[at] >> 4
    if nibble == 4:
        return (IP4, at)
    if nibble == 6:
        return (IP6, at)
    if nibble == 0:  # a pseudowire control word, then an Ethernet frame
        return (ETHER, at + 16)
    return Skip("not IP (MPLS payload)")


def ppp(frame: RawFrame, at: int, path: Path) -> Step | Skip:
    """A PPP protocol field (after an optional FF 03 address and control; compressed when odd)."""
    data = frame.data
    if len(data) >= at + 2 and data[at] == 0xFF and data[at + 1] == 0x03:
        at += 2
    if len(data) < at + 1:
        return cut(frame, "PPP header")
    if data[at] & 1:
        protocol, at = data[at], at + 1
    else:
        if len(data) < at + 2:
            return cut(frame, "PPP header")
        protocol, at = _HALF.unpack_from(data, at)[0], at + 2
    if protocol == 0x21:
        return (IP4, at)
    if protocol == 0x57:
        return (IP6, at)
    if protocol == 0x281:
        return (MPLS, at)
    return Skip("not IP (PPP control, ...)")


def llc(frame: RawFrame, at: int, path: Path) -> Step | Skip:
    """802.2 LLC with SNAP: AA AA 03, an OUI, an EtherType."""
    data = frame.data
    if len(data) < at + 8:
        return cut(frame, "LLC/SNAP header")
    if data[at] != 0xAA or data[at + 1] != 0xAA or data[at + 2] != 0x03:
        return Skip("not IP (LLC without SNAP)")
    return (ETHER, at + 6)


def wifi(frame: RawFrame, at: int, path: Path) -> Step | Skip:
    """An 802.11 data frame: its MAC header, then LLC/SNAP."""
    data = frame.data
    if len(data) < at + 24:
        return cut(frame, "802.11 header")
    control, flags = data[at], data[at + 1]
    subtype = control >> 4
    if (control >> 2) & 3 != 2:
        return Skip("not IP (802.11 management or control)")
    if subtype & 4:
        return Skip("not IP (802.11 null data)")
    if flags & 0x40:
        return Skip("not IP (802.11 encrypted)")
    size = 24 + (6 if flags & 3 == 3 else 0)  # a fourth address between access points
    if subtype & 8:  # QoS data: QoS control, and HT control when the order bit is set
        size += 2 + (4 if flags & 0x80 else 0)
    return (LLC, at + size)


# ---- link types ----------------------------------------------------------------------

def radiotap(frame: RawFrame) -> Step | Skip:
    data = frame.data
    if len(data) < 4:
        return cut(frame, "radiotap header")
    length = data[2] | data[3] << 8
    if data[0] != 0:
        return Skip(f"radiotap version {data[0]}", malformed=True)
    if length < 8:
        return Skip(f"radiotap header length {length} is under 8", malformed=True)
    if len(data) < length:
        return cut(frame, "radiotap header")
    return (WIFI, length)


def fddi(frame: RawFrame) -> Step | Skip:
    data = frame.data
    if len(data) < 13:
        return cut(frame, "FDDI header")
    if data[0] & 0x70 != 0x50:
        return Skip("not IP (FDDI MAC or SMT frame)")
    return (LLC, 13)


def ppp_hdlc(frame: RawFrame) -> Step | Skip:
    """LINKTYPE_PPP_HDLC: PPP in HDLC-like framing, or Cisco HDLC (0x0F / 0x8F, then an EtherType)."""
    data = frame.data
    if data[:1] in (b"\x0f", b"\x8f"):
        return (ETHER, 2)
    return (PPP, 0)


def nflog(frame: RawFrame) -> Step | Skip:
    """Linux NFLOG: family, version, resource id, then TLVs (in the writer's byte order); the payload is IP."""
    data = frame.data
    if len(data) < 4:
        return cut(frame, "NFLOG header")
    family, pos = data[0], 4
    while len(data) >= pos + 4:
        length, kind = data[pos] | data[pos + 1] << 8, data[pos + 2] | data[pos + 3] << 8
        if kind > 0xFF:  # big-endian: the types are all under 256
            length, kind = data[pos] << 8 | data[pos + 1], data[pos + 2] << 8 | data[pos + 3]
        if length < 4:
            return Skip(f"NFLOG TLV length {length} is under 4", malformed=True)
        if kind == 9:  # NFULA_PAYLOAD
            if family == 2:
                return (IP4, pos + 4)
            if family == 10:
                return (IP6, pos + 4)
            return Skip(f"not IP (NFLOG family {family})")
        pos += (length + 3) & ~3
    return Skip("NFLOG record without a payload")

"""Where the fields are in a capture file: the map the fuzzer's field-aware mutations edit by.

`layout(data)` walks a pcap or pcapng file (as far as its lengths stay inside
the file, never trusting them further) and returns the offsets of its global
header or blocks, its interface blocks and every packet's frame with its link
type. `network_offset` and `transport_offset` go on into a frame: past the
link header (Ethernet with VLAN tags, Linux cooked v1/v2, BSD loopback, raw
IP) to the IPv4/IPv6 header and the TCP header.

This is a second, deliberately small reader, written for mutation: it never
raises on damaged input (it stops where the file stops making sense), so a
mutation can always find *some* field to edit. It is not the analyzer's
reader (analyzer/capture.py), which the fuzzer tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
               b"\xa1\xb2\x3c\x4d": ">"}
SHB = 0x0A0D0D0A
IDB, OPB, SPB, EPB = 1, 2, 3, 6
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
MAX_BLOCKS = 20_000


@dataclass
class Frame:
    """One packet's frame in the file: its record or block, where its bytes are, and its link type."""

    kind: str  # "pcap", "epb", "opb", "spb"
    header_at: int  # the record header or the block
    data_at: int
    caplen: int  # bytes of the frame present in the file
    linktype: int
    order: str  # "<" or ">"


@dataclass
class Layout:
    """The fields of a capture file that mutations know how to edit."""

    fmt: str  # "pcap", "pcapng" or "other"
    order: str = "<"
    frames: list[Frame] = field(default_factory=list)
    blocks: list[tuple[int, int, int, str]] = field(default_factory=list)  # (offset, type, length, order)
    interfaces: list[int] = field(default_factory=list)  # offsets of interface description blocks


def layout(data: bytes) -> Layout:
    """The layout of `data` (a plain, not gzip-compressed, capture)."""
    order = PCAP_MAGICS.get(bytes(data[:4]))
    if order is not None and len(data) >= 24:
        return _pcap(data, order)
    if len(data) >= 12 and struct.unpack_from("<I", data, 0)[0] == SHB:
        return _pcapng(data)
    return Layout("other")


def _pcap(data: bytes, order: str) -> Layout:
    found = Layout("pcap", order)
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    at = 24
    while at + 16 <= len(data) and len(found.frames) < MAX_BLOCKS:
        caplen = struct.unpack_from(order + "I", data, at + 8)[0]
        present = min(caplen, len(data) - at - 16)
        found.frames.append(Frame("pcap", at, at + 16, present, linktype, order))
        if caplen > present:
            break
        at += 16 + caplen
    return found


def _pcapng(data: bytes) -> Layout:
    found = Layout("pcapng")
    order, links, at = "<", [], 0
    while at + 12 <= len(data) and len(found.blocks) < MAX_BLOCKS:
        kind = struct.unpack_from("<I", data, at)[0]
        if kind == SHB:
            magic = bytes(data[at + 8:at + 12])
            order = ">" if magic == b"\x1a\x2b\x3c\x4d" else "<"
            links = []
        else:
            kind = struct.unpack_from(order + "I", data, at)[0]
        length = struct.unpack_from(order + "I", data, at + 4)[0]
        if length < 12 or at + length > len(data):
            found.blocks.append((at, kind, length, order))
            break
        found.blocks.append((at, kind, length, order))
        _block_frames(found, data, at, kind, length, order, links)
        at += length + (-length % 4)
    found.order = found.blocks[0][3] if found.blocks else "<"
    return found


def _block_frames(found: Layout, data: bytes, at: int, kind: int, length: int, order: str,
                  links: list[int]) -> None:
    end = at + length - 4
    if kind == IDB and length >= 20:
        found.interfaces.append(at)
        links.append(struct.unpack_from(order + "H", data, at + 8)[0])
    elif kind in (EPB, OPB) and length >= 32:
        iface = struct.unpack_from(order + ("I" if kind == EPB else "H"), data, at + 8)[0]
        caplen = struct.unpack_from(order + "I", data, at + 20)[0]
        link = links[iface] if iface < len(links) else -1
        found.frames.append(Frame("epb" if kind == EPB else "opb", at, at + 28, max(0, min(caplen, end - at - 28)),
                                  link, order))
    elif kind == SPB and length >= 16:
        found.frames.append(Frame("spb", at, at + 12, max(0, end - at - 12), links[0] if links else -1, order))


def network_offset(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(offset of the IP header, offset of the EtherType-like field or -1) in `frame`; None if not IP."""
    if linktype in (1, 113, 276):
        at, end = {1: (12, 14), 113: (14, 16), 276: (0, 20)}[linktype]
        if len(frame) < end:
            return None
        kind = struct.unpack_from("!H", frame, at)[0]
        while kind in VLAN_TPIDS and end + 4 <= len(frame):
            at, end = end + 2, end + 4
            kind = struct.unpack_from("!H", frame, at)[0]
        return (end, at) if kind in (0x0800, 0x86DD) else None
    if linktype in (12, 14, 101, 228, 229):
        return (0, -1)
    if linktype in (0, 108):
        return (4, -1) if len(frame) >= 4 else None
    return None


def transport_offset(frame: bytes, ip_at: int) -> tuple[int, int] | None:
    """(offset of the TCP header, IP version) when the IP header at `ip_at` carries TCP (no extension headers
    followed past the first)."""
    if ip_at >= len(frame):
        return None
    version = frame[ip_at] >> 4
    if version == 4 and ip_at + 20 <= len(frame):
        ihl = (frame[ip_at] & 0x0F) * 4
        return (ip_at + ihl, 4) if frame[ip_at + 9] == 6 and ihl >= 20 else None
    if version == 6 and ip_at + 40 <= len(frame):
        return (ip_at + 40, 6) if frame[ip_at + 6] == 6 else None
    return None

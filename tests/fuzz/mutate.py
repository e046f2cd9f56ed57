"""The fuzzer's mutations: field-aware edits of capture files, and generic byte edits.

`mutate(rng, data, others)` returns a variant of `data` (a capture, maybe
gzip-compressed) and the name of the mutation that made it. Each mutation
knows one kind of field, finds it through tests/fuzz/layout.py and sets it
to a value chosen to sit on an edge of the readers and decoders (zero, one
past a limit, a length that overruns, the other byte order, a random value):

* pcap: the global header (magic, version, snaplen, link type) and record
  headers (timestamp, captured and wire lengths);
* pcapng: block types and lengths, the interface block's link type and its
  if_tsresol/if_tsoffset options, enhanced/obsolete/simple packet block
  fields, the section header (byte-order magic, version, section length);
* gzip: wrap, unwrap, cut short, or damage the compressed stream;
* link headers: EtherType, VLAN tags in and out, cooked v1/v2 protocol and
  packet type, loopback family; or the interface's link type changed under
  the frames;
* IPv4 (version, header length, total length, fragment bits, protocol) and
  IPv6 (payload length, next header, extension headers in);
* TCP (data offset, flags, seq/ack, ports, window, options: MSS, window
  scale, SACK-permitted, SACK and timestamps, with right and wrong lengths);
* generic: bit flips, byte sets, insertions, deletions, duplications,
  splices with another corpus entry, truncations.

Edits that change a frame's length fix its record (captured and wire
length) or its block (length at both ends, padding) so that the file stays
readable past it, which is what lets deep fields be reached.
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from collections.abc import Callable

from tests.fuzz.layout import (
    EPB,
    IDB,
    OPB,
    SHB,
    SPB,
    VLAN_TPIDS,
    Frame,
    Layout,
    layout,
    network_offset,
    transport_offset,
)

GZIP_MAGIC = b"\x1f\x8b"
LINKTYPES = (0, 1, 9, 12, 14, 101, 105, 108, 113, 127, 228, 229, 276, 147, 65535)
EDGE_U32 = (0, 1, 2, 3, 4, 12, 13, 16, 20, 28, 31, 32, 60, 64, 65535, 65536, 262144, 999_999, 1_000_000,
            1_000_000_000, 1 << 24, (1 << 24) + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF)
Mutation = Callable[[random.Random, bytes, Layout, list[bytes]], bytes | None]


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> tuple[bytes, str]:
    """One mutated variant of `data` and the name of what was done (a few mutations stacked, sometimes)."""
    names = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
        data, name = _mutate_once(rng, data, others)
        names.append(name)
    return data, "+".join(names)


def _mutate_once(rng: random.Random, data: bytes, others: list[bytes]) -> tuple[bytes, str]:
    if data[:2] == GZIP_MAGIC:
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            inner = None
        if inner is None or rng.random() < 0.3:
            return _gzip_damage(rng, data), "gzip-damage"
        if rng.random() < 0.1:
            return inner, "gzip-unwrap"
        inner, name = _mutate_once(rng, inner, others)
        return gzip.compress(inner, compresslevel=1, mtime=0), name
    if rng.random() < 0.03:
        return gzip.compress(data, compresslevel=1, mtime=0), "gzip-wrap"
    lay = layout(data)
    for _ in range(8):
        name, kinds = rng.choice(GROUPS)
        fn = rng.choice(kinds)
        if (result := fn(rng, data, lay, others)) is not None:
            return result, f"{name}:{fn.__name__.lstrip('_')}"
    return _flip(rng, data, lay, others) or data, "bytes:flip"


# -- helpers ------------------------------------------------------------------------------------------------------


def _u32(rng: random.Random, old: int) -> int:
    choice = rng.random()
    if choice < 0.4:
        return rng.choice(EDGE_U32)
    if choice < 0.8:
        return (old + rng.choice((-1, 1, -4, 4, -16, 16, rng.randint(-100, 100)))) & 0xFFFFFFFF
    return rng.getrandbits(32)


def _put(data: bytes, at: int, fmt: str, value: int) -> bytes | None:
    if at < 0 or at + struct.calcsize(fmt) > len(data):
        return None
    out = bytearray(data)
    unsigned = fmt[:-1] + fmt[-1].upper()  # a signed field is written as its two's complement
    struct.pack_into(unsigned, out, at, value & (256 ** struct.calcsize(fmt) - 1))
    return bytes(out)


def _frame(data: bytes, frame: Frame) -> bytes:
    return data[frame.data_at:frame.data_at + frame.caplen]


def replace_frame(data: bytes, frame: Frame, new: bytes) -> bytes:
    """`data` with the frame's bytes replaced by `new`, its record or block lengths fixed to match."""
    delta = len(new) - frame.caplen
    end = frame.data_at + frame.caplen
    o = frame.order
    if frame.kind == "pcap":
        head = bytearray(data[frame.header_at:frame.data_at])
        sizes = struct.unpack_from(o + "II", head, 8)
        struct.pack_into(o + "II", head, 8, len(new), max(0, sizes[1] + delta) & 0xFFFFFFFF)
        return data[:frame.header_at] + bytes(head) + new + data[end:]
    block_len = struct.unpack_from(o + "I", data, frame.header_at + 4)[0]
    block_end = frame.header_at + block_len
    if block_end > len(data) or block_end - 4 < end:
        return data[:frame.data_at] + new + data[end:]
    old_pad = -frame.caplen % 4 if frame.kind != "spb" else 0
    rest = data[end + old_pad:block_end - 4]  # the block's options
    pad = bytes(-len(new) % 4)
    head = bytearray(data[frame.header_at:frame.data_at])
    length = len(head) + len(new) + len(pad) + len(rest) + 4
    struct.pack_into(o + "I", head, 4, length)
    if frame.kind in ("epb", "opb"):
        wire = struct.unpack_from(o + "I", head, 24)[0]
        struct.pack_into(o + "II", head, 20, len(new), max(0, wire + delta) & 0xFFFFFFFF)
    else:
        struct.pack_into(o + "I", head, 8, len(new))
    return data[:frame.header_at] + bytes(head) + new + pad + rest + struct.pack(o + "I", length) + data[block_end:]


def _pick_frame(rng: random.Random, lay: Layout) -> Frame | None:
    return rng.choice(lay.frames) if lay.frames else None


def _ip_frame(rng: random.Random, data: bytes, lay: Layout) -> tuple[Frame, bytes, int] | None:
    """A frame that carries IP, its bytes, and the IP header's offset in it."""
    for _ in range(4):
        frame = _pick_frame(rng, lay)
        if frame is None:
            return None
        raw = _frame(data, frame)
        found = network_offset(frame.linktype, raw)
        if found is not None and found[0] < len(raw):
            return frame, raw, found[0]
    return None


def _tcp_frame(rng: random.Random, data: bytes, lay: Layout) -> tuple[Frame, bytes, int, int] | None:
    """A frame that carries TCP, its bytes, and the offsets of its IP and TCP headers."""
    for _ in range(6):
        found = _ip_frame(rng, data, lay)
        if found is None:
            return None
        frame, raw, ip_at = found
        tcp = transport_offset(raw, ip_at)
        if tcp is not None and tcp[0] + 20 <= len(raw):
            return frame, raw, ip_at, tcp[0]
    return None


def _edit_frame(data: bytes, frame: Frame, raw: bytes, at: int, fmt: str, value: int) -> bytes | None:
    edited = _put(raw, at, fmt, value)
    return None if edited is None else data[:frame.data_at] + edited + data[frame.data_at + len(raw):]


# -- pcap -----------------------------------------------------------------------------------------------------------


def _pcap_magic(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if lay.fmt != "pcap":
        return None
    return rng.choice((b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")) + data[4:]


def _pcap_global(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if lay.fmt != "pcap":
        return None
    at, fmt = rng.choice(((4, "H"), (6, "H"), (16, "I"), (20, "I"), (8, "i"), (12, "I")))
    if at == 20 and rng.random() < 0.7:
        return _put(data, 20, lay.order + "I", rng.choice(LINKTYPES) | (rng.random() < 0.1) * 0x10000000)
    return _put(data, at, lay.order + fmt, _u32(rng, struct.unpack_from(lay.order + fmt, data, at)[0]))


def _pcap_record(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if lay.fmt != "pcap" or not lay.frames:
        return None
    frame = rng.choice(lay.frames)
    at = frame.header_at + rng.choice((0, 4, 8, 12))
    old = struct.unpack_from(lay.order + "I", data, at)[0] if at + 4 <= len(data) else 0
    if at - frame.header_at == 4 and rng.random() < 0.5:  # fraction: near 1e6/1e9, or a tiny time
        return _put(data, at, lay.order + "I", rng.choice((999_999, 1_000_000, 999_999_999, 1_000_000_000, 105, 1)))
    return _put(data, at, lay.order + "I", _u32(rng, old))


# -- pcapng ---------------------------------------------------------------------------------------------------------


def _pcapng_block_type(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not lay.blocks:
        return None
    at, _, _, order = rng.choice(lay.blocks)
    kind = rng.choice((SHB, IDB, OPB, SPB, EPB, 4, 5, 7, 0x80000001, 0x0BAD, rng.getrandbits(32)))
    return _put(data, at, order + "I", kind)


def _pcapng_block_length(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not lay.blocks:
        return None
    at, _, length, order = rng.choice(lay.blocks)
    new = _u32(rng, length)
    spot = rng.random()
    if spot < 0.4:
        return _put(data, at + 4, order + "I", new)
    out = _put(data, at + 4, order + "I", new) if spot < 0.7 else data
    return _put(out or data, at + length - 4, order + "I", new) if length >= 12 else out


def _pcapng_shb(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    shbs = [b for b in lay.blocks if b[1] == SHB]
    if not shbs:
        return None
    at, _, _, order = rng.choice(shbs)
    field = rng.choice(("magic", "major", "minor", "section"))
    if field == "magic":
        magic = rng.choice((b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d", b"\x01\x02\x03\x04"))
        return data[:at + 8] + magic + data[at + 12:] if at + 12 <= len(data) else None
    if field == "section":
        return _put(data, at + 16, order + "q", rng.choice((-1, 0, 8, 1 << 40, rng.getrandbits(32))))
    return _put(data, at + (12 if field == "major" else 14), order + "H", rng.choice((0, 1, 2, 0xFFFF)))


def _idb(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not lay.interfaces:
        return None
    at = rng.choice(lay.interfaces)
    order = next(b[3] for b in lay.blocks if b[0] == at)
    choice = rng.random()
    if choice < 0.35:
        return _put(data, at + 8, order + "H", rng.choice(LINKTYPES))
    if choice < 0.45:
        return _put(data, at + 12, order + "I", _u32(rng, 0))
    return _idb_option(rng, data, at, order)


def _idb_option(rng: random.Random, data: bytes, at: int, order: str) -> bytes | None:
    """Insert an if_tsresol or if_tsoffset option (or a broken one) at the start of the IDB's options."""
    length = struct.unpack_from(order + "I", data, at + 4)[0]
    if at + length > len(data) or length < 20:
        return None
    kind = rng.random()
    if kind < 0.5:
        value = rng.choice((0, 3, 6, 9, 10, 19, 20, 63, 0x80, 0x8A, 0x94, 0x9E, 0xBF, 0xFF, rng.randrange(256)))
        option = struct.pack(order + "HH", 9, 1) + bytes([value, 0, 0, 0])
    elif kind < 0.8:
        offset = rng.choice((0, 1, -1, 1 << 31, -(1 << 40), 1 << 62, rng.getrandbits(63)))
        option = struct.pack(order + "HHq", 14, 8, offset)
    else:
        option = struct.pack(order + "HH", rng.choice((9, 14, 2, 0)), rng.choice((0, 1, 3, 7, 200, 0xFFFF)))
    body = data[at + 16:at + length - 4]
    new_len = length + len(option)
    head = data[at:at + 4] + struct.pack(order + "I", new_len) + data[at + 8:at + 16]
    return data[:at] + head + option + body + struct.pack(order + "I", new_len) + data[at + length:]


def _packet_block(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    frames = [f for f in lay.frames if f.kind != "pcap"]
    if not frames:
        return None
    frame = rng.choice(frames)
    o = frame.order
    if frame.kind == "spb":
        return _put(data, frame.header_at + 8, o + "I", _u32(rng, frame.caplen))
    at, fmt = rng.choice(((8, "I" if frame.kind == "epb" else "H"), (12, "I"), (16, "I"), (20, "I"), (24, "I")))
    if at == 8:
        return _put(data, frame.header_at + 8, o + fmt, rng.choice((0, 1, 2, 3, 255, 65535)))
    old = struct.unpack_from(o + "I", data, frame.header_at + at)[0]
    return _put(data, frame.header_at + at, o + "I", _u32(rng, old))


# -- link layer -----------------------------------------------------------------------------------------------------


def _frame_with_ethertype(rng: random.Random, data: bytes, lay: Layout) -> tuple[Frame, bytes, int] | None:
    """A frame holding IP, its bytes, and where its EtherType (or protocol field) is; None if there is none."""
    found = _ip_frame(rng, data, lay)
    if found is None:
        return None
    frame, raw, _ = found
    kind_at = network_offset(frame.linktype, raw)[1]  # type: ignore[index]
    return None if kind_at < 0 else (frame, raw, kind_at)


def _ethertype(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    found = _frame_with_ethertype(rng, data, lay)
    if found is None:
        return None
    frame, raw, kind_at = found
    return _edit_frame(data, frame, raw, kind_at, "!H",
                       rng.choice((0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x9100, 0x8035, 0, rng.getrandbits(16))))


def _vlan(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    found = _frame_with_ethertype(rng, data, lay)
    if found is None or found[0].linktype == 276:
        return None
    frame, raw, kind_at = found
    if rng.random() < 0.6:  # a tag in front of the EtherType
        tag = struct.pack("!HH", rng.choice(VLAN_TPIDS), rng.getrandbits(16))
        new = raw[:kind_at] + tag + raw[kind_at:]
        if rng.random() < 0.2:
            new = new[:kind_at + rng.randint(0, 5)]  # cut inside the tags
    else:
        base = {1: 12, 113: 14}.get(frame.linktype, kind_at)
        if kind_at == base:
            return None
        new = raw[:kind_at - 4] + raw[kind_at:]  # take the innermost tag out
    return replace_frame(data, frame, new)


def _tunnel(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    """An IP frame's packet put inside a tunnel (crafting.wrapped: IPIP, GRE, VXLAN, MPLS, PPPoE, GTP-U,
    Geneve), now and then several times over (nesting past analyzer.layers.MAX_LAYERS), or cut inside the
    new headers: the tunnel decoders of issue 13 get frames of every shape."""
    from tests.crafting import Packet, wrapped

    found = _frame_with_ethertype(rng, data, lay)
    if found is None:
        return None
    frame, raw, kind_at = found
    kind, inner = struct.unpack_from("!H", raw, kind_at)[0], raw[kind_at + 2:]
    for _ in range(rng.choice((1, 1, 1, 2, 3, 9, 12))):
        if kind not in (0x0800, 0x86DD):
            break
        kind, inner = wrapped(rng, Packet(0, kind, inner))
    new = raw[:kind_at] + struct.pack("!H", kind) + inner
    if rng.random() < 0.2:
        new = new[:kind_at + 2 + rng.randint(0, 60)]
    return replace_frame(data, frame, new)


def _cooked_or_loopback(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    frames = [f for f in lay.frames if f.linktype in (113, 276, 0, 108)]
    if not frames:
        return None
    frame = rng.choice(frames)
    raw = _frame(data, frame)
    if frame.linktype in (0, 108):
        family = rng.choice((2, 10, 24, 28, 30, 0, 7, 0x02000000, 0x1C000000, rng.getrandbits(32)))
        return _edit_frame(data, frame, raw, 0, rng.choice(("<I", ">I")), family)
    at = rng.choice((0, 2, 4, 6, 8) if frame.linktype == 113 else (4, 8, 10, 11))
    fmt = "!B" if at in (10, 11) else "!H"
    return _edit_frame(data, frame, raw, at, fmt, rng.choice((0, 1, 4, 772, 65535, rng.getrandbits(8))))


def _linktype_under_frames(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if lay.fmt == "pcap":
        return _put(data, 20, lay.order + "I", rng.choice(LINKTYPES))
    if lay.interfaces:
        at = rng.choice(lay.interfaces)
        order = next(b[3] for b in lay.blocks if b[0] == at)
        return _put(data, at + 8, order + "H", rng.choice(LINKTYPES))
    return None


# -- IPv4 and IPv6 --------------------------------------------------------------------------------------------------


def _ipv4(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    found = _ip_frame(rng, data, lay)
    if found is None or found[1][found[2]] >> 4 != 4 or found[2] + 20 > len(found[1]):
        return None
    frame, raw, at = found
    field = rng.choice(("version", "ihl", "total", "fragment", "protocol", "ttl"))
    if field in ("version", "ihl"):
        v, ihl = raw[at] >> 4, raw[at] & 15
        v, ihl = (rng.choice((0, 4, 5, 6, 15)), ihl) if field == "version" else (v, rng.choice((0, 4, 5, 6, 15)))
        return _edit_frame(data, frame, raw, at, "!B", v << 4 | ihl)
    if field == "total":
        old = struct.unpack_from("!H", raw, at + 2)[0]
        new = rng.choice((0, 19, 20, 39, 40, 65535, old - 1, old + 1, len(raw) - at, len(raw) - at + 1))
        return _edit_frame(data, frame, raw, at + 2, "!H", new)
    if field == "fragment":
        return _edit_frame(data, frame, raw, at + 6, "!H",
                           rng.choice((0x2000, 0x0001, 0x2001, 0x4000, 0x8000, 0x1FFF, 0x6000, rng.getrandbits(16))))
    if field == "protocol":
        return _edit_frame(data, frame, raw, at + 9, "!B", rng.choice((6, 17, 1, 0, 41, 255)))
    return _edit_frame(data, frame, raw, at + 8, "!B", rng.choice((0, 1, 255)))


def _ipv6(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    found = _ip_frame(rng, data, lay)
    if found is None or found[1][found[2]] >> 4 != 6 or found[2] + 40 > len(found[1]):
        return None
    frame, raw, at = found
    field = rng.choice(("payload", "next", "extension", "extension"))
    if field == "payload":
        old = struct.unpack_from("!H", raw, at + 4)[0]
        return _edit_frame(data, frame, raw, at + 4, "!H",
                           rng.choice((0, 1, 19, 20, old - 1, old + 1, 65535, len(raw) - at - 40)))
    if field == "next":
        return _edit_frame(data, frame, raw, at + 6, "!B", rng.choice((6, 0, 43, 44, 59, 60, 135, 17, 58, 255)))
    kind = rng.choice((0, 43, 60, 44, 135, 139, 140, 51))
    units = rng.choice((0, 0, 1, 2))
    size = 8 if kind == 44 else (units + 1) * 8
    header = bytes([raw[at + 6], units if kind != 44 else 0]) + bytes(size - 2)
    if kind == 44:  # fragment header: offset and M flag
        header = header[:2] + struct.pack("!HI", rng.choice((0, 1, 8, 0xFFF8)), rng.getrandbits(32))
    new = bytearray(raw[:at + 40] + header + raw[at + 40:])
    new[at + 6] = kind
    plen = struct.unpack_from("!H", new, at + 4)[0]
    struct.pack_into("!H", new, at + 4, min(0xFFFF, plen + len(header)))
    return replace_frame(data, frame, bytes(new))


# -- TCP ------------------------------------------------------------------------------------------------------------


def _tcp_field(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    found = _tcp_frame(rng, data, lay)
    if found is None:
        return None
    frame, raw, _, at = found
    field = rng.choice(("offset", "flags", "flags", "seq", "ack", "ports", "window"))
    if field == "offset":
        return _edit_frame(data, frame, raw, at + 12, "!B", rng.choice((0, 4, 5, 6, 8, 15)) << 4 | raw[at + 12] & 15)
    if field == "flags":
        return _edit_frame(data, frame, raw, at + 13, "!B",
                           rng.choice((0x02, 0x12, 0x10, 0x11, 0x04, 0x14, 0x01, 0x03, 0x07, 0x3F, 0xFF, 0x00,
                                       0xC2, rng.getrandbits(8))))
    if field in ("seq", "ack"):
        where = at + (4 if field == "seq" else 8)
        return _edit_frame(data, frame, raw, where, "!I", _u32(rng, struct.unpack_from("!I", raw, where)[0]))
    if field == "ports":
        return _edit_frame(data, frame, raw, at + rng.choice((0, 2)), "!H", rng.choice((0, 1, 80, 65535, 443)))
    return _edit_frame(data, frame, raw, at + 14, "!H", rng.choice((0, 1, 65535)))


def _tcp_options(rng: random.Random) -> bytes:
    """A TCP option area: known options with right or wrong lengths, NOPs, an EOL, random bytes."""
    out = bytearray()
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(("mss", "ws", "sackok", "sack", "ts", "nop", "eol", "bad", "random"))
        bad = rng.random() < 0.25
        if kind == "mss":
            out += bytes([2, rng.choice((0, 1, 3, 5)) if bad else 4]) + struct.pack("!H", rng.choice((0, 536, 1460,
                                                                                                  65535)))
        elif kind == "ws":
            out += bytes([3, rng.choice((0, 2, 4)) if bad else 3, rng.choice((0, 7, 14, 15, 255))])
        elif kind == "sackok":
            out += bytes([4, rng.choice((0, 1, 3)) if bad else 2])
        elif kind == "sack":
            blocks = rng.randint(0, 4)
            out += bytes([5, rng.choice((0, 1, 9, 40)) if bad else 2 + 8 * blocks]) + rng.randbytes(8 * blocks)
        elif kind == "ts":
            out += bytes([8, rng.choice((0, 1, 9, 11)) if bad else 10]) + rng.randbytes(8)
        elif kind in ("nop", "eol"):
            out.append(1 if kind == "nop" else 0)
        elif kind == "bad":
            out += bytes([rng.randrange(256), rng.choice((0, 1, 2, 40, 255))])
        else:
            out += rng.randbytes(rng.randint(1, 6))
    return bytes(out[:40])


def _tcp_option_area(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    found = _tcp_frame(rng, data, lay)
    if found is None:
        return None
    frame, raw, ip_at, at = found
    old_len = (raw[at + 12] >> 4) * 4
    options = _tcp_options(rng)
    options += bytes(-len(options) % 4) if rng.random() < 0.8 else b""
    new_len = 20 + len(options)
    new = bytearray(raw[:at + 20] + options + raw[at + max(20, old_len):])
    if rng.random() < 0.85:
        new[at + 12] = (min(15, new_len // 4) << 4) | (new[at + 12] & 15)
    _fix_ip_length(new, ip_at, len(new) - len(raw))
    return replace_frame(data, frame, bytes(new))


def _fix_ip_length(frame: bytearray, ip_at: int, delta: int) -> None:
    if frame[ip_at] >> 4 == 4:
        old = struct.unpack_from("!H", frame, ip_at + 2)[0]
        struct.pack_into("!H", frame, ip_at + 2, max(0, min(0xFFFF, old + delta)))
    elif frame[ip_at] >> 4 == 6:
        old = struct.unpack_from("!H", frame, ip_at + 4)[0]
        struct.pack_into("!H", frame, ip_at + 4, max(0, min(0xFFFF, old + delta)))


def _frame_cut(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    frame = _pick_frame(rng, lay)
    if frame is None:
        return None
    raw = _frame(data, frame)
    return replace_frame(data, frame, raw[:rng.randint(0, len(raw))])


def _frame_duplicate(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    frame = _pick_frame(rng, lay)
    if frame is None or lay.fmt != "pcap":
        return None
    record = data[frame.header_at:frame.data_at + frame.caplen]
    where = rng.choice(lay.frames).header_at
    return data[:where] + record + data[where:]


# -- generic bytes --------------------------------------------------------------------------------------------------


def _flip(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not data:
        return None
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _set_bytes(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not data:
        return None
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x7F, 0x80, 1, rng.randrange(256)))
    return bytes(out)


def _insert(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    at = rng.randint(0, len(data))
    return data[:at] + rng.randbytes(rng.choice((1, 2, 4, 8, rng.randint(1, 64)))) + data[at:]


def _delete(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if len(data) < 2:
        return None
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, min(64, len(data) - at)):]


def _duplicate(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not data:
        return None
    at = rng.randrange(len(data))
    piece = data[at:at + rng.randint(1, 256)]
    where = rng.randint(0, len(data))
    return data[:where] + piece + data[where:]


def _splice(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    if not others:
        return None
    other = rng.choice(others)
    if other[:2] == GZIP_MAGIC or not other:
        return None
    cut = rng.randint(0, len(data))
    start = rng.randint(0, len(other))
    return data[:cut] + other[start:start + rng.randint(1, 4096)]


def _truncate(rng: random.Random, data: bytes, lay: Layout, others: list[bytes]) -> bytes | None:
    return data[:rng.randint(0, len(data))] if data else None


def _gzip_damage(rng: random.Random, data: bytes) -> bytes:
    choice = rng.random()
    if choice < 0.4:
        return data[:rng.randint(2, len(data))]
    if choice < 0.6:
        return data[:-8] + rng.randbytes(8)
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(min(len(out) - 1, 10), len(out))] = rng.randrange(256)  # past the gzip header
    return bytes(out)


GROUPS: list[tuple[str, list[Mutation]]] = [
    ("pcap", [_pcap_magic, _pcap_global, _pcap_record, _pcap_record]),
    ("pcapng", [_pcapng_block_type, _pcapng_block_length, _pcapng_shb, _idb, _idb, _packet_block, _packet_block]),
    ("link", [_ethertype, _vlan, _tunnel, _cooked_or_loopback, _linktype_under_frames]),
    ("ip", [_ipv4, _ipv4, _ipv6, _ipv6]),
    ("tcp", [_tcp_field, _tcp_field, _tcp_option_area]),
    ("frame", [_frame_cut, _frame_duplicate]),
    ("bytes", [_flip, _set_bytes, _insert, _delete, _duplicate, _splice, _truncate]),
]

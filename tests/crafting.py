"""Crafted captures: real TCP traffic from samples/, mutated at random (but seeded), in every container.

`crafted(seed)` builds one capture from the seed alone, so a failure names a
seed and the capture can be made again at any time::

    python -c "from pathlib import Path; from tests.crafting import crafted
    c = crafted(137); print(c.describe()); print(c.write(Path('.')))"

How a capture is made:

1. Traffic: one to three sample captures (or a window of busy.pcap, which
   then begins mid-connection), taken down to their IP packets and merged on
   one time line, with their client ports kept (4-tuples may collide) or moved.
2. Mutations, one to seven, each at a random place: drop, duplicate, swap or
   shuffle packets; flip SYN/FIN/RST/ACK; move seq or ack by one; step the
   clock backwards; cut a frame short of its wire length; reuse a
   connection's 4-tuple with new ISNs; wrap its sequence numbers around 2**32;
   inject keep-alives, data on SYNs and FINs, garbled TCP options, bad header
   lengths, UDP/ICMP/ARP and fragments; stretch or squeeze time; move the
   whole capture near time zero or far into the future.
3. The network layer: IPv4 as captured, or IPv6 with addresses spelt many
   ways (zero runs anywhere, none, IPv4-mapped) and extension headers.
4. The link layer and container: pcap (either byte order, micro- or
   nanoseconds) with Ethernet (zero to three VLAN/QinQ tags), Linux cooked v1
   and v2, raw IP, BSD loopback; or pcapng with one to three interfaces of
   different link types and time resolutions (decimal and binary, with
   offsets), enhanced, obsolete and simple packet blocks, blocks to skip, and
   sometimes a second section; sometimes gzip-compressed.

The writers follow the pcap and pcapng specifications directly (struct, as
tests/pcapwrite.py does), not analyzer/capture.py, and control every field:
timestamps are integer nanoseconds converted to each file's own unit, and
captured length and wire length are set separately.
"""

from __future__ import annotations

import functools
import gzip
import ipaddress
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from analyzer.capture import RawFrame, read_frames

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
NS = 1_000_000_000


@dataclass
class Packet:
    """One packet above the link layer; the link layer is chosen when the capture is written."""

    ts_ns: int
    ethertype: int  # ETH_IPV4 / ETH_IPV6 / anything else (ARP)
    data: bytes  # from the network header on, as captured
    missing: int = 0  # bytes the wire had after the captured ones (snaplen); negative: a lying wire length
    cut: float | None = None  # keep this fraction of the link-layer frame (caplen < wire_len)


@dataclass
class Crafted:
    """A crafted capture: its bytes, how it was made, and the timing options to analyze it with."""

    seed: int
    name: str
    content: bytes
    what: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def write(self, directory: Path) -> Path:
        path = directory / self.name
        path.write_bytes(self.content)
        return path

    def describe(self) -> str:
        return f"crafted seed {self.seed} ({self.name}, options {self.options or 'default'}): " + "; ".join(self.what)


# -- traffic from the samples ---------------------------------------------------------------------


def _link_payload(frame: RawFrame) -> tuple[int, bytes, int] | None:
    """(EtherType, bytes from the network header on, link header length) of a sample frame."""
    data = frame.data
    if frame.linktype == 1:
        at, end = 12, 14
    elif frame.linktype == 113:
        at, end = 14, 16
    elif frame.linktype == 276:
        at, end = 0, 20
    else:
        return None
    if len(data) < end:
        return None
    kind = int.from_bytes(data[at:at + 2], "big")
    while kind in VLAN_TPIDS and len(data) >= end + 4:
        kind, end = int.from_bytes(data[end + 2:end + 4], "big"), end + 4
    return kind, data[end:], end


@functools.cache
def sample_packets(name: str) -> tuple[Packet, ...]:
    """The packets of one sample capture (timestamps in whole microseconds, as recorded)."""
    packets = []
    for frame in read_frames(SAMPLES / name):
        if not isinstance(frame, RawFrame):
            continue
        found = _link_payload(frame)
        if found is None:
            continue
        kind, payload, _ = found
        packets.append(Packet(round(frame.ts * 1e6) * 1000, kind, payload, frame.wire_len - len(frame.data)))
    return tuple(packets)


def small_samples() -> list[str]:
    return sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng") and p.name != "busy.pcap")


def _copy(packets: tuple[Packet, ...] | list[Packet]) -> list[Packet]:
    return [replace(p) for p in packets]


def _traffic(rng: random.Random, what: list[str]) -> list[Packet]:
    """One to three samples (or a window of busy.pcap) on one time line."""
    names = small_samples()
    parts: list[list[Packet]] = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        if rng.random() < 0.2:
            busy = sample_packets("busy.pcap")
            start, length = rng.randrange(len(busy)), rng.randint(30, 250)
            parts.append(_copy(busy[start:start + length]))
            what.append(f"busy.pcap packets {start + 1}..{start + length}")
        else:
            name = rng.choice(names)
            parts.append(_copy(sample_packets(name)))
            what.append(name)
    merged = parts[0]
    for extra in parts[1:]:
        if not extra or not merged:
            merged += extra
            continue
        offset = merged[0].ts_ns - extra[0].ts_ns + rng.randint(-200_000_000, 2 * NS)
        moved = rng.random() < 0.7
        if moved:
            _move_ports(extra, rng.randint(1, 20000))
        for p in extra:
            p.ts_ns += offset
        merged = sorted(merged + extra, key=lambda p: p.ts_ns)
        what.append(f"merged at {offset / NS:+.3f} s" + (", ports moved" if moved else ", ports kept"))
    return merged


def _move_ports(packets: list[Packet], delta: int) -> None:
    """Move every port above 1024 by `delta`, so merged samples keep their own 4-tuples."""
    for p in packets:
        at = tcp_offset(p)
        if at is None:
            continue
        data = bytearray(p.data)
        for off in (at, at + 2):
            port = int.from_bytes(data[off:off + 2], "big")
            if port > 1024:
                data[off:off + 2] = ((port - 1025 + delta) % 64000 + 1025).to_bytes(2, "big")
        p.data = bytes(data)


# -- packet fields ----------------------------------------------------------------------------------


def tcp_offset(p: Packet) -> int | None:
    """Where the TCP header starts, for an IPv4/IPv6 TCP packet whose header was captured."""
    d = p.data
    if p.ethertype == ETH_IPV4 and len(d) >= 20 and d[0] >> 4 == 4 and d[9] == 6:
        at = (d[0] & 15) * 4
    elif p.ethertype == ETH_IPV6 and len(d) >= 40 and d[6] == 6:
        at = 40
    else:
        return None
    return at if len(d) >= at + 20 else None


def _tcp_indices(packets: list[Packet], test: Callable[[int], bool] = lambda flags: True) -> list[int]:
    found = []
    for i, p in enumerate(packets):
        at = tcp_offset(p)
        if at is not None and test(p.data[at + 13]):
            found.append(i)
    return found


def _pick_tcp(rng: random.Random, packets: list[Packet]) -> tuple[int, int] | None:
    """A random TCP packet's index and the offset of its TCP header, or None if there is none."""
    found = _tcp_indices(packets)
    if not found:
        return None
    i = rng.choice(found)
    at = tcp_offset(packets[i])
    assert at is not None
    return i, at


def _set(p: Packet, offset: int, value: bytes) -> None:
    data = bytearray(p.data)
    data[offset:offset + len(value)] = value
    p.data = bytes(data)


def _u32(p: Packet, offset: int) -> int:
    return int.from_bytes(p.data[offset:offset + 4], "big")


def _four_tuple(p: Packet) -> tuple[bytes, ...] | None:
    at = tcp_offset(p)
    if at is None:
        return None
    d = p.data
    src, dst = (d[12:16], d[16:20]) if p.ethertype == ETH_IPV4 else (d[8:24], d[24:40])
    ends = sorted([(src, d[at:at + 2]), (dst, d[at + 2:at + 4])])
    return ends[0] + ends[1]


def _grow(p: Packet, extra: bytes) -> None:
    """Append `extra` payload bytes and fix the IP length field (a no-op when the frame was cut)."""
    if p.missing:
        return
    data = bytearray(p.data + extra)
    if p.ethertype == ETH_IPV4:
        data[2:4] = ((int.from_bytes(data[2:4], "big") + len(extra)) % 65536).to_bytes(2, "big")
    else:
        data[4:6] = ((int.from_bytes(data[4:6], "big") + len(extra)) % 65536).to_bytes(2, "big")
    p.data = bytes(data)


# -- mutations: each changes `packets` in place and says what it did ---------------------------------

Mutation = Callable[[random.Random, list[Packet]], str | None]


def drop(rng: random.Random, packets: list[Packet]) -> str | None:
    if len(packets) < 2:
        return None
    i = rng.randrange(len(packets))
    del packets[i]
    return f"dropped packet {i + 1}"


def duplicate(rng: random.Random, packets: list[Packet]) -> str | None:
    i = rng.randrange(len(packets))
    j = rng.randint(i + 1, min(len(packets), i + 4))
    copy = replace(packets[i], ts_ns=packets[j - 1].ts_ns + rng.choice((0, 1000, 150_000)))
    packets.insert(j, copy)
    return f"packet {i + 1} duplicated as {j + 1}"


def swap(rng: random.Random, packets: list[Packet]) -> str | None:
    if len(packets) < 2:
        return None
    i = rng.randrange(len(packets) - 1)
    a, b = packets[i], packets[i + 1]
    keep_times = rng.random() < 0.6
    if keep_times:
        a.ts_ns, b.ts_ns = b.ts_ns, a.ts_ns
    packets[i], packets[i + 1] = b, a
    return f"packets {i + 1} and {i + 2} swapped" + (" (times kept in order)" if keep_times else " (time steps back)")


def shuffle_window(rng: random.Random, packets: list[Packet]) -> str | None:
    if len(packets) < 3:
        return None
    i = rng.randrange(len(packets) - 2)
    window = packets[i:i + rng.randint(3, 6)]
    times = [p.ts_ns for p in window]
    rng.shuffle(window)
    for p, ts in zip(window, times, strict=True):
        p.ts_ns = ts
    packets[i:i + len(window)] = window
    return f"packets {i + 1}..{i + len(window)} shuffled"


def flip_flag(rng: random.Random, packets: list[Packet]) -> str | None:
    picked = _pick_tcp(rng, packets)
    if picked is None:
        return None
    i, at = picked
    name, bit = rng.choice((("SYN", SYN), ("FIN", FIN), ("RST", RST), ("ACK", ACK)))
    _set(packets[i], at + 13, bytes([packets[i].data[at + 13] ^ bit]))
    return f"{name} flipped in packet {i + 1}"


def set_flags(rng: random.Random, packets: list[Packet]) -> str | None:
    """Flags no stack sends together (SYN+FIN, SYN+RST, FIN+RST, none, all) or a plain retransmission's."""
    picked = _pick_tcp(rng, packets)
    if picked is None:
        return None
    i, at = picked
    flags = rng.choice((SYN | FIN, SYN | RST, SYN | FIN | ACK, SYN | RST | ACK, FIN | RST, FIN | RST | ACK, RST,
                        RST | ACK, 0, 0xFF, SYN, SYN | ACK, FIN | ACK, ACK))
    _set(packets[i], at + 13, bytes([flags]))
    return f"flags {flags:#04x} in packet {i + 1}"


def nudge_seq(rng: random.Random, packets: list[Packet]) -> str | None:
    picked = _pick_tcp(rng, packets)
    if picked is None:
        return None
    i, at = picked
    which, offset = rng.choice((("seq", 4), ("ack", 8)))
    delta = rng.choice((-1, 1))
    value = (_u32(packets[i], at + offset) + delta) % (1 << 32)
    _set(packets[i], at + offset, value.to_bytes(4, "big"))
    return f"{which} {delta:+d} in packet {i + 1}"


def step_back(rng: random.Random, packets: list[Packet]) -> str | None:
    if len(packets) < 2:
        return None
    i = rng.randrange(1, len(packets))
    back = rng.choice((1000, 500_000, 2 * NS, rng.randrange(1, 3 * NS)))
    packets[i].ts_ns = max(0, packets[i].ts_ns - back)
    return f"clock steps back {back / NS:.6f} s at packet {i + 1}"


def cut_frame(rng: random.Random, packets: list[Packet]) -> str | None:
    i = rng.randrange(len(packets))
    packets[i].cut = rng.random()
    return f"packet {i + 1} cut to {packets[i].cut:.2f} of its frame"


def lie_about_length(rng: random.Random, packets: list[Packet]) -> str | None:
    i = rng.randrange(len(packets))
    packets[i].missing = -rng.randint(1, 40)
    return f"packet {i + 1} claims a wire length {-packets[i].missing} bytes under its captured length"


def reuse_tuple(rng: random.Random, packets: list[Packet]) -> str | None:
    """Play one connection again on the same 4-tuple, later (or overlapping), with new ISNs."""
    syns = _tcp_indices(packets, lambda flags: flags & SYN and not flags & ACK)
    if not syns:
        return None
    first = packets[rng.choice(syns)]
    key = _four_tuple(first)
    client_at = tcp_offset(first)
    assert client_at is not None
    client_port = first.data[client_at:client_at + 2]
    conn = [p for p in packets if _four_tuple(p) == key]
    shift = {True: rng.randrange(1 << 32), False: rng.randrange(1 << 32)}
    gap = rng.choice((1000, 50_000_000, NS, 5 * NS, 70 * NS, -100_000_000))
    base = conn[-1].ts_ns + gap - conn[0].ts_ns
    again = []
    for p in conn:
        at = tcp_offset(p)
        assert at is not None
        from_client = p.data[at:at + 2] == client_port
        q = replace(p, ts_ns=p.ts_ns + base)
        _set(q, at + 4, ((_u32(p, at + 4) + shift[from_client]) % (1 << 32)).to_bytes(4, "big"))
        if p.data[at + 13] & ACK:
            _set(q, at + 8, ((_u32(p, at + 8) + shift[not from_client]) % (1 << 32)).to_bytes(4, "big"))
        again.append(q)
    packets[:] = sorted(packets + again, key=lambda p: p.ts_ns)
    return f"a connection of {len(conn)} packets played again {gap / NS:+.3f} s after its end with new ISNs"


def wrap_sequence(rng: random.Random, packets: list[Packet]) -> str | None:
    """Shift one connection's sequence numbers so that they wrap around 2**32 in its middle."""
    found = _tcp_indices(packets)
    if not found:
        return None
    key = _four_tuple(packets[rng.choice(found)])
    members = [p for p in packets if _four_tuple(p) == key]
    firsts: dict[bytes, int] = {}
    for p in members:
        at = tcp_offset(p)
        assert at is not None
        firsts.setdefault(p.data[at:at + 2], _u32(p, at + 4))
    shifts = {port: ((1 << 32) - seq - rng.randint(0, 3000)) % (1 << 32) for port, seq in firsts.items()}
    for p in members:
        at = tcp_offset(p)
        assert at is not None
        mine, theirs = p.data[at:at + 2], p.data[at + 2:at + 4]
        _set(p, at + 4, ((_u32(p, at + 4) + shifts[mine]) % (1 << 32)).to_bytes(4, "big"))
        if theirs in shifts:
            _set(p, at + 8, ((_u32(p, at + 8) + shifts[theirs]) % (1 << 32)).to_bytes(4, "big"))
    return f"sequence numbers of a {len(members)}-packet connection wrap around 2**32"


def keepalive(rng: random.Random, packets: list[Packet]) -> str | None:
    acks = _tcp_indices(packets, lambda flags: flags == ACK)
    if not acks:
        return None
    i = rng.choice(acks)
    p = replace(packets[i], ts_ns=packets[i].ts_ns + rng.choice((1, 10_000_000, NS)))
    at = tcp_offset(p)
    assert at is not None
    _set(p, at + 4, ((_u32(p, at + 4) - 1) % (1 << 32)).to_bytes(4, "big"))
    if rng.random() < 0.5:
        _grow(p, b"\0")
    packets.insert(i + 1, p)
    return f"keep-alive probe after packet {i + 1}"


def add_payload(rng: random.Random, packets: list[Packet]) -> str | None:
    found = _tcp_indices(packets, lambda flags: bool(flags & (SYN | FIN)) or rng.random() < 0.2)
    if not found:
        return None
    i = rng.choice(found)
    size = rng.choice((1, 2, 100, 1400))
    _grow(packets[i], bytes(rng.randrange(256) for _ in range(size)))
    return f"{size} payload bytes added to packet {i + 1}"


def garble_options(rng: random.Random, packets: list[Packet]) -> str | None:
    """Rewrite the TCP options of a SYN: random kinds and lengths, duplicates, truncated options."""
    syns = _tcp_indices(packets, lambda flags: bool(flags & SYN))
    if not syns:
        return None
    i = rng.choice(syns)
    p = packets[i]
    at = tcp_offset(p)
    assert at is not None
    pieces = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.choice((0, 1, 2, 2, 3, 3, 4, 5, 8, 34, 30, 254, rng.randrange(256)))
        if kind in (0, 1):
            pieces.append(bytes([kind]))
            continue
        length = rng.choice((0, 1, 2, 3, 4, 10, {2: 4, 3: 3, 4: 2, 8: 10}.get(kind, 2), rng.randrange(40)))
        pieces.append(bytes([kind, length]) + bytes(rng.randrange(256) for _ in range(max(0, length - 2))))
    options = b"".join(pieces)[:40]
    options += b"\0" * (-len(options) % 4)
    header = 20 + len(options)
    old = (p.data[at + 12] >> 4) * 4
    data = bytearray(p.data[:at + 20] + options + p.data[at + old:])
    data[at + 12] = (header // 4) << 4 | (data[at + 12] & 0x0F)
    p.data = bytes(data)
    _fix_ip_length(p, header - old)
    return f"options of packet {i + 1} replaced by {options.hex()}"


def _fix_ip_length(p: Packet, delta: int) -> None:
    data = bytearray(p.data)
    where = slice(2, 4) if p.ethertype == ETH_IPV4 else slice(4, 6)
    data[where] = ((int.from_bytes(data[where], "big") + delta) % 65536).to_bytes(2, "big")
    p.data = bytes(data)


def bad_header(rng: random.Random, packets: list[Packet]) -> str | None:
    """A header field that contradicts itself: TCP data offset, IPv4 IHL, version, total length, protocol."""
    found = _tcp_indices(packets)
    if not found:
        return None
    i = rng.choice(found)
    p = packets[i]
    at = tcp_offset(p)
    assert at is not None
    choice = rng.randrange(6 if p.ethertype == ETH_IPV4 else 3)
    if choice == 0:
        offset = rng.randrange(16)
        _set(p, at + 12, bytes([offset << 4 | (p.data[at + 12] & 0x0F)]))
        return f"TCP data offset {offset} in packet {i + 1}"
    if choice == 1:
        version = rng.choice((0, 5, 7, 15))
        _set(p, 0, bytes([version << 4 | (p.data[0] & 0x0F)]))
        return f"IP version {version} in packet {i + 1}"
    if choice == 2:
        length = rng.choice((0, 0, 10, 20, 65535))
        _set(p, 2 if p.ethertype == ETH_IPV4 else 4, length.to_bytes(2, "big"))
        return f"IP length field {length} in packet {i + 1}"
    if choice == 3:
        ihl = rng.choice((0, 4, 6, 15))
        _set(p, 0, bytes([0x40 | ihl]))
        return f"IPv4 IHL {ihl} in packet {i + 1}"
    if choice == 4:
        _set(p, 6, rng.choice((b"\x00\x01", b"\x20\x00", b"\x3f\xff")))
        return f"IPv4 fragment offset/flags {p.data[6:8].hex()} in packet {i + 1}"
    proto = rng.choice((17, 1, 132))
    _set(p, 9, bytes([proto]))
    return f"IPv4 protocol {proto} in packet {i + 1}"


def inject_other(rng: random.Random, packets: list[Packet]) -> str | None:
    """A frame that is not TCP: ARP, UDP, ICMP, an IPv6 packet with no TCP, an IP fragment."""
    i = rng.randrange(len(packets) + 1)
    ts = packets[min(i, len(packets) - 1)].ts_ns if packets else 0
    kind = rng.randrange(4)
    if kind == 0:
        p = Packet(ts, ETH_ARP, bytes.fromhex("0001080006040001") + bytes(20))
    elif kind == 1:
        p = Packet(ts, ETH_IPV4, bytes.fromhex("4500001c000000004011") + bytes(10) + bytes(8))
    elif kind == 2:
        p = Packet(ts, ETH_IPV6, bytes.fromhex("60000000000811ff") + bytes(32) + bytes(8))
    else:
        p = Packet(ts, ETH_IPV4, bytes.fromhex("4500002800002010ff06") + bytes(10) + bytes(20))
    packets.insert(i, p)
    return f"{('ARP', 'UDP', 'IPv6 UDP', 'IPv4 fragment')[kind]} frame inserted at {i + 1}"


def stretch_time(rng: random.Random, packets: list[Packet]) -> str | None:
    factor = rng.choice((0.001, 0.05, 0.3, 3.0, 20.0, 200.0))
    start = packets[0].ts_ns
    for p in packets:
        p.ts_ns = start + int((p.ts_ns - start) * factor)
    return f"time stretched by {factor}"


def rebase_time(rng: random.Random, packets: list[Packet]) -> str | None:
    """Move the capture to start near time zero (tiny timestamps) or at another epoch."""
    base = rng.choice((0, 1, 37_000, 999_000_000, 60 * NS, 4_294_960_000 * NS, (1 << 33) * NS - NS, 10**10 * NS))
    shift = base - min(p.ts_ns for p in packets)
    for p in packets:
        p.ts_ns = max(0, p.ts_ns + shift)
    return f"time moved to start at {base / NS} s"


def one_direction(rng: random.Random, packets: list[Packet]) -> str | None:
    """Keep only one direction of one connection, as asymmetric routing shows it."""
    found = _tcp_indices(packets)
    if not found:
        return None
    chosen = packets[rng.choice(found)]
    at = tcp_offset(chosen)
    assert at is not None
    key, sender = _four_tuple(chosen), chosen.data[at:at + 2]
    kept = [p for p in packets if _four_tuple(p) != key or p.data[tcp_offset(p) or 0:][:2] == sender]
    if len(kept) == len(packets) or not kept:
        return None
    packets[:] = kept
    return f"one direction of a connection only (source port {int.from_bytes(sender, 'big')})"


def synack_first(rng: random.Random, packets: list[Packet]) -> str | None:
    """Put a SYN-ACK a few hundred µs before the SYN it answers (a multi-queue capture's skew)."""
    synacks = _tcp_indices(packets, lambda flags: flags & (SYN | ACK) == SYN | ACK and not flags & RST)
    for i in synacks:
        key = _four_tuple(packets[i])
        before = [j for j in range(i) if _four_tuple(packets[j]) == key]
        if before and packets[before[-1]].data[(tcp_offset(packets[before[-1]]) or 0) + 13] & (SYN | ACK) == SYN:
            j = before[-1]
            synack = packets.pop(i)
            synack.ts_ns = packets[j].ts_ns - rng.choice((1, 300_000))
            packets.insert(j, synack)
            return f"SYN-ACK (packet {i + 1}) moved before its SYN (packet {j + 1})"
    return None


MUTATIONS: list[Mutation] = [
    drop, drop, duplicate, swap, swap, shuffle_window, flip_flag, flip_flag, flip_flag, set_flags, nudge_seq,
    nudge_seq,
    step_back, cut_frame, lie_about_length, reuse_tuple, reuse_tuple, wrap_sequence, keepalive, add_payload,
    garble_options, bad_header, inject_other, stretch_time, rebase_time, one_direction, synack_first,
]


# -- IPv6 -----------------------------------------------------------------------------------------

def _v6_address(rng: random.Random, v4: bytes) -> bytes:
    """A 16-byte address for `v4`, spelt so that str() has to compress zeros in many ways."""
    kind = rng.randrange(7)
    if kind == 0:
        return bytes.fromhex("fd770000000000000000") + b"\0\0" + v4  # fd77::a4d:1
    if kind == 1:
        return bytes.fromhex("20010db80000000000010000") + v4[2:] + b"\0\0"  # two zero runs
    if kind == 2:
        return bytes(12) + v4  # ::a4d:1
    if kind == 3:
        return bytes.fromhex("fe80") + v4 + bytes(10)  # fe80:a4d:1::
    if kind == 4:
        return bytes.fromhex("20010db8000100020003") + bytes([1, 2]) + v4  # no zero run
    if kind == 5:
        return bytes.fromhex("2001000000010000000100000001") + v4[2:]  # single zero groups only
    return bytes(10) + b"\xff\xff" + v4  # IPv4-mapped


def _extension_headers(rng: random.Random) -> list[tuple[int, bytes]]:
    """(header type, body without the next-header byte) for a few IPv6 extension headers."""
    headers = []
    for _ in range(rng.choice((0, 0, 1, 2))):
        kind = rng.choice((0, 60, 43, 44, 51, 135))
        if kind == 51:  # AH: length in 4-byte units minus 2
            headers.append((kind, bytes([1]) + bytes(10)))
        elif kind == 44:  # fragment header, offset 0 and no more fragments: an atomic fragment
            headers.append((kind, bytes(7)))
        else:
            headers.append((kind, bytes([0]) + bytes(6)))
    return headers


def to_ipv6(rng: random.Random, packets: list[Packet]) -> str:
    """Carry every IPv4 packet in IPv6 instead, same TCP bytes, addresses spelt at random."""
    names: dict[bytes, bytes] = {}
    ext_count = 0
    for p in packets:
        d = p.data
        if p.ethertype != ETH_IPV4 or len(d) < 20 or d[0] >> 4 != 4 or (d[0] & 15) < 5:
            continue
        ihl = (d[0] & 15) * 4
        if len(d) < ihl:
            continue
        src = names.setdefault(d[12:16], _v6_address(rng, d[12:16]))
        dst = names.setdefault(d[16:20], _v6_address(rng, d[16:20]))
        headers = _extension_headers(rng) if rng.random() < 0.3 else []
        ext_count += bool(headers)
        chain, next_header = b"", d[9]
        for kind, body in reversed(headers):
            chain, next_header = bytes([next_header]) + body + chain, kind
        total = int.from_bytes(d[2:4], "big")
        payload_len = (max(total - ihl, 0) + len(chain)) if total else 0
        p.data = (struct.pack("!IHBB", 0x60000000, payload_len % 65536, next_header, 64) + src + dst
                  + chain + d[ihl:])
        p.ethertype = ETH_IPV6
    spelt = ", ".join(sorted({_v6_text(a) for a in names.values()}))
    return f"carried in IPv6 ({spelt}; {ext_count} packets with extension headers)"


def _v6_text(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))


# -- link layers ----------------------------------------------------------------------------------

LINKS = {  # link type: name
    1: "Ethernet", 113: "Linux cooked v1", 276: "Linux cooked v2", 101: "raw IP", 12: "raw IP (12)",
    14: "raw IP (14)", 0: "BSD loopback", 108: "OpenBSD loopback", 228: "IPv4", 229: "IPv6",
    119: "802.11 Prism (not read)",
}


def _with_ethertype(header: bytes, type_at: int, kind: int, vlans: list[int], payload: bytes) -> bytes:
    """A link header whose EtherType sits at `type_at`, with VLAN tags: [TPID ... TCI, next type]."""
    types = [*vlans, kind]
    head = bytearray(header)
    head[type_at:type_at + 2] = types[0].to_bytes(2, "big")
    tags = b"".join(struct.pack("!HH", 100 + i, next_type) for i, next_type in enumerate(types[1:]))
    return bytes(head) + tags + payload


def _outer_ip(protocol: int, payload: bytes) -> bytes:
    """An IPv4 header 192.0.2.1 > 192.0.2.2 (checksum 0: nobody checks it) around `payload`."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, (20 + len(payload)) & 0xFFFF, 0, 0, 64, protocol, 0,
                       bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + payload


def wrapped(rng: random.Random, p: Packet) -> tuple[int, bytes]:
    """(EtherType, bytes) of IP packet `p` in a tunnel of analyzer/tunnels.py or layers.py (issue 13), so
    the comparisons and the fuzzer seeded from them reach those decoders too."""
    kind = rng.choice(("ipip", "gre", "gre-key", "vxlan", "mpls", "pppoe", "gtp-u", "geneve"))
    inner_type, ip = p.ethertype, p.data
    if kind == "ipip":
        return ETH_IPV4, _outer_ip(4 if inner_type == ETH_IPV4 else 41, ip)
    if kind in ("gre", "gre-key"):
        head = struct.pack("!HHI", 0x2000, inner_type, rng.randrange(4)) if kind == "gre-key" else \
            struct.pack("!HH", 0, inner_type)
        return ETH_IPV4, _outer_ip(47, head + ip)
    if kind == "mpls":
        labels = [struct.pack("!I", (16 + i) << 12 | 64) for i in range(rng.randint(0, 2))]
        return 0x8847, b"".join(labels) + struct.pack("!I", 99 << 12 | 0x100 | 64) + ip
    if kind == "pppoe":
        ppp = 0x0021 if inner_type == ETH_IPV4 else 0x0057
        return 0x8864, struct.pack("!BBHHH", 0x11, 0, 7, len(ip) + 2, ppp) + ip
    ports = {"vxlan": 4789, "gtp-u": 2152, "geneve": 6081}[kind]
    if kind == "vxlan":
        head = struct.pack("!II", 0x08000000, 42 << 8) + bytes(12) + struct.pack("!H", inner_type)
    elif kind == "gtp-u":
        head = struct.pack("!BBHI", 0x30, 0xFF, len(ip), 7)
    else:
        head = struct.pack("!BBHI", 0, 0, inner_type, 77 << 8)
    udp = struct.pack("!HHHH", 50000, ports, 8 + len(head) + len(ip), 0)
    return ETH_IPV4, _outer_ip(17, udp + head + ip)


def link_frame(linktype: int, p: Packet, vlans: list[int], rng: random.Random) -> bytes:
    """`p` in a frame of `linktype` (on Ethernet, an IP packet now and then inside a tunnel)."""
    family = {ETH_IPV4: 2, ETH_IPV6: rng.choice((10, 24, 28, 30))}.get(p.ethertype, 0x1234)
    if linktype == 1:
        kind, data = p.ethertype, p.data
        if kind in (ETH_IPV4, ETH_IPV6) and rng.random() < 0.08:
            kind, data = wrapped(rng, p)
        return _with_ethertype(bytes.fromhex("020000000002020000000001") + b"\0\0", 12, kind, vlans, data)
    if linktype == 113:
        return _with_ethertype(struct.pack("!HHH8s", 0, 1, 6, b"\x02" * 6) + b"\0\0", 14, p.ethertype, vlans, p.data)
    if linktype == 276:
        return _with_ethertype(struct.pack("!HHIHBB8s", 0, 0, 2, 1, 0, 6, b"\x02" * 6), 0, p.ethertype, vlans,
                               p.data)
    if linktype == 0:  # host byte order, usually little-endian; sometimes written the other way
        return struct.pack("<I" if rng.random() < 0.8 else ">I", family) + p.data
    if linktype == 108:
        return struct.pack(">I", family) + p.data
    return p.data  # raw IP, IPv4, IPv6, and 802.11 Prism (which is not read)


def _link_choice(rng: random.Random, versions: set[int]) -> int:
    choices = [1, 1, 1, 113, 276, 101, 12, 14, 0, 108]
    if versions == {ETH_IPV4}:
        choices.append(228)
    if versions == {ETH_IPV6}:
        choices.append(229)
    if rng.random() < 0.02:
        return 119
    return rng.choice(choices)


def _vlans(rng: random.Random, linktype: int) -> list[int]:
    if linktype not in (1, 113, 276) or rng.random() < 0.6:
        return []
    return [rng.choice(VLAN_TPIDS) for _ in range(rng.randint(1, 3))]


def _frames(rng: random.Random, packets: list[Packet], linktype: int,
            vlans: list[int]) -> list[tuple[bytes, int]]:
    """(captured bytes, wire length) of each packet in `linktype` frames."""
    out = []
    for p in packets:
        data = link_frame(linktype, p, vlans, rng)
        wire = max(0, len(data) + p.missing)
        if p.cut is not None:
            data = data[:int(len(data) * p.cut)]
        out.append((data, wire))
    return out


# -- containers -------------------------------------------------------------------------------------

def write_pcap(rng: random.Random, packets: list[Packet], what: list[str]) -> bytes:
    linktype = _link_choice(rng, {p.ethertype for p in packets})
    vlans = _vlans(rng, linktype)
    nano, big = rng.random() < 0.4, rng.random() < 0.3
    order = ">" if big else "<"
    stored_type = linktype | (0x10000000 if rng.random() < 0.1 else 0)  # FCS bits, masked off by readers
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 262144,
                                stored_type))
    unit = 1 if nano else 1000
    odd_fraction = rng.random() < 0.05
    for p, (data, wire) in zip(packets, _frames(rng, packets, linktype, vlans), strict=True):
        sec, frac = divmod(p.ts_ns // unit, NS // unit)
        sec %= 1 << 32
        if odd_fraction and sec > 0:  # a fraction past one second: readers just add it up
            sec, frac = sec - 1, frac + NS // unit
        out += struct.pack(order + "IIII", sec, frac, len(data), wire) + data
    what.append(f"pcap, {'big' if big else 'little'}-endian, {'ns' if nano else 'µs'}, {LINKS[linktype]}"
                + (f" with VLAN tags {[hex(v) for v in vlans]}" if vlans else "")
                + (", fractions over a second" if odd_fraction else ""))
    return bytes(out)


@dataclass
class _Interface:
    linktype: int
    vlans: list[int]
    resolution: int  # if_tsresol byte: 6 = µs, 9 = ns, 0x80 | n = 2**-n
    offset: int  # if_tsoffset, seconds
    resolution_written: bool


def _ticks(ts_ns: int, iface: _Interface) -> int:
    ns = max(0, ts_ns - iface.offset * NS)
    if iface.resolution & 0x80:
        return (ns << (iface.resolution & 0x7F)) // NS
    power = iface.resolution
    return ns * 10 ** power // NS


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = 12 + len(body)
    return struct.pack(order + "II", block_type, size) + body + struct.pack(order + "I", size)


def _options(order: str, options: list[tuple[int, bytes]]) -> bytes:
    out = b"".join(struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
                   for code, value in options)
    return out + struct.pack(order + "HH", 0, 0) if options else b""


def write_pcapng(rng: random.Random, packets: list[Packet], what: list[str]) -> bytes:
    versions = {p.ethertype for p in packets}
    big = rng.random() < 0.2
    order = ">" if big else "<"
    interfaces = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        linktype = _link_choice(rng, versions)
        resolution = rng.choice((6, 6, 9, 3, 0x80 | 20, 0x80 | 10))
        offset = rng.choice((0, 0, 0, 100, -1_000_000))
        interfaces.append(_Interface(linktype, _vlans(rng, linktype), resolution, offset,
                                     resolution != 6 or rng.random() < 0.3))
    second_section = rng.random() < 0.15
    split = rng.randrange(len(packets) + 1) if second_section else len(packets)
    out = bytearray()

    def section() -> None:
        out.extend(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
                          + _options(order, [(4, b"synfin tests")] if rng.random() < 0.3 else [])))
        for iface in interfaces:
            options: list[tuple[int, bytes]] = []
            if rng.random() < 0.3:
                options.append((2, b"eth0\0"))
            if iface.resolution_written:
                options.append((9, bytes([iface.resolution])))
            if iface.offset:
                options.append((14, struct.pack(order + "q", iface.offset)))
            out.extend(_block(order, 1, struct.pack(order + "HHI", iface.linktype, 0, 262144)
                              + _options(order, options)))

    section()
    kinds = []
    for index, p in enumerate(packets):
        if index == split:
            section()
        if rng.random() < 0.03:  # blocks a reader skips: name resolution, statistics, custom
            out.extend(_block(order, rng.choice((4, 5, 0x40000BAD)), bytes(rng.randrange(4, 24))))
        which = rng.randrange(len(interfaces))
        iface = interfaces[which]
        (data, wire), = _frames(rng, [p], iface.linktype, iface.vlans)
        ticks = _ticks(p.ts_ns, iface)
        roll = rng.random()
        if roll < 0.04 and which == 0:
            kinds.append("simple")
            out.extend(_block(order, 3, struct.pack(order + "I", wire) + data))
        elif roll < 0.08:
            kinds.append("obsolete")
            out.extend(_block(order, 2, struct.pack(order + "HHIIII", which, 0, ticks >> 32 & 0xFFFFFFFF,
                                                    ticks & 0xFFFFFFFF, len(data), wire) + data))
        else:
            trailer = _options(order, [(2, struct.pack(order + "I", 1))]) if rng.random() < 0.05 else b""
            body = struct.pack(order + "IIIII", which, ticks >> 32 & 0xFFFFFFFF, ticks & 0xFFFFFFFF, len(data), wire)
            out.extend(_block(order, 6, body + data + b"\0" * (-len(data) % 4) + trailer))
    described = ", ".join(f"{LINKS[i.linktype]}" + (f" VLAN {[hex(v) for v in i.vlans]}" if i.vlans else "")
                          + f" tsresol {i.resolution:#x}" + (f" tsoffset {i.offset}" if i.offset else "")
                          for i in interfaces)
    special = {k: kinds.count(k) for k in ("simple", "obsolete") if k in kinds}
    what.append(f"pcapng, {'big' if big else 'little'}-endian, interfaces: {described}"
                + (f", second section before packet {split + 1}" if second_section else "")
                + (f", packet blocks {special}" if special else ""))
    return bytes(out)


TIMINGS = (
    [],
    ["--msl", "0.01", "--idle-timeout", "0.5", "--handshake-timeout", "0.2"],
    ["--msl", "0", "--idle-timeout", "0", "--handshake-timeout", "0"],
    ["--msl", "0.001", "--idle-timeout", "0.05", "--handshake-timeout", "2"],
    ["--msl", "1", "--idle-timeout", "3", "--handshake-timeout", "0.01"],
)


def crafted(seed: int) -> Crafted:
    """The crafted capture of `seed` (the same bytes every time)."""
    rng = random.Random(seed)
    what: list[str] = []
    packets = _traffic(rng, what)
    for _ in range(rng.choice((1, 2, 3, 3, 4, 5, 7, 12))):
        if not packets:
            break
        said = rng.choice(MUTATIONS)(rng, packets)
        if said:
            what.append(said)
    if packets and rng.random() < 0.25:
        what.append(to_ipv6(rng, packets))
    if rng.random() < 0.35:
        content, suffix = write_pcapng(rng, packets, what), ".pcapng"
    else:
        content, suffix = write_pcap(rng, packets, what), ".pcap"
    if rng.random() < 0.1:
        content, suffix = gzip.compress(content, mtime=0), suffix + ".gz"
        what.append("gzip")
    options = list(rng.choice(TIMINGS))
    return Crafted(seed, f"crafted-{seed}{suffix}", content, what, options)


def pcapng_with_ticks(packets: list[Packet], resolution: int, ticks: list[int], linktype: int = 1) -> bytes:
    """One interface of if_tsresol `resolution`, the packets at the given tick counts (no offset)."""
    order = "<"
    out = bytearray(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    idb = struct.pack(order + "HHI", linktype, 0, 262144) + _options(order, [(9, bytes([resolution]))])
    out += _block(order, 1, idb)
    rng = random.Random(0)
    for p, count in zip(packets, ticks, strict=False):
        (data, wire), = _frames(rng, [p], linktype, [])
        body = struct.pack(order + "IIIII", 0, count >> 32, count & 0xFFFFFFFF, len(data), wire)
        out += _block(order, 6, body + data)
    return bytes(out)

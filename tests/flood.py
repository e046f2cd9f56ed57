"""Crafted SYN floods, written fast: struct-packed pcap, no scapy (a million SYNs in a few seconds).

Shared by tests/test_flood.py and benchmarks/bench_flood.py. Every packet here
is crafted: Ethernet + IPv4 (or IPv6) + TCP, checksums left at zero (synfin
does not check them), written as a little-endian microsecond pcap.

- `syn_flood(count, seconds)`: `count` SYNs from distinct (address, port)
  pairs to one server, spread evenly over `seconds`; nothing answers them (or,
  with `answered`, the server's SYN-ACK only), so every one is a half-open
  connection until the handshake timeout.
- `mixed_flood(count, seed)`: a flood with the cases a compact half-open
  connection must get right mixed in: handshakes that complete, SYNs
  retransmitted, answered by RST, answered by a SYN (simultaneous open),
  SYNs with data and without options, a new ISN on a 4-tuple still half-open
  and port reuse after the handshake timeout, IPv6, a host's SYNs to itself,
  and connections whose first packet is not a bare SYN.
- `answered_flood(count, seed)`: a flood that a server answers, with
  SYN-ACKs (some retransmitted) and the other kinds of second packet mixed in.
- `analyze_peak(capture)`: run `synfin analyze` in a child process and say
  its peak resident memory.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
SERVER4 = ipaddress.IPv4Address("192.0.2.1").packed
SERVER6 = ipaddress.IPv6Address("2001:db8::1").packed
MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # microseconds, Ethernet
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, caplen, wire length
_ETHER4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_ETHER6 = _ETHER4[:12] + b"\x86\xdd"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(frozen=True)
class Seg:
    """One crafted TCP segment: when (µs), between whom, and its TCP fields."""

    us: int
    src: bytes  # 4 or 16 bytes
    dst: bytes
    sport: int
    dport: int
    flags: int
    seq: int = 0
    ack: int = 0
    payload: int = 0  # bytes of data (zeros)
    options: bytes = MSS_OPTION


def frame(seg: Seg) -> bytes:
    """The Ethernet frame of one segment."""
    tcp = _TCP.pack(seg.sport, seg.dport, seg.seq & 0xFFFFFFFF, seg.ack & 0xFFFFFFFF,
                    (5 + len(seg.options) // 4) << 4, seg.flags, 65535, 0, 0) + seg.options + bytes(seg.payload)
    if len(seg.src) == 4:
        return _ETHER4 + _IPV4.pack(0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, seg.src, seg.dst) + tcp
    return _ETHER6 + _IPV6.pack(6 << 28, len(tcp), 6, 64, seg.src, seg.dst) + tcp


def write_pcap(path: Path, segments: Iterable[Seg]) -> Path:
    """Write the segments, in the order given, as a pcap file."""
    with open(path, "wb") as out:
        out.write(_PCAP_HEADER)
        for seg in segments:
            data = frame(seg)
            out.write(_RECORD.pack(seg.us // 1_000_000, seg.us % 1_000_000, len(data), len(data)) + data)
    return path


def client4(index: int) -> bytes:
    """A distinct IPv4 client address for each index (10.0.0.0/8, never .0)."""
    return struct.pack("!I", 0x0A000000 + (index % 0xFFFFFF) + 1)


def syn_flood(path: Path, count: int, seconds: float = 1.0, start_us: int = 1_700_000_000_000_000,
              answered: bool = False) -> Path:
    """`count` SYNs from distinct clients to 192.0.2.1:80 within `seconds` (the fast path of this file), each
    followed by the server's SYN-ACK if `answered` (as a server answers a flood, with SYN cookies or not).

    The frames are templates with the client address, ports and ISNs patched in, so a million SYNs take seconds.
    """
    syn = bytearray(_RECORD.size) + frame(Seg(0, client4(0), SERVER4, 1024, 80, SYN))
    synack = bytearray(_RECORD.size) + frame(Seg(0, SERVER4, client4(0), 80, 1024, SYN | ACK))
    ip_at = _RECORD.size + len(_ETHER4)
    tcp_at = ip_at + 20
    size = len(syn) - _RECORD.size
    step = seconds * 1_000_000 / max(count, 1)
    with open(path, "wb") as out:
        out.write(_PCAP_HEADER)
        chunk = bytearray()
        for i in range(count):
            us = start_us + int(i * step)
            client, port, isn = client4(i), 1024 + i % 64000, (i * 2654435761) & 0xFFFFFFFF
            _RECORD.pack_into(syn, 0, us // 1_000_000, us % 1_000_000, size, size)
            syn[ip_at + 12:ip_at + 16] = client
            struct.pack_into("!HHI", syn, tcp_at, port, 80, isn)
            chunk += syn
            if answered:
                _RECORD.pack_into(synack, 0, (us + 1) // 1_000_000, (us + 1) % 1_000_000, size, size)
                synack[ip_at + 16:ip_at + 20] = client
                struct.pack_into("!HHII", synack, tcp_at, 80, port, isn ^ 0x5A5A5A5A, (isn + 1) & 0xFFFFFFFF)
                chunk += synack
            if len(chunk) >= 1 << 20:
                out.write(chunk)
                chunk.clear()
        out.write(chunk)
    return path


def mixed_flood(count: int, seed: int = 0, handshake_timeout: float = 5.0) -> list[Seg]:
    """A flood of `count` SYNs over about 4 handshake timeouts, with every kind of second packet mixed in.

    Sorted by time (stable: equal times keep their order of making, and some times are equal on purpose).
    """
    rng = random.Random(seed)
    span_us = int(4 * handshake_timeout * 1_000_000)
    timeout_us = int(handshake_timeout * 1_000_000)
    segs: list[tuple[int, int, Seg]] = []
    order = 0

    def add(seg: Seg) -> None:
        nonlocal order
        segs.append((seg.us, order, seg))
        order += 1

    for i in range(count):
        us = 1_000_000 + rng.randrange(span_us) // 1000 * 1000  # whole milliseconds: ties happen
        six = rng.random() < 0.1
        client = ipaddress.IPv6Address(0x20010DB8_0001 << 80 | i).packed if six else client4(i)
        server = SERVER6 if six else SERVER4
        cport, sport, isn, sisn = 20000 + i % 40000, rng.choice((80, 443, 22)), rng.getrandbits(32), rng.getrandbits(32)
        kind = rng.choices(["flood", "handshake", "retransmit", "refused", "simultaneous", "new isn",
                            "reuse", "data", "bare", "synack first", "midstream", "land"],
                           [60, 10, 5, 5, 2, 3, 5, 3, 3, 2, 2, 1])[0]
        if kind == "land":  # to itself: the key's two ends share the address, and sometimes the port
            server, sport = client, rng.choice((cport, 80))
        c2s = dict(src=client, dst=server, sport=cport, dport=sport)
        s2c = dict(src=server, dst=client, sport=sport, dport=cport)
        later = us + rng.randrange(1, 3000) * 1000 // 3
        if kind == "synack first":
            add(Seg(us, **s2c, flags=SYN | ACK, seq=sisn, ack=isn + 1))
            add(Seg(later, **c2s, flags=ACK, seq=isn + 1, ack=sisn + 1, options=b""))
            continue
        if kind == "midstream":
            add(Seg(us, **c2s, flags=ACK, seq=isn, ack=sisn, payload=100, options=b""))
            continue
        add(Seg(us, **c2s, flags=SYN, seq=isn, payload=20 if kind == "data" else 0,
                options=b"" if kind == "bare" else MSS_OPTION))
        if kind == "handshake":
            add(Seg(later, **s2c, flags=SYN | ACK, seq=sisn, ack=isn + 1))
            add(Seg(later + 1000, **c2s, flags=ACK, seq=isn + 1, ack=sisn + 1, options=b""))
            if rng.random() < 0.5:
                add(Seg(later + 5000, **c2s, flags=FIN | ACK, seq=isn + 1, ack=sisn + 1, options=b""))
                add(Seg(later + 6000, **s2c, flags=FIN | ACK, seq=sisn + 1, ack=isn + 2, options=b""))
                add(Seg(later + 7000, **c2s, flags=ACK, seq=isn + 2, ack=sisn + 2, options=b""))
        elif kind == "retransmit":
            for k in range(1, rng.randrange(2, 4)):
                add(Seg(us + k * 1_000_000, **c2s, flags=SYN, seq=isn))
        elif kind == "refused":
            add(Seg(later, **s2c, flags=RST | ACK, seq=0, ack=isn + 1, options=b""))
        elif kind == "simultaneous":
            add(Seg(later, **s2c, flags=SYN, seq=sisn))
        elif kind == "new isn":
            add(Seg(later, **c2s, flags=SYN, seq=isn + 12345))
        elif kind == "reuse":
            add(Seg(us + timeout_us + rng.randrange(0, 2) * 1000 + rng.randrange(0, 2), **c2s, flags=SYN,
                    seq=isn + 99999))
    segs.sort(key=lambda item: (item[0], item[1]))
    return [seg for _, _, seg in segs]


def answered_flood(count: int, seed: int = 0, seconds: float = 2.0) -> list[Seg]:
    """`count` SYNs within `seconds`, most answered by a SYN-ACK (a server under a flood answers each one), some
    of those retransmitted (a few, or more times than tracker.c keeps), some completing the handshake, refused,
    unanswered, repeated or restarted with a new ISN; some over IPv6. Sorted by time, ties in order of making."""
    rng = random.Random(seed)
    segs: list[tuple[int, int, Seg]] = []
    for i in range(count):
        us = 1_000_000 + int(i * seconds * 1_000_000 / count)
        six = rng.random() < 0.1
        client = ipaddress.IPv6Address(0x20010DB8_0002 << 80 | i).packed if six else client4(i)
        server = SERVER6 if six else SERVER4
        c2s = dict(src=client, dst=server, sport=20000 + i % 40000, dport=80)
        s2c = dict(src=server, dst=client, sport=80, dport=20000 + i % 40000)
        isn, sisn = rng.getrandbits(32), rng.getrandbits(32)
        kind = rng.choices(["cookie", "retransmitting", "many", "completes", "refused", "unanswered",
                            "syn again", "new isn"], [50, 20, 3, 10, 5, 5, 5, 2])[0]
        made = [Seg(us, **c2s, flags=SYN, seq=isn)]
        synack = dict(**s2c, flags=SYN | ACK, seq=sisn, ack=isn + 1)
        if kind == "syn again":
            made.append(Seg(us + 1_000_000, **c2s, flags=SYN, seq=isn))
        if kind in ("cookie", "retransmitting", "many", "completes", "syn again", "new isn"):
            made.append(Seg(us + 100, **synack))
        if kind == "retransmitting":
            made += [Seg(us + 100 + delay * 1_000_000, **synack) for delay in (1, 3, 7)[:rng.randrange(1, 4)]]
        elif kind == "many":
            made += [Seg(us + 100 + k * 200_000, **synack) for k in range(1, 11)]
        elif kind == "completes":
            made.append(Seg(us + 200, **c2s, flags=ACK, seq=isn + 1, ack=sisn + 1, options=b""))
            if rng.random() < 0.5:
                made.append(Seg(us + 300, **c2s, flags=FIN | ACK, seq=isn + 1, ack=sisn + 1, options=b""))
                made.append(Seg(us + 400, **s2c, flags=FIN | ACK, seq=sisn + 1, ack=isn + 2, options=b""))
                made.append(Seg(us + 500, **c2s, flags=ACK, seq=isn + 2, ack=sisn + 2, options=b""))
        elif kind == "refused":
            made.append(Seg(us + 100, **s2c, flags=RST | ACK, seq=0, ack=isn + 1, options=b""))
        elif kind == "new isn":
            made.append(Seg(us + 500_000, **c2s, flags=SYN, seq=isn + 777))
        segs += [(seg.us, len(segs) + k, seg) for k, seg in enumerate(made)]
    segs.sort(key=lambda item: (item[0], item[1]))
    return [seg for _, _, seg in segs]


# `synfin ARGS`, then the peak resident set of this process's own address space (VmHWM) on standard error. Not
# ru_maxrss: exec folds the replaced address space's peak into it, and Python starts children with vfork, so a
# child's ru_maxrss is at least its parent's (pytest's, a few hundred MB late in the suite).
_REPORTING_PEAK = """
import sys
from analyzer.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as status_file:
    peak = next(line.split()[1] for line in status_file if line.startswith("VmHWM:"))
sys.stderr.write(f"peak-rss-kib {peak}\\n")
sys.exit(status)
"""


def analyze_peak(capture: Path, engine: str = "compiled") -> tuple[int, str]:
    """Peak RSS in bytes of `synfin analyze --engine ENGINE -f json CAPTURE` (output to /dev/null), and its
    standard error less the line that reports the peak. Fails on a nonzero exit status."""
    command = [sys.executable, "-c", _REPORTING_PEAK, "analyze", "--engine", engine, "-f", "json", str(capture)]
    with open(os.devnull, "wb") as devnull:
        done = subprocess.run(command, stdout=devnull, stderr=subprocess.PIPE, check=False)
    lines = done.stderr.decode().splitlines(keepends=True)
    if done.returncode != 0 or not lines or not lines[-1].startswith("peak-rss-kib "):
        raise RuntimeError(f"synfin analyze {capture} failed ({done.returncode}):\n{''.join(lines)}")
    return int(lines[-1].split()[1]) * 1024, "".join(lines[:-1])

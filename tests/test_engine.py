"""The compiled engine against the reference pipeline: the same bytes out, whatever comes in.

Issue 6: "The fast path and the readable reference must give identical JSON on
every sample and on the big capture: a test compares them." Every test here
runs `synfin analyze` twice, `--engine reference` and `--engine compiled`
(in-process, through `analyzer.cli.main`; see tests/engine_compare.py), and
holds the two runs to the same exit status, the same standard output and
standard error, and the same output file, byte for byte. A failure names the
capture, the first line that differs and, for JSON and CSV, the fields of it
that differ with both values.

What goes in:

* every sample capture, in every format, one at a time and all together, also
  gzip-compressed, also with timers short enough to fire mid-capture;
* hundreds of crafted captures (tests/crafting.py): the samples' real
  packets mutated at random from fixed seeds, in every link layer and
  container the reader takes;
* damaged files: cut short anywhere, garbage appended, wrong magic, bad
  pcapng blocks, broken gzip;
* real traffic made here by the kernel (benchmarks/make_capture.py at a small
  scale; `kernel` mark: needs root and network namespaces, skipped otherwise);
* the big benchmark capture (`big` mark; not run by default, see
  `test_big_capture`).

Two more things the byte comparison relies on are checked on their own: the
engine prints numbers as Python's repr() does (`float_repr`, `round9_repr`),
and it runs fsm.py's transition table, not rules of its own (a changed table
changes its output, in step with the reference).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analyzer import engine, fsm
from analyzer.connection import Timeouts
from analyzer.fsm import SYNCHRONIZED, TRANSITIONS, Event, State, receive_events, send_events
from tests.crafting import crafted, pcapng_with_ticks, sample_packets
from tests.engine_compare import Outcome, difference, first_file_difference, run_cli, run_engines
from tests.netns import namespaces_unavailable

pytestmark = pytest.mark.skipif(not engine.available(),
                                reason="the compiled engine is not built (python setup.py build_ext --inplace)")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz")))
FORMATS = ("json", "csv", "table")
SHORT_TIMERS = ["--msl", "0.01", "--idle-timeout", "0.5", "--handshake-timeout", "0.2"]
MAKE_CAPTURE = ROOT / "benchmarks" / "make_capture.py"
BIG_DEFAULT = Path("/tmp/synfin-bench/bench.pcap")


def assert_same(outcomes: dict[str, Outcome], fmt: str, what: str) -> None:
    """Fail with the first difference between the reference's and the compiled engine's run."""
    found = difference(outcomes["reference"], outcomes["compiled"], fmt)
    assert found is None, f"the engines differ on {what} (-f {fmt}):\n{found}"


def compare(tmp_path: Path, captures: list[Path], fmt: str, options: list[str] | None = None,
            to_file: bool = True) -> dict[str, Outcome]:
    """Run both engines on `captures` (output to an -o file, or to standard output) and fail on any difference."""
    outcomes = run_engines(captures, fmt, options or [], tmp_path, to_file)
    what = " ".join(map(str, [*(options or []), *(c.name for c in captures)]))
    assert_same(outcomes, fmt, what)
    return outcomes


# -- the build ------------------------------------------------------------------------------------------------


def test_the_engine_is_built_from_the_current_sources() -> None:
    """The extension being compared is not older than its C sources (else this file would test stale code)."""
    from analyzer import _engine

    built = Path(_engine.__file__)
    sources = sorted((built.parent / "_engine").glob("*.[ch]"))
    if not sources:
        pytest.skip("the C sources are not next to the built extension (an installed copy)")
    stale = [s.name for s in sources if s.stat().st_mtime > built.stat().st_mtime]
    assert not stale, (f"{', '.join(stale)} changed after {built.name} was built: "
                       "run `python setup.py build_ext --inplace` before these tests")


# -- every sample ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_sample(tmp_path: Path, capture: Path, fmt: str) -> None:
    """Each sample, each format: the output file and the summary (stderr, or the table's tail) are identical."""
    outcomes = compare(tmp_path, [capture], fmt)
    ref = outcomes["reference"]
    assert ref.status == 0 and ref.output, f"{capture.name}: the reference run failed or wrote nothing"
    summary = ref.output.decode() if fmt == "table" else ref.stderr
    assert f"{capture}: " in summary, "the summary is part of what is compared"


def test_every_sample_gzip_compressed(tmp_path: Path) -> None:
    """The same with each sample gzip-compressed (the engine reads through Python's gzip stream)."""
    for capture in CAPTURES:
        packed = tmp_path / f"{capture.name}.gz"
        packed.write_bytes(gzip.compress(capture.read_bytes(), mtime=0))
        for fmt in ("json", "csv"):
            compare(tmp_path, [packed], fmt)


def test_every_sample_through_stdout(tmp_path: Path) -> None:
    """Without -o, the engine writes to standard output's binary buffer between the CLI's own text writes."""
    for fmt in FORMATS:
        outcomes = compare(tmp_path, CAPTURES[:4], fmt, to_file=False)
        assert outcomes["reference"].stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_captures_on_one_command_line(tmp_path: Path, fmt: str) -> None:
    """All samples in one run (a "capture" key / column; a rule and a header per capture in the table).

    One capture name has a comma, quotes, a space and non-ASCII letters, which JSON escapes and CSV quotes.
    """
    odd = tmp_path / 'odd, "name" é.pcap'
    shutil.copyfile(SAMPLES / "threeway_close.pcap", odd)
    outcomes = compare(tmp_path, [*CAPTURES, odd], fmt)
    output = outcomes["reference"].output or b""
    if fmt == "json":
        assert b'"capture": "' + str(odd).replace('"', '\\"').replace("é", "\\u00e9").encode() + b'"' in output
    elif fmt == "csv":
        assert output.count(b"capture,id,") == 1 and b'"' in output


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_captures_on_one_command_line(tmp_path: Path, fmt: str) -> None:
    """Two captures: the busy one and an IPv6 one; with and without the summary."""
    compare(tmp_path, [SAMPLES / "busy.pcap", SAMPLES / "ipv6.pcap"], fmt)
    outcomes = compare(tmp_path, [SAMPLES / "busy.pcap", SAMPLES / "ipv6.pcap"], fmt, ["--no-summary"])
    assert "connections" not in outcomes["reference"].stderr + (outcomes["reference"].output or b"").decode()


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_in_colour_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Standard output that is a terminal: the table's labels are coloured, by both engines alike."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    runs = {e: run_cli(["analyze", "--engine", e, "-f", fmt, str(SAMPLES / "busy.pcap"),
                        str(SAMPLES / "simultaneous_open.pcap")], tty=True) for e in ("reference", "compiled")}
    assert_same(runs, fmt, "busy.pcap simultaneous_open.pcap on a terminal")
    if fmt == "table":
        assert "\x1b[32mhandshake" in runs["reference"].stdout.decode(), "the terminal run is not coloured"


# -- timers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_sample_with_short_timers(tmp_path: Path, capture: Path) -> None:
    """--msl 0.01 --idle-timeout 0.5 --handshake-timeout 0.2: timers fire between packets; the outputs still match."""
    for fmt in ("json", "csv"):
        compare(tmp_path, [capture], fmt, SHORT_TIMERS)


def test_short_timers_fire_mid_capture(tmp_path: Path) -> None:
    """The short-timer runs above do exercise the timers: TIME_WAIT ends by its 2·MSL timer (frame null) before
    the capture's last packet, and idle connections are retired while later ones are still open (the output is
    no longer in the order of the default run). Without this, the comparison could pass on timers never run."""
    timer_closes, reordered = [], []
    for capture in CAPTURES:
        short = run_cli(["analyze", "--engine", "compiled", "-f", "json", *SHORT_TIMERS, str(capture)]).stdout
        default = run_cli(["analyze", "--engine", "compiled", "-f", "json", str(capture)]).stdout
        records = [json.loads(line) for line in short.splitlines()]
        last_packet = max(r["end"] for r in records) if records else 0.0
        for r in records:
            for side in ("client", "server"):
                if any(state == "CLOSED" and frame is None and ts < last_packet
                       for state, ts, frame in r["states"][side]):
                    timer_closes.append(f"{capture.name} #{r['id']}")
        if [r["id"] for r in records] != [json.loads(line)["id"] for line in default.splitlines()]:
            reordered.append(capture.name)
    assert timer_closes, "no TIME_WAIT ended by its timer mid-capture with the short timers"
    assert "busy.pcap" in reordered and len(reordered) >= 2, f"retired early only in {reordered}"


# -- number formatting ----------------------------------------------------------------------------------------------


@functools.cache
def format_cases() -> list[float]:
    """Timestamps as the readers make them, their sums and differences, edges of the fast paths, random doubles.

    Finite values only: no capture gives an infinite or NaN timestamp or duration (the engine spells those as
    json.dumps does, "Infinity" and "NaN", not as repr).
    """
    rng = random.Random(20240606)
    values: list[float] = [0.0, -0.0, 5e-324, -5e-324, sys.float_info.max,
                           sys.float_info.min, 1e16, 1e16 - 2, 9007199254740993.0, 1e-4, 5e-5, 1e-6, 1e-9, 0.1,
                           0.5, 1.0, 60.0, 0.0005, 0.0625, 1.0000005, 2.0**33, 2.0**32, 4294967295.999999, 1e15 - 0.5]
    for k in range(-1074, 1024):  # powers of two, all of them, and their neighbours
        for x in (2.0**k, -(2.0**k)):
            values += [x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)]
    for edge in (1e-4, 2.0**33, 1e15, 9e6):  # where the engine's fast paths begin and end
        x = edge
        for _ in range(50):
            values += [x, -x]
            x = math.nextafter(x, math.inf)
        x = edge
        for _ in range(50):
            x = math.nextafter(x, -math.inf)
            values.append(x)
        values += [edge + d for d in (1e-6, -1e-6, 1e-9, 5e-5, 0.5, -0.5)]
    for _ in range(10000):
        usec, nsec = rng.randrange(10**6), rng.randrange(10**9)
        for sec in (rng.randint(10**9, 2 * 10**9), rng.randint(0, 1000), rng.randint(2**32 - 1000, 2**32 - 1)):
            us, ns = sec + usec * 1e-6, sec + nsec * 1e-9
            other = sec + rng.choice((0, 0, 1, 30, 900)) + rng.randrange(10**6) * 1e-6
            values += [us, ns, us + 60.0, us + 2 * 30.0, us + 0.01, other - us, us - other, us - us,
                       (us + 1e-6) - us, (us + 5e-5) - us, round(other - us, 9), ns - us]
    for _ in range(100_000):  # any double at all, then doubles of every magnitude
        values.append(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
        values.append(rng.uniform(0, 1e4) * 10.0 ** rng.randint(-12, 12))
    return [x for x in values if math.isfinite(x)]


def test_float_repr_is_python_repr() -> None:
    """The engine's number printing is repr(x) on timestamps, sums, differences, edges and random doubles."""
    from analyzer import _engine

    wrong = [(x, _engine.float_repr(x), repr(x)) for x in format_cases() if _engine.float_repr(x) != repr(x)]
    assert not wrong, f"{len(wrong)} values print differently, e.g. (value, engine, repr): {wrong[:10]}"


def test_round9_repr_is_repr_of_round() -> None:
    """The CSV duration: the engine's repr(round(x, 9)) on the same values."""
    from analyzer import _engine

    wrong = [(x, _engine.round9_repr(x), repr(round(x, 9))) for x in format_cases()
             if _engine.round9_repr(x) != repr(round(x, 9))]
    assert not wrong, f"{len(wrong)} values print differently, e.g. (value, engine, repr(round)): {wrong[:10]}"


def test_round6_repr_is_repr_of_round() -> None:
    """The timing figures: the engine's repr(round(x, 6)) on the same values, and on microsecond edges."""
    from analyzer import _engine

    edges = [k * 1e-6 + d for k in range(0, 2000) for d in (0.0, 5e-7, -5e-7, 4.999e-7, 5.0001e-7)]
    values = [*format_cases(), *edges, *(-x for x in edges), 0.0, -0.0, 1e-300, -1e-300, 8.99e6, 9e6, 1e20]
    wrong = [(x, _engine.round6_repr(x), repr(round(x, 6))) for x in values
             if _engine.round6_repr(x) != repr(round(x, 6))]
    assert not wrong, f"{len(wrong)} values print differently, e.g. (value, engine, repr(round)): {wrong[:10]}"


@pytest.mark.parametrize("bits", [10, 20, 24, 30, 44, 50, 64])
def test_timestamps_in_binary_fractions_near_zero(tmp_path: Path, bits: int) -> None:
    """pcapng with if_tsresol 2**-bits and small tick counts: timestamps j * 2**-bits (powers of two among them),
    printed in JSON and CSV as repr prints them, so the number formatting above matters for real captures."""
    packets = list(sample_packets("handshake_fourway_client_close.pcap"))
    ticks = [1, 2, 3, 4, 6, 8, 16, 1 << 20, (1 << 24) + 1, 1 << 30, 3 << 40][:len(packets)]
    path = tmp_path / f"binary-{bits}.pcapng"
    path.write_bytes(pcapng_with_ticks(packets, 0x80 | bits, ticks))
    for fmt in ("json", "csv"):
        compare(tmp_path, [path], fmt)


# -- crafted captures ---------------------------------------------------------------------------------------------

CRAFTED_BATCHES, CRAFTED_PER_BATCH = 8, 60


@pytest.mark.parametrize("batch", range(CRAFTED_BATCHES))
def test_crafted_captures(tmp_path: Path, batch: int) -> None:
    """Crafted (mutated) captures, 60 per batch: JSON and CSV identical (and the table for one in four).

    Every tenth capture is also analyzed together with the one before it (several captures on a line).
    A failure names the seed; `tests.crafting.crafted(seed)` makes the same capture again, and the
    file is kept in this test's tmp_path.
    """
    failures: list[str] = []
    previous: Path | None = None
    for seed in range(batch * CRAFTED_PER_BATCH, (batch + 1) * CRAFTED_PER_BATCH):
        made = crafted(seed)
        path = made.write(tmp_path)
        runs: list[tuple[list[Path], str]] = [([path], "json"), ([path], "csv")]
        if seed % 4 == 0:
            runs.append(([path], "table"))
        if seed % 10 == 0 and previous is not None:
            runs.append(([previous, path], "csv"))
        for captures, fmt in runs:
            outcomes = run_engines(captures, fmt, made.options, tmp_path)
            found = difference(outcomes["reference"], outcomes["compiled"], fmt)
            if found:
                failures.append(f"{made.describe()}\n  file {path}, -f {fmt}"
                                f"{' with ' + previous.name if len(captures) > 1 else ''}\n{found}")
                break
        previous = path
    assert not failures, f"{len(failures)} crafted captures differ:\n\n" + "\n\n".join(failures[:5])


def test_crafted_captures_are_tcp_traffic(tmp_path: Path) -> None:
    """The crafted captures are mostly analyzable TCP, with connections of every kind (not just skipped frames)."""
    opened, closed, anomalies, segments = set(), set(), 0, 0
    for seed in range(0, 480, 3):  # a simultaneous close is rare (8 of the 480 seeds the comparison runs)
        made = crafted(seed)
        out = run_cli(["analyze", "--engine", "compiled", "-f", "json", *made.options, str(made.write(tmp_path))])
        records = [json.loads(line) for line in out.stdout.splitlines()]
        opened |= {r["open"] for r in records}
        closed |= {r["close"] for r in records}
        anomalies += sum(len(r["anomalies"]) for r in records)
        segments += sum(r["packets"]["client"] + r["packets"]["server"] for r in records)
    assert opened >= {"handshake", "simultaneous-open", "refused", "unanswered", "incomplete", "partial"}
    assert closed >= {"four-way", "three-way", "simultaneous", "reset", "half-closed", "open", "none"}
    assert anomalies > 50 and segments > 3000


# -- bad input ---------------------------------------------------------------------------------------------------

GOOD_PCAP = (SAMPLES / "handshake_fourway_client_close.pcap").read_bytes()
GOOD_PCAPNG = (SAMPLES / "handshake_fourway_client_close.pcapng").read_bytes()


def _pcapng_block(block_type: int, body: bytes, length: int | None = None) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = 12 + len(body) if length is None else length
    return struct.pack("<II", block_type, size) + body + struct.pack("<I", size)


SHB = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB = _pcapng_block(1, struct.pack("<HHI", 1, 0, 0))


def _epb(data: bytes, iface: int = 0, caplen: int | None = None) -> bytes:
    return _pcapng_block(6, struct.pack("<IIIII", iface, 0, 1_000_000, len(data) if caplen is None else caplen,
                                        len(data)) + data)


def _frame_of(pcap: bytes, index: int) -> bytes:
    offset = 24
    for _ in range(index):
        offset += 16 + struct.unpack_from("<I", pcap, offset + 8)[0]
    caplen = struct.unpack_from("<I", pcap, offset + 8)[0]
    return pcap[offset + 16:offset + 16 + caplen]


def _record_offset(pcap: bytes, index: int) -> int:
    offset = 24
    for _ in range(index):
        offset += 16 + struct.unpack_from("<I", pcap, offset + 8)[0]
    return offset


def _garbled_caplen(pcap: bytes, index: int) -> bytes:
    data = bytearray(pcap)
    offset = _record_offset(pcap, index)
    data[offset + 8:offset + 12] = struct.pack("<I", 0x7FFFFFFF)
    return bytes(data)


def _random_records(seed: int, count: int) -> bytes:
    """pcap records of random bytes behind a plausible Ethernet + IPv4/IPv6 + TCP start: the decoder's edges."""
    rng = random.Random(seed)
    out = bytearray()
    for i in range(count):
        frame = bytearray(_frame_of(GOOD_PCAP, i % 11))
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(12, len(frame))] = rng.randrange(256)
        if rng.random() < 0.2:
            frame[12:14] = rng.choice((b"\x86\xdd", b"\x81\x00", b"\x88\xa8", b"\x08\x06"))
        frame = frame[:rng.randint(0, len(frame))] if rng.random() < 0.3 else frame
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), max(0, len(frame) + rng.randint(-5, 5))) + frame
    return bytes(out)


def _shifted_copies(pcap: bytes, copies: int, gap: int) -> bytes:
    """The records of `pcap` again and again, each copy `gap` seconds after the one before."""
    body = pcap[24:]
    out = bytearray(pcap[:24])
    for copy in range(copies):
        pos = 0
        while pos < len(body):
            sec, frac, caplen, wire = struct.unpack_from("<IIII", body, pos)
            out += struct.pack("<IIII", sec + copy * gap, frac, caplen, wire) + body[pos + 16:pos + 16 + caplen]
            pos += 16 + caplen
    return bytes(out)


def _corrupt_deflate(data: bytes) -> bytes:
    """A gzip file whose deflate stream goes bad past its first blocks (zlib.error, not an OSError)."""
    packed = gzip.compress(data, mtime=0)
    rng = random.Random(60)
    while True:
        bad = bytearray(packed)
        pos = rng.randrange(len(bad) // 2, len(bad) - 20)
        for i in range(pos, pos + 8):
            bad[i] = rng.randrange(256)
        try:
            gzip.decompress(bytes(bad))
        except Exception as err:
            if type(err).__name__ == "error":  # zlib.error
                return bytes(bad)


def _bad_files() -> dict[str, tuple[bytes, str]]:
    """Damaged captures: name -> (content, file suffix)."""
    busy = (SAMPLES / "busy.pcap").read_bytes()
    big = _shifted_copies(busy, 6, 20)  # 1.8 MB: more than one of the reference reader's blocks
    big_gz = gzip.compress(big, mtime=0)
    records = _record_offset(GOOD_PCAP, 3)
    files = {
        "empty file": (b"", ".pcap"),
        "wrong magic": (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", ".pcap"),
        "three bytes": (GOOD_PCAP[:3], ".pcap"),
        "pcap header cut short": (GOOD_PCAP[:10], ".pcap"),
        "pcap header only": (GOOD_PCAP[:24], ".pcap"),
        "cut in a record header": (GOOD_PCAP[:records + 7], ".pcap"),
        "cut in a record": (GOOD_PCAP[:-20], ".pcap"),
        "garbled record length": (_garbled_caplen(GOOD_PCAP, 3), ".pcap"),
        "garbled record length in the busy capture": (_garbled_caplen(busy, 2000), ".pcap"),
        "big-endian magic on a little-endian file": (b"\xa1\xb2\xc3\xd4" + GOOD_PCAP[4:], ".pcap"),
        "random records": (GOOD_PCAP[:24] + _random_records(1, 300), ".pcap"),
        "random records, another seed": (GOOD_PCAP[:24] + _random_records(2, 300), ".pcap"),
        "pcapng cut in its section header": (GOOD_PCAPNG[:10], ".pcapng"),
        "pcapng cut in a block header": (GOOD_PCAPNG + b"\x06\0\0", ".pcapng"),
        "pcapng cut in a block": (GOOD_PCAPNG[:-30], ".pcapng"),
        "pcapng block length 0": (SHB + IDB + struct.pack("<II", 6, 0) + bytes(40), ".pcapng"),
        "pcapng block length 13": (SHB + IDB + struct.pack("<II", 6, 13) + bytes(40), ".pcapng"),
        "pcapng block length past the end": (SHB + IDB + struct.pack("<II", 6, 4096) + bytes(40), ".pcapng"),
        "pcapng block length 4 GB": (SHB + IDB + struct.pack("<II", 6, 0xFFFFFFFC) + bytes(40), ".pcapng"),
        "pcapng section length garbled": (_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1),
                                                        length=8) + IDB, ".pcapng"),
        "pcapng section with a bad byte-order magic": (struct.pack("<II", 0x0A0D0D0A, 28) + b"\x01\x02\x03\x04"
                                                       + bytes(16), ".pcapng"),
        "pcapng second section with a bad byte-order magic": (GOOD_PCAPNG + struct.pack("<II", 0x0A0D0D0A, 28)
                                                              + b"\x01\x02\x03\x04" + bytes(16), ".pcapng"),
        "pcapng packet before any interface block": (SHB + _epb(_frame_of(GOOD_PCAP, 0)) + IDB
                                                     + _epb(_frame_of(GOOD_PCAP, 1)), ".pcapng"),
        "pcapng packet naming interface 3 of 1": (SHB + IDB + _epb(_frame_of(GOOD_PCAP, 0), iface=3), ".pcapng"),
        "pcapng enhanced packet block too short": (SHB + IDB + _pcapng_block(6, bytes(8)), ".pcapng"),
        "pcapng obsolete packet block too short": (SHB + IDB + _pcapng_block(2, bytes(8)), ".pcapng"),
        "pcapng captured length past the block": (SHB + IDB + _epb(_frame_of(GOOD_PCAP, 0), caplen=5000), ".pcapng"),
        "pcapng simple packet block before any interface": (SHB + _pcapng_block(3, struct.pack("<I", 60) + bytes(60)),
                                                            ".pcapng"),
        "pcapng interface block too short": (SHB + struct.pack("<III", 1, 12, 12)
                                             + _epb(_frame_of(GOOD_PCAP, 0)), ".pcapng"),
        "pcapng simple packet block too short": (SHB + IDB + struct.pack("<III", 3, 12, 12), ".pcapng"),
        "pcapng garbage appended": (GOOD_PCAPNG + random.Random(3).randbytes(100), ".pcapng"),
        "gzip of garbage": (gzip.compress(b"hello, not a capture", mtime=0), ".pcap.gz"),
        "gzip header only": (b"\x1f\x8b\x08\x00garbage", ".pcap.gz"),
        "gzip cut short": (gzip.compress(GOOD_PCAP, mtime=0)[:-30], ".pcap.gz"),
        "gzip with a bad checksum": (gzip.compress(GOOD_PCAP, mtime=0)[:-8] + bytes(8), ".pcap.gz"),
        "gzip with a corrupt deflate stream": (_corrupt_deflate(busy), ".pcap.gz"),
        "gzip of a 1.8 MB capture, cut short": (big_gz[:len(big_gz) * 9 // 10], ".pcap.gz"),
    }
    for n in (1, 7, 16, 100, 3000):
        files[f"{n} garbage bytes appended"] = (GOOD_PCAP + random.Random(n).randbytes(n), ".pcap")
    return files


BAD_FILES = _bad_files()


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_input(tmp_path: Path, name: str) -> None:
    """A damaged file: the same exit status, standard output and standard error from both engines, every format,
    written to standard output (the engine's callback path) and to an -o file (its writer thread's path)."""
    content, suffix = BAD_FILES[name]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    formats = ("json",) if len(content) > 500_000 else FORMATS
    for fmt in formats:
        compare(tmp_path, [path], fmt, to_file=False)
        compare(tmp_path, [path], fmt, to_file=True)


def _large_records() -> bytes:
    """A 45 MB pcap of few records, sized to straddle and exceed the readers' blocks (1 MiB, 4 MiB), up to the
    largest record allowed (16 MiB), then one past it (garbled: the rest is skipped)."""
    sizes = [60, 3_000_000, 1_500_000, 4_194_304 - 40, 5_000_000, 1 << 24, 100, 4_194_304 + 3, 70, 1_048_576, 200]
    out = bytearray(GOOD_PCAP[:24])
    for i, size in enumerate(sizes):
        frame = _frame_of(GOOD_PCAP, i % 11)
        frame += bytes(max(0, size - len(frame)))
        out += struct.pack("<IIII", 1_700_000_000 + i, i, len(frame), len(frame)) + frame
    out += struct.pack("<IIII", 1_700_000_100, 0, (1 << 24) + 1, (1 << 24) + 1) + bytes(64)
    return bytes(out)


def test_large_records(tmp_path: Path) -> None:
    """Records larger than, and straddling, the readers' buffers: the same frames, the same damage at the end,
    also gzip-compressed (short reads from the gzip stream)."""
    plain = tmp_path / "large.pcap"
    plain.write_bytes(_large_records())
    packed = tmp_path / "large.pcap.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1, mtime=0))
    for path in (plain, packed):
        outcomes = compare(tmp_path, [path], "json")
        assert "11 frames" in outcomes["reference"].stderr and "garbled record header" in outcomes["reference"].stderr


def _many_connections(copies: int, closed_every: int) -> bytes:
    """`copies` of one real connection (handshake_fourway_client_close.pcap), each from its own client address
    and port, starting 1 ms apart: every `closed_every`-th runs to its close, the others stop after the
    handshake and are still open when the capture ends. Ethernet pcap, written here with struct."""
    template = sample_packets("handshake_fourway_client_close.pcap")
    client = template[0].data[12:16]
    records = []
    for i in range(copies):
        address = bytes((10, 78, i // 60000, 1))
        port = (1025 + i % 60000).to_bytes(2, "big")
        for p in template if i % closed_every == 0 else template[:3]:
            data = bytearray(p.data)
            at = (data[0] & 15) * 4
            side = 12 if data[12:16] == client else 16  # which of source and destination is the client
            data[side:side + 4] = address
            data[at + (0 if side == 12 else 2):at + (2 if side == 12 else 4)] = port
            records.append((p.ts_ns + i * 1_000_000, bytes(data)))
    records.sort(key=lambda r: r[0])
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for ts_ns, data in records:
        frame = bytes(12) + b"\x08\x00" + data
        out += struct.pack("<IIII", ts_ns // 1_000_000_000, ts_ns % 1_000_000_000 // 1000, len(frame), len(frame))
        out += frame
    return bytes(out)


def test_more_connections_at_the_end_than_the_writer_queue_holds(tmp_path: Path) -> None:
    """40,000 connections, 35,000 of them still open at the end of the capture (crafted from a real one): the
    tracker's thread hands them all over at once, finds the writer's queue (32,768) full, and formats units of
    them itself while the writer thread formats others. The output is the reference's, byte for byte, in the
    same order: records are written in the order connections finished, whichever thread formatted them."""
    path = tmp_path / "many.pcap"
    path.write_bytes(_many_connections(40_000, closed_every=8))
    outcomes = compare(tmp_path, [path], "json", ["--msl", "0.01"])
    records = (outcomes["reference"].output or b"").splitlines()
    assert len(records) == 40_000
    ids = [json.loads(line)["id"] for line in records]
    assert ids[-35_000:] == sorted(ids[-35_000:]), "the connections open at the end are written in order of id"
    with open(tmp_path / "again.json", "w") as out:
        counts = engine.run(path, out, "json", Timeouts(msl=0.01))
    assert counts["formatted_by_tracker"] > 0, "the tracker's thread never helped: the test missed its path"
    assert (tmp_path / "again.json").read_bytes() == outcomes["compiled"].output


def test_real_standard_output(tmp_path: Path) -> None:
    """`python -m analyzer` in a subprocess, standard output a pipe and then a file: the engine writes to the file
    descriptor from its own thread, between the command line's own writes (rules, headers, summaries)."""
    captures = [str(SAMPLES / "busy.pcap"), str(SAMPLES / "ipv6.pcap"), str(SAMPLES / "dumpcap_pcapng.pcapng")]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((SAMPLES / "busy.pcap").read_bytes()[:-100])
    runs = [(fmt, captures, False) for fmt in FORMATS] + [("table", captures, True), ("table", [str(cut)], True)]
    for fmt, paths, to_file in runs:
        seen: dict[str, Outcome] = {}
        for name in ("reference", "compiled"):
            argv = [sys.executable, "-m", "analyzer", "analyze", "--engine", name, "-f", fmt, *paths]
            target = tmp_path / f"stdout-{name}"
            with open(target, "wb") as sink:
                done = subprocess.run(argv, stdout=sink if to_file else subprocess.PIPE, stderr=subprocess.PIPE,
                                      cwd=ROOT, timeout=120)
            stdout = target.read_bytes() if to_file else done.stdout
            seen[name] = Outcome(done.returncode, stdout, done.stderr.decode(), None)
        assert_same(seen, fmt, f"{' '.join(paths)} with standard output a {'file' if to_file else 'pipe'}")


def test_unreadable_paths(tmp_path: Path) -> None:
    """A missing file, a directory, and a bad file between good ones: same status and outputs."""
    missing, bad = tmp_path / "nope.pcap", tmp_path / "bad.pcap"
    bad.write_text("nothing here")
    good = SAMPLES / "threeway_close.pcap"
    for captures in ([missing], [tmp_path], [good, bad, SAMPLES / "refused.pcap"]):
        for fmt in FORMATS:
            for to_file in (False, True):
                outcomes = compare(tmp_path, captures, fmt, to_file=to_file)
                assert outcomes["reference"].status == 2


# -- real traffic ---------------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_real_traffic_made_in_the_test(tmp_path: Path) -> None:
    """Kernel traffic made now (benchmarks/make_capture.py, 1,000 connections of every kind, IPv4 and IPv6, with
    VLAN and pcapng copies): both engines' JSON is byte-identical, with default and with short timers."""
    reason = namespaces_unavailable("tcpdump", "nft", "ethtool", "editcap", "capinfos")
    if reason:
        pytest.skip(f"real traffic: {reason}")
    made = subprocess.run([sys.executable, str(MAKE_CAPTURE), "--connections", "1000", "--out", str(tmp_path),
                           "--ipv6", "--vlan", "--pcapng", "--max-seconds", "10"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, f"make_capture.py failed:\n{made.stderr[-3000:]}"
    short = ["--msl", "0.2", "--idle-timeout", "1", "--handshake-timeout", "0.5"]
    for name in ("bench.pcap", "bench-ipv6.pcap", "bench-vlan.pcap", "bench.pcapng"):
        for options in ([], short) if name in ("bench.pcap", "bench-ipv6.pcap") else ([],):
            outcomes = compare(tmp_path, [tmp_path / name], "json", options)
            assert (outcomes["reference"].output or b"").count(b"\n") >= 900, f"{name}: too few connections"


# -- the big capture --------------------------------------------------------------------------------------------


@pytest.mark.big
def test_big_capture(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The benchmark capture (issue 6): both engines' JSON, byte for byte.

    Slow (the reference takes about two minutes on the 2.9-million-packet capture), so it runs only when asked:
    `pytest -m big tests/test_engine.py` (the capture at /tmp/synfin-bench/bench.pcap), or with the environment
    variable SYNFIN_BIG_CAPTURE naming a capture (`SYNFIN_BIG_CAPTURE=/tmp/synfin-bench/bench-x0.25.pcap pytest
    tests/test_engine.py -k test_big_capture`). Make the capture with `sudo python benchmarks/make_capture.py`
    (add --scale for the smaller copies).
    """
    named = os.environ.get("SYNFIN_BIG_CAPTURE")
    if not named and "big" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the big capture runs only with `-m big` or SYNFIN_BIG_CAPTURE=<capture>")
    capture = Path(named) if named else BIG_DEFAULT
    if not capture.is_file():
        pytest.skip(f"{capture} does not exist: make it with `sudo python benchmarks/make_capture.py` "
                    f"(or name another capture in SYNFIN_BIG_CAPTURE)")
    outputs, summaries = {}, {}
    for name in ("reference", "compiled"):
        outputs[name] = tmp_path / f"{name}.json"
        outcome = run_cli(["analyze", "--engine", name, "-f", "json", str(capture)], outputs[name])
        assert outcome.status == 0, f"{name}: {outcome.stderr}"
        summaries[name] = outcome.stderr
    found = first_file_difference(outputs["reference"], outputs["compiled"])
    assert found is None, f"the engines differ on {capture}:\n{found}"
    assert summaries["reference"] == summaries["compiled"], f"the summaries differ on {capture}"


# -- one table of TCP rules -------------------------------------------------------------------------------------


def _step_index(passive: bool, state: State, event: Event) -> int:
    return (int(passive) * len(State) + list(State).index(state)) * len(Event) + list(Event).index(event)


def test_machine_tables_are_fsm_transitions() -> None:
    """engine.machine_tables() is fsm.TRANSITIONS entry by entry (with note 1: LISTEN only after a passive open),
    and fsm's send and receive events and SYNCHRONIZED, for every input."""
    steps, sends, receives, synchronized = engine.machine_tables()
    states, events = list(State), list(Event)
    assert len(steps) == 2 * len(states) * len(events)
    for passive in (False, True):
        for state in states:
            for event in events:
                want = TRANSITIONS.get((state, event))
                if want is State.LISTEN and not passive:
                    want = State.CLOSED
                got = steps[_step_index(passive, state, event)]
                assert (None if got == 255 else states[got]) == want, (passive, state, event)
    for bits in range(16):
        entry = sends[4 * bits:4 * bits + 4]
        want = send_events(bool(bits & 1), bool(bits & 2), bool(bits & 4), bool(bits & 8))
        assert tuple(events[i] for i in entry[1:1 + entry[0]]) == want
    for bits in range(32):
        entry = receives[4 * bits:4 * bits + 4]
        want = receive_events(*(bool(bits & (1 << k)) for k in range(5)))
        assert tuple(events[i] for i in entry[1:1 + entry[0]]) == want
    assert {s for i, s in enumerate(states) if synchronized >> i & 1} == SYNCHRONIZED


def _configure_engine() -> None:
    """Hand the engine fsm.py's tables as they are now."""
    engine.configure()


def _compiled_json(capture: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    engine.run(capture, out, "json", Timeouts())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_changed_table_changes_the_engine() -> None:
    """The engine reads the table it is given: FIN_WAIT_2 + rcv FIN -> CLOSING instead of TIME_WAIT in the
    tables handed to engine.configure() turns the active closer's last state into CLOSING; the real tables
    bring TIME_WAIT back."""

    capture = SAMPLES / "handshake_fourway_client_close.pcap"
    _configure_engine()
    before = _compiled_json(capture)
    steps, sends, receives, synchronized = engine.machine_tables()
    changed = bytearray(steps)
    for passive in (False, True):
        changed[_step_index(passive, State.FIN_WAIT_2, Event.RCV_FIN)] = list(State).index(State.CLOSING)
    try:
        engine.configure((bytes(changed), sends, receives, synchronized))
        during = _compiled_json(capture)
    finally:
        _configure_engine()
    after = _compiled_json(capture)
    assert before == after
    assert [s for s, _, _ in before[0]["states"]["client"]][-2:] == ["FIN_WAIT_2", "TIME_WAIT"]
    assert before[0]["final"]["client"] == "TIME_WAIT"
    want = json.loads(json.dumps(before))
    want[0]["states"]["client"][-1][0] = "CLOSING"
    want[0]["final"]["client"] = "CLOSING"
    times = want[0]["state_time"]["client"]  # the same seconds, under the state's new name
    times["CLOSING"] = times.pop("TIME_WAIT")
    assert during == want


def test_a_change_to_fsm_changes_both_engines_alike(tmp_path: Path) -> None:
    """One set of TCP rules: the same change made in fsm.TRANSITIONS (FIN_WAIT_2 + rcv FIN -> CLOSING) changes
    the reference and, once configured from fsm.py again, the engine, identically, on every sample."""
    key = (State.FIN_WAIT_2, Event.RCV_FIN)
    original = TRANSITIONS[key]
    normal = compare(tmp_path, CAPTURES, "json")["compiled"].output or b""
    try:
        fsm.TRANSITIONS[key] = State.CLOSING
        _configure_engine()
        changed = compare(tmp_path, CAPTURES, "json")["compiled"].output or b""
    finally:
        fsm.TRANSITIONS[key] = original
        _configure_engine()
    assert changed != normal and b'"final": {"client": "CLOSING"' in changed
    assert b'"final": {"client": "CLOSING"' not in normal
    assert compare(tmp_path, CAPTURES, "json")["compiled"].output == normal

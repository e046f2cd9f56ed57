"""Hostile captures against the compiled engine: issue 11, findings 1, 3, 4 and 6.

A capture is untrusted input parsed by C. Each test here stands for one thing a
fuzz run or a reading of the code found, and fails on the code before the fix:

1. `fast_repr` (output.c) read `POW10[20]`, past its table, for timestamps in
   [1e-4, 1.2207e-4). A normal build happened to print the right digits, so
   those tests fail only under AddressSanitizer (`make sanitize`, or the
   engine built with `-fsanitize=address,undefined` and run with libasan
   preloaded); they also hold the digits to repr() in both engines.
3. A memory bomb: millions of too-short pcapng blocks kept a damage entry each,
   in both engines (1.36 GB for a 116 KB .pcapng.gz). Now the first few are
   kept and the rest counted.
4. A CPU bomb: 65,000 interfaces of distinct unsupported link types made every
   skipped frame a linear scan of the skip reasons (minutes for 300 k frames);
   the engine also kept only 32 link types, so its summary differed from the
   reference's past that. Now both are counted in hash tables, and the summary
   names the most frequent few and counts the rest, the same in both engines.
6. Safe by construction: `readinto` may not claim more bytes than it was
   given (nor fewer than none); configure() raises on a link type that is not
   one, and keeps more than 64 names.

The bombs are built here with struct and gzip (no scapy), run in a subprocess,
and bounded by its peak RSS; the subprocess timeout is a hang guard, not a
speed assertion (the figures are in the report of the change, not asserted).
Crafted packets and files are named as crafted.
"""

from __future__ import annotations

import gzip
import io
import math
import random
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from analyzer import decode, engine
from analyzer.capture import CaptureDamage
from analyzer.connection import Timeouts
from analyzer.pipeline import NAMED_PROBLEMS, Stats
from analyzer.report import NAMED_COUNTS, Census, write_summary
from analyzer.styled import Styled
from tests.crafting import pcapng_with_ticks, sample_packets
from tests.engine_compare import difference, run_engines

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("json", "csv", "table")
HANG_GUARD = 60  # seconds: far beyond what the fixed code needs (well under a second), well short of the old

compiled = pytest.mark.skipif(not engine.available(),
                              reason="the compiled engine is not built (python setup.py build_ext --inplace)")


# -- crafted pcapng, by hand ------------------------------------------------------------------------------------------


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = 12 + len(body)
    return struct.pack("<II", block_type, size) + body + struct.pack("<I", size)


CRAFTED_SHB = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
CRAFTED_ETHERNET_IDB = _block(1, struct.pack("<HHI", 1, 0, 0))
CRAFTED_SHORT_EPB = _block(6, b"")  # an enhanced packet block with no room for its 20-byte header


def crafted_short_blocks(count: int) -> bytes:
    """A crafted pcapng of `count` enhanced packet blocks too short to hold a packet: `count` damaged spots."""
    return CRAFTED_SHB + CRAFTED_ETHERNET_IDB + CRAFTED_SHORT_EPB * count


def crafted_many_link_types(links: int, frames: int, first: int = 300) -> bytes:
    """A crafted pcapng with `links` interfaces of distinct link types (unsupported, from `first` on), and
    `frames` empty packets going round them."""
    idbs = b"".join(_block(1, struct.pack("<HHI", first + i, 0, 0)) for i in range(links))
    epb = struct.Struct("<IIIIIIII")  # block type, length, interface, time high, time low, caplen, wire, length
    epbs = b"".join(epb.pack(6, 32, i % links, 0, i, 0, 0, 32) for i in range(frames))
    return CRAFTED_SHB + idbs + epbs


def peak_rss_kb(args: list[str]) -> tuple[int, str]:
    """Run `synfin ARGS` in a fresh Python; its peak RSS in KB and its standard error (hang guard: HANG_GUARD)."""
    script = textwrap.dedent(f"""
        import contextlib, io, resource, sys
        from analyzer.cli import main
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main({args!r})
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, status)
        sys.stdout.write(err.getvalue())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    first, _, rest = done.stdout.partition("\n")
    peak, status = first.split()
    assert status == "0", rest
    return int(peak), rest


def assert_same_in_both_engines(tmp_path: Path, capture: Path, what: str) -> None:
    for fmt in FORMATS:
        outcomes = run_engines([capture], fmt, [], tmp_path)
        found = difference(outcomes["reference"], outcomes["compiled"], fmt)
        assert found is None, f"the engines differ on {what} (-f {fmt}):\n{found}"


# -- 1. timestamps in [1e-4, 1.2207e-4): fast_repr's table ---------------------------------------------------------


def _near_the_edge() -> list[float]:
    """Doubles in [1e-4, 1.2207e-4) and around it (17 significant digits there), and their negative twins."""
    rng = random.Random(11)
    low, high = 1e-4, 1.2207e-4
    values = [rng.uniform(low, high) for _ in range(100_000)]
    values += [round(rng.uniform(low, high), rng.randint(4, 12)) for _ in range(20_000)]  # short ones too
    values += [k * 1e-6 for k in range(95, 125)] + [k * 1e-9 for k in range(99_000, 123_000, 7)]
    for edge in (low, high, 2.0**-13):  # 2**-13 = 1.2207...e-4: the exponent changes there
        x = y = edge
        for _ in range(2000):
            x, y = math.nextafter(x, math.inf), math.nextafter(y, -math.inf)
            values += [x, y]
    return values + [-x for x in values]


@compiled
def test_float_repr_is_python_repr_near_1e_minus_4() -> None:
    """Every double in and around [1e-4, 1.2207e-4), and its negative twin, prints as repr() prints it.

    On the old code the digits were right by luck: the out-of-bounds read of POW10[20] shows only in a build
    with AddressSanitizer (global-buffer-overflow in fast_repr), where this test fails."""
    from analyzer import _engine

    wrong = [(x, _engine.float_repr(x), repr(x)) for x in _near_the_edge() if _engine.float_repr(x) != repr(x)]
    assert not wrong, f"{len(wrong)} values print differently, e.g. (value, engine, repr): {wrong[:10]}"
    wrong = [(x, _engine.round9_repr(x), repr(round(x, 9))) for x in _near_the_edge()[:20_000]
             if _engine.round9_repr(x) != repr(round(x, 9))]
    assert not wrong, f"{len(wrong)} values print differently, e.g. (value, engine, repr(round)): {wrong[:10]}"
    wrong = [(x, _engine.round6_repr(x), repr(round(x, 6))) for x in _near_the_edge()
             if _engine.round6_repr(x) != repr(round(x, 6))]  # the timing figures switch notation at 1e-4
    assert not wrong, f"{len(wrong)} values print differently, e.g. (value, engine, repr(round)): {wrong[:10]}"


@compiled
@pytest.mark.parametrize(("resolution", "ticks"), [
    (6, [100, 105, 108, 110, 113, 117, 120, 121, 122, 122]),  # microseconds: 0.000105 s, as in the issue
    (9, [100_001, 104_999, 105_000, 109_123, 111_111, 115_000, 119_999, 121_000, 122_069, 122_070]),
])
def test_a_capture_timed_just_after_1e_minus_4_seconds(tmp_path: Path, resolution: int, ticks: list[int]) -> None:
    """A crafted capture whose packets are all timed in [1e-4, 1.2207e-4) s: the same bytes from both engines.

    The old engine printed these right only by luck (see above): the failure shows under AddressSanitizer."""
    packets = list(sample_packets("handshake_fourway_client_close.pcap"))
    path = tmp_path / f"crafted-near-1e-4-{resolution}.pcapng"
    path.write_bytes(pcapng_with_ticks(packets, resolution, ticks))
    assert_same_in_both_engines(tmp_path, path, path.name)


# -- 3. the memory bomb: millions of damaged spots --------------------------------------------------------------------


def test_stats_keep_the_first_damaged_spots_and_count_the_rest() -> None:
    """The reference's Stats: 10,000 damaged spots are all counted, and only the first few are kept."""
    stats = Stats()
    for number in range(1, 10_001):
        stats.note_damage(CaptureDamage(number, "enhanced packet block too short"))
    assert stats.damaged == 10_000
    assert stats.bad_frames == 10_000
    assert [d.frame for d in stats.damage] == list(range(1, NAMED_PROBLEMS + 1))
    assert [frame for frame, _ in stats.problem_frames] == list(range(1, NAMED_PROBLEMS + 1))


@compiled
def test_the_engine_keeps_the_first_damaged_spots_and_counts_the_rest(tmp_path: Path) -> None:
    """The compiled engine's counts: the first few damaged spots, by frame and what, and how many in all."""
    path = tmp_path / "crafted-short-blocks.pcapng"
    path.write_bytes(crafted_short_blocks(1000))
    counts = engine.run(path, io.StringIO(), "json", Timeouts())
    assert counts["damaged"] == 1000
    assert counts["damage"] == [(n, "enhanced packet block too short") for n in range(1, NAMED_PROBLEMS + 1)]
    stats = Stats()
    engine.stats_from(counts, stats)
    assert (stats.damaged, stats.bad_frames, len(stats.damage)) == (1000, 1000, NAMED_PROBLEMS)


@compiled
@pytest.mark.parametrize("compress", [False, True])
def test_many_damaged_spots_read_the_same_in_both_engines(tmp_path: Path, compress: bool) -> None:
    """A crafted capture with 3,000 damaged spots between good packets: summary, JSON, CSV and table identical."""
    packets = list(sample_packets("handshake_fourway_client_close.pcap"))
    good = pcapng_with_ticks(packets, 6, [1_700_000_000_000_000 + 1000 * i for i in range(len(packets))])
    data = good + CRAFTED_SHORT_EPB * 3000 + good[len(CRAFTED_SHB):]
    path = tmp_path / ("crafted-damaged.pcapng.gz" if compress else "crafted-damaged.pcapng")
    path.write_bytes(gzip.compress(data) if compress else data)
    assert_same_in_both_engines(tmp_path, path, path.name)


@pytest.mark.parametrize("which", ["compiled", "reference"])
def test_a_gzip_of_a_million_short_blocks_stays_small(tmp_path: Path, which: str) -> None:
    """The memory bomb of the issue, scaled down: a 35 KB crafted .pcapng.gz of 1.5 M too-short blocks.

    Before the fix each block cost a damage entry (the compiled engine ~280 B, the reference ~90 B): 400 MB and
    130 MB more than a tiny capture. Now the peak is that of a tiny capture, give or take the reading buffers."""
    if which == "compiled" and not engine.available():
        pytest.skip("the compiled engine is not built")
    bomb, tiny = tmp_path / "crafted-bomb.pcapng.gz", tmp_path / "crafted-tiny.pcapng.gz"
    bomb.write_bytes(gzip.compress(crafted_short_blocks(1_500_000)))
    tiny.write_bytes(gzip.compress(crafted_short_blocks(10)))
    base, _ = peak_rss_kb(["analyze", "--engine", which, "-f", "json", "-o", str(tmp_path / "tiny.json"), str(tiny)])
    peak, err = peak_rss_kb(["analyze", "--engine", which, "-f", "json", "-o", str(tmp_path / "bomb.json"), str(bomb)])
    assert "bad frames: 1500000 (first: frame 1: enhanced packet block too short;" in err
    assert peak - base < 48 * 1024, f"peak RSS {peak} KB for the bomb, {base} KB for a tiny capture"


# -- 4. the CPU bomb: tens of thousands of link types -----------------------------------------------------------------


@compiled
def test_65000_link_types_take_no_quadratic_time(tmp_path: Path) -> None:
    """The CPU bomb of the issue: 65,000 crafted interfaces of distinct unsupported link types, 600 k frames.

    The old engine scanned every skip reason per frame (over a minute here); the fixed one takes well under a
    second. The subprocess timeout is only a hang guard. The summary stays a few lines long."""
    path = tmp_path / "crafted-link-types.pcapng"
    path.write_bytes(crafted_many_link_types(65_000, 600_000))
    _, err = peak_rss_kb(["analyze", "--engine", "compiled", "-f", "json", "-o", str(tmp_path / "out.json"),
                          str(path)])
    assert "600000 frames, 0 TCP segments" in err
    assert f"and {65_000 - NAMED_COUNTS} more link types in " in err
    assert f"for {65_000 - NAMED_COUNTS} more reasons" in err
    assert len(err) < 3000, err[:3000]


@compiled
@pytest.mark.parametrize("links", [40, 2000])
def test_many_link_types_read_the_same_in_both_engines(tmp_path: Path, links: int) -> None:
    """More link types than the old engine's 32 (it dropped the rest from the summary), and many more."""
    path = tmp_path / f"crafted-{links}-link-types.pcapng"
    path.write_bytes(crafted_many_link_types(links, 3 * links + 7, first=103))  # 105: IEEE802_11, named
    assert_same_in_both_engines(tmp_path, path, path.name)


def test_the_summary_names_the_most_frequent_few_and_counts_the_rest() -> None:
    """Skip reasons and link types past NAMED_COUNTS: the most frequent named (in the usual order), the rest counted."""
    stats = Stats(frames=5050, skipped=Counter({f"unsupported link type linktype {n}": n for n in range(1, 101)}),
                  linktypes=Counter({n: n for n in range(1, 101)}))
    out = io.StringIO()
    write_summary("crafted.pcap", stats, Census(), Styled(out))
    text = out.getvalue()
    named = range(101 - NAMED_COUNTS, 101)
    shown = sum(named)
    assert ", ".join(f"linktype {n} {n}" for n in named) + f", and {100 - NAMED_COUNTS} more link types in " \
        f"{5050 - shown} frames)" in text
    assert "skipped: " + ", ".join(f"{n} unsupported link type linktype {n}" for n in sorted(named, key=str)) \
        + f", and {5050 - shown} frames for {100 - NAMED_COUNTS} more reasons\n" in text
    assert "linktype 1 1" not in text and "1 unsupported link type linktype 1," not in text


# -- 6. safe by construction ------------------------------------------------------------------------------------------

_LYING_READER = """
import sys
from analyzer import _engine, engine
engine.configure()
header = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
lie = int(sys.argv[1])

def readinto(view):
    global header
    if not header:
        return 0
    view[:len(header)] = header
    header = b""
    return len(view) + lie if lie > 0 else lie

try:
    _engine.run(readinto, -1, None, lambda chunk: None, -1, 0, (30.0, 900.0, 40.0, 1.0), None, False)
except ValueError as err:
    print("ValueError:", err)
"""


@compiled
@pytest.mark.parametrize("lie", [8 << 20, 1, -5])
def test_a_readinto_that_claims_too_much_or_too_little_is_an_error(lie: int) -> None:
    """`readinto` returning more than the buffer it was given (the old reader then read, and later wrote, past
    it: a crash or a heap overflow, hence the subprocess) or a negative count is a ValueError, not trusted."""
    done = subprocess.run([sys.executable, "-c", _LYING_READER, str(lie)], capture_output=True, text=True,
                          timeout=HANG_GUARD, cwd=ROOT, check=False)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    assert "ValueError: readinto() returned" in done.stdout, done.stdout + done.stderr


@compiled
@pytest.mark.parametrize(("names", "message"), [
    ({-1: "NEGATIVE"}, "is not a link type"),
    ({2**32: "TOO_BIG"}, "is not a link type"),  # the old engine named link type 0 with it
    ({"1": "TEXT"}, "is not a link type"),
    ({1: "X" * 65}, "longer than 64 bytes"),
])
def test_configure_rejects_what_is_not_a_link_type_name(names: dict[object, str], message: str) -> None:
    """A bad link-type table is a ValueError from configure() (the old engine ignored the conversion error and
    returned with an exception set: SystemError), and the engine refuses to run until configured again."""
    from analyzer import _engine

    try:
        with pytest.raises(ValueError, match=message):
            _engine.configure(*engine.machine_tables(), [str(s) for s in engine.STATES],
                              [str(e) for e in engine.EVENTS], names, engine._mapped_dotted())
        with pytest.raises(RuntimeError, match="not configured"):
            _engine.run(io.BytesIO().readinto, -1, None, lambda chunk: None, -1, 0, (30.0, 900.0, 40.0, 1.0), None,
                        False)
    finally:
        engine.configure()


@compiled
def test_more_than_64_link_type_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """decode.LINKTYPE_NAMES with 200 more names: the engine knows them all (it kept 64 and dropped the rest
    without a word), so both engines name a crafted capture's link types alike."""
    names = dict(decode.LINKTYPE_NAMES) | {1000 + n: f"CRAFTED_{n}" for n in range(200)}
    monkeypatch.setattr(decode, "LINKTYPE_NAMES", names)
    monkeypatch.setattr(engine, "LINKTYPE_NAMES", names)
    try:
        engine.configure()
        path = tmp_path / "crafted-named-link-types.pcapng"
        path.write_bytes(crafted_many_link_types(20, 40, first=1180))  # the last 20 of the 200
        counts = engine.run(path, io.StringIO(), "json", Timeouts())
        assert counts["skipped"]["unsupported link type CRAFTED_199"] == 2
        assert_same_in_both_engines(tmp_path, path, path.name)
    finally:
        monkeypatch.undo()
        engine.configure()


@compiled
def test_configure_is_refused_while_a_capture_is_being_analyzed() -> None:
    """configure() replaces the link-type table that the engine's reading thread reads: not during a run (here,
    from the run's own output callback; another Python thread could do the same while a callback runs)."""
    from analyzer import _engine

    def write(chunk: bytes) -> None:
        engine.configure()

    stream = (ROOT / "samples" / "handshake_fourway_client_close.pcap").open("rb")
    try:
        with pytest.raises(RuntimeError, match="while the engine is analyzing"):
            _engine.run(stream.readinto, -1, None, write, -1, 0, (30.0, 900.0, 40.0, 1.0), None, False)
    finally:
        stream.close()
        engine.configure()

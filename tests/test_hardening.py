"""Hostile captures against the compiled engine: issue 11, findings 1 and 6.

A capture is untrusted input parsed by C. Each test here stands for one thing a
fuzz run or a reading of the code found, and fails on the code before the fix:

1. `fast_repr` (output.c) read `POW10[20]`, past its table, for timestamps in
   [1e-4, 1.2207e-4). A normal build happened to print the right digits, so
   those tests fail only under AddressSanitizer (`make sanitize`, or the
   engine built with `-fsanitize=address,undefined` and run with libasan
   preloaded); they also hold the digits to repr() in both engines.
6. Safe by construction: `readinto` may not claim more bytes than it was
   given (nor fewer than none); configure() raises on a link type that is not
   one, and keeps more than 64 names.

Crafted packets and files are named as crafted.
"""

from __future__ import annotations

import io
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer import decode, engine
from analyzer.connection import Timeouts
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


def crafted_many_link_types(links: int, frames: int, first: int = 300) -> bytes:
    """A crafted pcapng with `links` interfaces of distinct link types (unsupported, from `first` on), and
    `frames` empty packets going round them."""
    idbs = b"".join(_block(1, struct.pack("<HHI", first + i, 0, 0)) for i in range(links))
    epb = struct.Struct("<IIIIIIII")  # block type, length, interface, time high, time low, caplen, wire, length
    epbs = b"".join(epb.pack(6, 32, i % links, 0, i, 0, 0, 32) for i in range(frames))
    return CRAFTED_SHB + idbs + epbs


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

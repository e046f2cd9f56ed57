"""The fuzz harness itself (tests/fuzz/): its mutations, its coverage map, and a short run of it.

* Each field-aware mutation edits the field it names and keeps the rest of
  the file readable: a mutant of a link, IP or TCP header (or a frame cut
  short, or an option put into an interface block) is still read by
  analyzer/capture.py frame for frame, without damage; a mutant of a pcap
  or pcapng header changes bytes of that header only.
* `replace_frame` fixes the record's or block's lengths when a frame grows
  or shrinks.
* The coverage map (only in the fuzz build: `make sanitize` runs this file
  on it; skipped on the normal build) is filled by the engine and differs
  between different captures.
* A short run from a fixed seed (a few hundred executions) finds no
  difference between the engines and no traceback; an engine made to differ
  by one byte is caught.
* The supervisor keeps the input of a worker that crashed or hung.

The captures mutated here are samples/ and crafted captures (tests/crafting.py).
"""

from __future__ import annotations

import gzip
import os
import random
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from analyzer import engine
from analyzer.capture import CaptureDamage, RawFrame, read_frames
from tests.engine_compare import run_cli
from tests.fuzz import __main__ as supervisor
from tests.fuzz import mutate as m
from tests.fuzz.harness import Coverage, Fuzzer, Input, seeds
from tests.fuzz.layout import layout, network_offset, transport_offset

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ETHERNET_PCAP = (SAMPLES / "handshake_fourway_client_close.pcap").read_bytes()
PCAPNG = (SAMPLES / "handshake_fourway_client_close.pcapng").read_bytes()
IPV6_PCAP = (SAMPLES / "ipv6.pcap").read_bytes()
COOKED_PCAP = (SAMPLES / "any_interface.pcap").read_bytes()
TRIES = 40


def frames_of(data: bytes, tmp_path: Path) -> tuple[list[RawFrame], list[CaptureDamage]]:
    path = tmp_path / "capture.pcap"
    path.write_bytes(data)
    items = list(read_frames(path))
    return [i for i in items if isinstance(i, RawFrame)], [i for i in items if isinstance(i, CaptureDamage)]


def mutants(fn: Callable, data: bytes, tries: int = TRIES) -> list[bytes]:
    rng = random.Random(fn.__name__)
    lay = layout(data)
    found = [fn(rng, data, lay, [ETHERNET_PCAP]) for _ in range(tries)]
    return [f for f in found if f is not None]


# -- the map of fields ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["handshake_fourway_client_close.pcap", "handshake_fourway_client_close.pcapng",
                                  "ipv6.pcap", "any_interface.pcap", "dumpcap_pcapng.pcapng"])
def test_layout_finds_every_frame_and_its_tcp_header(name: str) -> None:
    """layout() finds the same frames as the analyzer's reader, and in each the IP and TCP headers."""
    data = (SAMPLES / name).read_bytes()
    lay = layout(data)
    expected = [f for f in read_frames(SAMPLES / name) if isinstance(f, RawFrame)]
    assert len(lay.frames) == len(expected)
    for frame, raw in zip(lay.frames, expected, strict=True):
        got = data[frame.data_at:frame.data_at + frame.caplen]
        assert got == raw.data and frame.linktype == raw.linktype
        ip = network_offset(frame.linktype, got)
        assert ip is not None and transport_offset(got, ip[0]) is not None


# -- field-aware mutations keep the file readable -------------------------------------------------------------------

STRUCTURE_KEEPING = [
    (m._ethertype, ETHERNET_PCAP), (m._vlan, ETHERNET_PCAP), (m._vlan, PCAPNG), (m._cooked_or_loopback, COOKED_PCAP),
    (m._ipv4, ETHERNET_PCAP), (m._ipv4, PCAPNG), (m._ipv6, IPV6_PCAP), (m._tcp_field, ETHERNET_PCAP),
    (m._tcp_field, IPV6_PCAP), (m._tcp_option_area, ETHERNET_PCAP), (m._tcp_option_area, PCAPNG),
    (m._tcp_option_area, IPV6_PCAP), (m._frame_cut, ETHERNET_PCAP), (m._frame_cut, PCAPNG), (m._idb, PCAPNG),
]


@pytest.mark.parametrize(("fn", "data"), STRUCTURE_KEEPING,
                         ids=[f"{fn.__name__.lstrip('_')}-{i}" for i, (fn, _) in enumerate(STRUCTURE_KEEPING)])
def test_header_mutations_keep_every_frame(tmp_path: Path, fn: Callable, data: bytes) -> None:
    """A mutant of a link/IP/TCP header or of a frame's length: different bytes, yet the same number of frames,
    read without damage (the record and block lengths were fixed). Most mutants change a frame."""
    want, _ = frames_of(data, tmp_path)
    made = mutants(fn, data)
    assert len(made) >= TRIES // 2, f"{fn.__name__} found its field in fewer than half the tries"
    changed_frames = 0
    assert sum(mutant == data for mutant in made) <= len(made) // 4, "most mutants are new bytes"
    for mutant in made:
        got, damage = frames_of(mutant, tmp_path)
        assert not damage and len(got) == len(want), f"{fn.__name__}: {damage[:1]}"
        changed_frames += any(a.data != b.data for a, b in zip(want, got, strict=True))
    assert changed_frames >= len(made) // 2 or fn is m._idb


def test_tcp_option_mutations_make_every_option_kind() -> None:
    """The TCP option areas the mutator writes hold MSS, window scale, SACK-permitted, SACK and timestamps, with
    right and wrong lengths, and fit the 40 bytes of a TCP header."""
    rng = random.Random(5)
    kinds: dict[int, set[int]] = {}
    for _ in range(400):
        area = m._tcp_options(rng)
        assert len(area) <= 40
        if len(area) >= 2:
            kinds.setdefault(area[0], set()).add(area[1])
    right = {2: 4, 3: 3, 4: 2, 8: 10}
    for kind, length in right.items():
        assert length in kinds[kind] and len(kinds[kind]) > 1, f"option {kind}: lengths {kinds.get(kind)}"
    assert {2 + 8 * n for n in range(5)} & kinds[5]


def test_pcap_header_mutations_touch_the_header_only() -> None:
    """Global header mutations change bytes 0-23 only; record mutations change a record header (16 bytes)."""
    starts = {f.header_at for f in layout(ETHERNET_PCAP).frames}
    for fn in (m._pcap_magic, m._pcap_global, m._pcap_record):
        made = mutants(fn, ETHERNET_PCAP)
        assert len(made) == TRIES
        for mutant in made:
            assert len(mutant) == len(ETHERNET_PCAP)
            where = [i for i, (a, b) in enumerate(zip(mutant, ETHERNET_PCAP, strict=True)) if a != b]
            if fn is m._pcap_record:
                assert all(any(s <= i < s + 16 for s in starts) for i in where)
            else:
                assert all(i < 24 for i in where)
        assert sum(mutant != ETHERNET_PCAP for mutant in made) > TRIES // 2


def test_pcapng_block_mutations_touch_block_headers() -> None:
    """Block type, length, section header and packet block field mutations change those fields' bytes."""
    lay = layout(PCAPNG)
    heads = {b[0] for b in lay.blocks}
    ends = {b[0] + b[2] - 4 for b in lay.blocks}
    for fn, allowed in ((m._pcapng_block_type, lambda i: any(h <= i < h + 4 for h in heads)),
                        (m._pcapng_block_length, lambda i: any(h + 4 <= i < h + 8 for h in heads)
                         or any(e <= i < e + 4 for e in ends)),
                        (m._pcapng_shb, lambda i: 8 <= i < 24),
                        (m._packet_block, lambda i: any(h + 8 <= i < h + 28 for h in heads))):
        made = mutants(fn, PCAPNG)
        assert len(made) == TRIES
        for mutant in made:
            where = [i for i, (a, b) in enumerate(zip(mutant, PCAPNG, strict=True)) if a != b]
            assert all(allowed(i) for i in where), fn.__name__
        assert sum(mutant != PCAPNG for mutant in made) > TRIES // 2, fn.__name__


def test_idb_options_are_resolution_and_offset() -> None:
    """An interface block mutation is often an if_tsresol (9) or if_tsoffset (14) option, which the reader takes."""
    codes = set()
    for mutant in mutants(m._idb, PCAPNG, 100):
        at = layout(mutant).interfaces[0]
        length = struct.unpack_from("<I", mutant, at + 4)[0]
        if length > 20:
            codes.add(struct.unpack_from("<H", mutant, at + 16)[0])
    assert {9, 14} <= codes


def test_gzip_mutations(tmp_path: Path) -> None:
    """A gzip-compressed capture is mutated inside (and stays gzip), unwrapped, or damaged as compressed bytes."""
    packed = gzip.compress(ETHERNET_PCAP, mtime=0)
    rng = random.Random(3)
    names, inside, same = set(), 0, 0
    for _ in range(200):
        mutant, name = m._mutate_once(rng, packed, [])
        names.add(name.split(":")[0])
        if name.startswith("gzip-damage"):
            assert mutant != packed
        elif name == "gzip-unwrap":
            assert mutant == ETHERNET_PCAP
        else:
            assert mutant[:2] == m.GZIP_MAGIC
            inside += 1
            same += gzip.decompress(mutant) == ETHERNET_PCAP  # an edit that set a field to the value it had
    assert {"gzip-damage", "gzip-unwrap", "tcp", "ip", "link"} <= names
    assert inside > 100 and same < inside // 5


def test_generic_mutations_always_apply() -> None:
    """Byte flips, sets, insertions, deletions, duplications, splices and cuts: a different file each time."""
    for fn in (m._flip, m._set_bytes, m._insert, m._delete, m._duplicate, m._splice, m._truncate):
        made = mutants(fn, ETHERNET_PCAP)
        assert len(made) == TRIES and sum(x != ETHERNET_PCAP for x in made) >= TRIES - 2, fn.__name__


def test_mutate_is_deterministic_and_never_raises() -> None:
    """The same seed makes the same mutants; thousands of stacked mutations of every seed kind raise nothing."""
    pool = [ETHERNET_PCAP, PCAPNG, IPV6_PCAP, COOKED_PCAP, gzip.compress(PCAPNG, mtime=0), b"", b"\xd4\xc3\xb2\xa1"]
    runs = []
    for _ in range(2):
        rng = random.Random(42)
        out = []
        for i in range(1500):
            mutant, _ = m.mutate(rng, pool[i % len(pool)], pool)
            out.append(mutant)
        runs.append(out)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("linktype", [1, 113, 276, 0, 101])
def test_replace_frame_fixes_lengths(tmp_path: Path, linktype: int) -> None:
    """A frame replaced by a longer and by a shorter one: the reader sees exactly the new frames, no damage,
    in pcap and in pcapng (block length and padding), and the wire length moves with the captured one."""
    pcap = bytearray(ETHERNET_PCAP)
    struct.pack_into("<I", pcap, 20, linktype)
    for data in (bytes(pcap), PCAPNG):
        lay = layout(data)
        frame = lay.frames[2]
        old = data[frame.data_at:frame.data_at + frame.caplen]
        for new in (old + b"\x01\x02\x03", old[:-5]):
            got, damage = frames_of(m.replace_frame(data, frame, new), tmp_path)
            want, _ = frames_of(data, tmp_path)
            assert not damage and got[2].data == new and len(got) == len(want)
            assert got[2].wire_len - len(new) == want[2].wire_len - len(old)
            assert [g.data for g in got[3:]] == [w.data for w in want[3:]]


# -- the coverage map -----------------------------------------------------------------------------------------------

needs_fuzz_build = pytest.mark.skipif(not Coverage.present(),
                                      reason="the engine is not the fuzz build (no coverage map): "
                                             "`make sanitize` runs these on it")


@needs_fuzz_build
def test_coverage_map_follows_the_input(tmp_path: Path) -> None:
    """The engine fills the map; a pcapng IPv6 capture and an Ethernet pcap reach different edges, and an input
    seen before brings nothing new."""
    coverage = Coverage()
    snapshots = []
    for name in ("handshake_fourway_client_close.pcap", "ipv6.pcap", "dumpcap_pcapng.pcapng"):
        coverage.reset()
        assert coverage.snapshot().count(0) == coverage.size
        run_cli(["analyze", "--engine", "compiled", "-f", "json", str(SAMPLES / name)])
        snapshots.append(coverage.snapshot())
    assert all(s.count(0) < coverage.size - 100 for s in snapshots)
    assert len({*snapshots}) == 3
    assert coverage.merge(snapshots[0]) and coverage.merge(snapshots[2])
    assert not coverage.merge(snapshots[0])
    assert coverage.edges() > 300 and 300 < coverage.blocks() < coverage.edges()


# -- a short run ----------------------------------------------------------------------------------------------------

pytestmark_engine = pytest.mark.skipif(not engine.available(), reason="the compiled engine is not built")


@pytestmark_engine
@pytest.mark.plain_only  # make sanitize runs this same fuzzer right after its tests, for far more executions
def test_short_run_finds_no_difference(tmp_path: Path) -> None:
    """From fixed seeds, a few hundred executions: the engines agree on every input and nothing raises."""
    fuzzer = Fuzzer(tmp_path, rng_seed=2026, findings_dir=tmp_path / "findings")
    fuzzer.seed(seeds(crafted_count=24, damaged=False))
    stats = fuzzer.run(executions=300)
    assert stats.executions == 300 and stats.accepted > 100
    assert not stats.findings, "\n\n".join(f"{f.input.origin}: {f.detail}" for f in stats.findings[:3])


@pytestmark_engine
def test_a_mismatch_is_reported_and_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle is not blind: an engine made to write one byte differently is caught, and the input kept."""
    real = engine._writer

    def one_byte_off(out: IO[str]) -> tuple[Callable[[bytes], object], int]:
        write, fd = real(out)  # an -o file's descriptor, or standard output's callback

        def send(data: bytes) -> object:
            data = data.replace(b'"open"', b'"OPEN"')
            return os.write(fd, data) if fd >= 0 else write(data)

        return send, -1

    monkeypatch.setattr(engine, "_writer", one_byte_off)
    fuzzer = Fuzzer(tmp_path, findings_dir=tmp_path / "findings")
    fuzzer.execute(Input(ETHERNET_PCAP, (), "sample"))
    assert [f.kind for f in fuzzer.stats.findings] == ["mismatch"]
    saved = fuzzer.stats.findings[0].saved
    assert saved is not None and saved.read_bytes() == ETHERNET_PCAP
    assert "OPEN" in saved.with_suffix(".txt").read_text()


# -- the supervisor -------------------------------------------------------------------------------------------------


def test_supervisor_keeps_the_input_of_a_crash_and_of_a_hang(tmp_path: Path) -> None:
    """A worker that dies by a signal (as on a sanitizer report) or stops changing its current input is seen as
    such, and the input it was running is kept as the reproducer, with its options."""
    current = tmp_path / "work" / "current.pcap"
    current.parent.mkdir()
    current.write_bytes(ETHERNET_PCAP)
    (current.parent / "current.options").write_text("--msl 0")
    log = tmp_path / "worker.log"
    log.write_text("")
    crashing = subprocess.Popen([sys.executable, "-c", "import os; os.abort()"])
    assert supervisor._watch(crashing, current, 30.0, log) == -signal.SIGABRT
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert supervisor._watch(hanging, current, 1.5, log) == "hang"
    kept = supervisor._keep(tmp_path, current, "crash", "the worker's last words")
    assert kept.read_bytes() == ETHERNET_PCAP and kept.name.startswith("crash-")
    assert kept.with_suffix(".txt").read_text().startswith("options: --msl 0\n")

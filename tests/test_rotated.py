"""Rotated capture sets (analyzer/rotated.py): a kernel-made capture cut into parts reads as the whole.

The parts are cut from samples made by real Linux traffic (samples/generate.py) with editcap, at every
frame (port_reuse.pcap: each boundary falls mid-handshake, mid-close, in TIME_WAIT and between the two
uses of the port) or every few dozen frames and by time (busy.pcap, 340 connections), and renamed so
that the order of their names is not their time order. Whatever the cut, both engines must give, byte
for byte, what they give for the whole file (frame numbers included: they are global), and the summary
must say the same apart from its name and the set's own line. With a short --msl, TIME_WAIT timers run
out across boundaries too: the set's clock is the frames', whichever file they are in.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from analyzer import engine
from analyzer.capture import RawFrame, read_frames
from tests.engine_compare import run_cli

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ENGINES = ("reference", "compiled")

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None or not engine.available(),
                                reason="needs editcap and the compiled engine")


def tool(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    """A Wireshark tool run without LD_PRELOAD (make sanitize preloads the sanitizers' runtimes, under which
    editcap hangs)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run(command, check=True, env=env, text=True, **options)  # type: ignore[call-overload, no-any-return]


def cut(sample: str, into: Path, how: list[str]) -> list[Path]:
    """The sample cut by `editcap -F pcap HOW` into `into`, the parts renamed so that name order runs
    backwards in time (part 0 holds the last frames)."""
    into.mkdir()
    tool(["editcap", "-F", "pcap", *how, str(SAMPLES / sample), str(into / "part.pcap")])
    made = sorted(into.iterdir())  # editcap numbers them in time order
    assert len(made) > 1
    renamed = []
    for index, path in enumerate(made):
        target = into / f"cap{len(made) - 1 - index:04d}.pcap"
        path.rename(target)
        renamed.append(target)
    return renamed


def analyze(args: list[str], engine_name: str, fmt: str = "json") -> tuple[int | str, bytes, str]:
    outcome = run_cli(["analyze", "--engine", engine_name, "-f", fmt, *args])
    return outcome.status, outcome.stdout, outcome.stderr


def summary_without_names(stderr: str) -> list[str]:
    """The summary's lines, its first without the capture's name, the set's own line left out."""
    lines = stderr.splitlines()
    return [lines[0].split(": ", 1)[1], *(line for line in lines[1:] if not line.startswith("  set of "))]


def assert_same_as_whole(sample: str, parts: list[Path], options: list[str], as_set: list[str]) -> None:
    for fmt in ("json", "csv", "table"):
        quiet = ["--no-summary"] if fmt == "table" else []  # the table's summary goes to stdout: json's is checked
        whole = {e: analyze([*options, *quiet, str(SAMPLES / sample)], e, fmt) for e in ENGINES}
        pieces = {e: analyze([*options, *quiet, *as_set], e, fmt) for e in ENGINES}
        assert whole["reference"] == whole["compiled"]
        for name in ENGINES:
            status, out, err = pieces[name]
            assert status == 0, err
            assert out == whole[name][1], f"{name} {fmt}: the set's records differ from the whole file's"
            if not quiet:
                assert summary_without_names(err) == summary_without_names(whole[name][2])
                assert f"  set of {len(parts)} files, read in time order" in err
        assert pieces["reference"] == pieces["compiled"]


def test_every_frame_its_own_file(tmp_path: Path) -> None:
    """port_reuse.pcap, 22 frames, one file each: every boundary of two connections on one port pair."""
    parts = cut("port_reuse.pcap", tmp_path / "parts", ["-c", "1"])
    assert len(parts) == 22
    assert_same_as_whole("port_reuse.pcap", parts, [], [str(tmp_path / "parts")])
    shuffled = parts[:]
    random.Random(16).shuffle(shuffled)
    assert_same_as_whole("port_reuse.pcap", parts, [], ["--set", *map(str, shuffled)])


@pytest.mark.parametrize("how", [["-c", "37"], ["-c", "500"], ["-i", "1"]])
def test_busy_capture_in_parts(tmp_path: Path, how: list[str]) -> None:
    parts = cut("busy.pcap", tmp_path / "parts", how)
    assert_same_as_whole("busy.pcap", parts, [], [str(tmp_path / "parts")])


def test_timers_run_across_files(tmp_path: Path) -> None:
    """--msl 0.05: TIME_WAIT ends (by the timer) in frames of later files; --handshake-timeout too."""
    parts = cut("busy.pcap", tmp_path / "parts", ["-c", "23"])
    options = ["--msl", "0.05", "--handshake-timeout", "0.2", "--idle-timeout", "0.5"]
    assert_same_as_whole("busy.pcap", parts, options, [str(tmp_path / "parts")])


def test_a_file_without_frames_and_one_cut_short(tmp_path: Path) -> None:
    """A file holding only its header, and one whose last record is cut: the cut file ends at its damage
    (named by its global frame number: 10 whole frames before it, so frame 11) and the next file goes on."""
    parts = cut("port_reuse.pcap", tmp_path / "parts", ["-c", "5"])  # 5 + 5 + 5 + 5 + 2 frames
    by_time = sorted(parts, key=lambda p: next(f.ts for f in read_frames(p) if isinstance(f, RawFrame)))
    second = by_time[1]
    second.write_bytes(second.read_bytes()[:-10])  # frame 10's record cut 10 bytes short
    empty = tmp_path / "parts" / "zzempty.pcap"
    empty.write_bytes(by_time[0].read_bytes()[:24])
    results = {e: analyze([str(tmp_path / "parts")], e) for e in ENGINES}
    assert results["reference"] == results["compiled"]
    status, out, err = results["compiled"]
    assert status == 0
    assert err.splitlines()[0].startswith(f"{tmp_path / 'parts'}: 21 frames, 21 TCP segments")
    assert "bad frames: 1 (first: frame 10: record cut short (" in err
    assert "set of 6 files" in err
    assert b'"last_frame": 22' in out  # the last file's frames keep their numbers in the whole


def test_gaps_and_overlaps(tmp_path: Path) -> None:
    """A part left out makes a gap; a part given twice (a copy) overlaps. The times are tshark's."""
    parts = cut("port_reuse.pcap", tmp_path / "parts", ["-c", "8"])  # 8 + 8 + 6 frames
    by_time = sorted(parts, key=lambda p: next(f.ts for f in read_frames(p) if isinstance(f, RawFrame)))
    times = tshark_times(SAMPLES / "port_reuse.pcap")
    status, _, err = analyze(["--set", str(by_time[2]), str(by_time[0])], "compiled")
    assert status == 0
    assert f"largest gap {times[16] - times[7]:.6f} s, between {by_time[0]} and {by_time[2]}" in err
    copy = tmp_path / "copy.pcap"
    shutil.copy(by_time[1], copy)
    outcomes = {e: analyze(["--set", *map(str, by_time), str(copy)], e) for e in ENGINES}
    assert outcomes["reference"] == outcomes["compiled"]
    err = outcomes["compiled"][2]
    overlap = times[15] - times[8]
    assert "overlaps: 1 (" in err and f"starts {overlap:.6f} s before" in err


def tshark_times(path: Path) -> list[float]:
    """Every frame's time as tshark reads it (an independent reader)."""
    done = tool(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"], capture_output=True)
    return [float(line) for line in done.stdout.split()]


def test_gzip_part_read_by_the_reference(tmp_path: Path) -> None:
    """The engine cannot chain a gzip file: a note, and the reference's output, the same as the whole's."""
    parts = cut("port_reuse.pcap", tmp_path / "parts", ["-c", "6"])
    packed = parts[1].with_suffix(".pcap.gz")
    packed.write_bytes(gzip.compress(parts[1].read_bytes()))
    parts[1].unlink()
    status, out, err = analyze([str(tmp_path / "parts")], "auto")
    assert status == 0
    assert "holds a gzip file, which the compiled engine cannot chain" in err
    assert out == analyze([str(SAMPLES / "port_reuse.pcap")], "compiled")[1]


def test_bad_members(tmp_path: Path) -> None:
    """No traceback: a file in --set that is no capture, a directory without captures; one line, status 2."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n")
    for engine_name in ENGINES:
        status, out, err = analyze(["--set", str(SAMPLES / "refused.pcap"), str(notes)], engine_name)
        assert (status, out) == (2, b"")
        assert err.strip() == f"synfin: {notes}: not a pcap or pcapng capture (starts with bytes 6e 6f 74 20)"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing\n")
    status, _, err = analyze([str(empty)], "compiled")
    assert status == 2
    assert err.strip() == f"synfin: {empty}: no capture files (pcap, pcapng, gzip) in this directory"


def test_plain_captures_stay_separate(tmp_path: Path) -> None:
    """`synfin analyze a b` keeps its meaning: two captures, each on its own, each with its own summary."""
    parts = cut("port_reuse.pcap", tmp_path / "parts", ["-c", "11"])
    status, out, err = analyze(list(map(str, parts)), "compiled")
    assert status == 0
    assert err.count("frames") == 2 and "set of" not in err
    assert {json.loads(line)["capture"] for line in out.splitlines()} == {str(p) for p in parts}


def test_api_reads_a_directory_or_a_list(tmp_path: Path) -> None:
    """analyzer.analyze(DIR) and analyzer.analyze([files]): the whole file's records, on both engines;
    the Stats say where the files meet."""
    import analyzer

    parts = cut("port_reuse.pcap", tmp_path / "parts", ["-c", "3"])
    whole = [analyzer.record(r) for r in analyzer.analyze(SAMPLES / "port_reuse.pcap")]
    for engine_name in ENGINES:
        stats = analyzer.Stats()
        assert [analyzer.record(r) for r in analyzer.analyze(tmp_path / "parts", engine=engine_name,
                                                             stats=stats)] == whole
        assert stats.boundaries is not None and len(stats.boundaries.names) == len(parts) == 8
        assert stats.frames == 22
        given = [str(p) for p in reversed(parts)]
        assert [analyzer.record(r) for r in analyzer.analyze(given, engine=engine_name)] == whole


def test_ladder_draws_from_a_set(tmp_path: Path) -> None:
    """`synfin ladder DIR/` and `--set`: the whole file's ladders (ids, frame numbers), with --where too, on
    both engines (the compiled one collects the frames across files: collect.c through reader_chain)."""
    parts = cut("busy.pcap", tmp_path / "parts", ["-c", "41"])
    for extra in (["--conn", "0", "7", "339"], ["--where", "close=reset", "--conn", *map(str, range(40))]):
        for engine_name in ENGINES:
            whole = run_cli(["ladder", str(SAMPLES / "busy.pcap"), "--engine", engine_name, "--text", *extra])
            assert whole.status == 0 and whole.stdout
            as_dir = run_cli(["ladder", str(tmp_path / "parts"), "--engine", engine_name, "--text", *extra])
            assert (as_dir.status, as_dir.stdout) == (0, whole.stdout)
            listed = run_cli(["ladder", "--engine", engine_name, "--text", *extra, "--set", *map(str, parts)])
            assert (listed.status, listed.stdout) == (0, whole.stdout)


def mergecap(files: list[Path], into: Path) -> Path:
    """The files joined by `mergecap -a` (one after another, in the order given)."""
    tool(["mergecap", "-a", "-w", str(into), *map(str, files)])
    return into


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="needs mergecap")
def test_pcapng_parts_as_mergecap_joins_them(tmp_path: Path) -> None:
    """Parts written as pcapng (a section and an interface each): the records of `mergecap -a` of the parts
    in time order, byte for byte, frame numbers included."""
    (tmp_path / "parts").mkdir()
    tool(["editcap", "-F", "pcapng", "-c", "3", str(SAMPLES / "port_reuse.pcap"), str(tmp_path / "parts" / "p.pcapng")])
    parts = sorted((tmp_path / "parts").iterdir())
    joined = mergecap(parts, tmp_path / "joined.pcapng")
    for engine_name in ENGINES:
        expected = analyze([str(joined)], engine_name)[1]
        assert analyze(["--set", *map(str, reversed(parts))], engine_name)[1] == expected


def rounded(value: object) -> object:
    """JSON values with every time to the microsecond (the files' resolution)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="needs mergecap")
def test_mixed_formats_and_link_types(tmp_path: Path) -> None:
    """A pcap of Linux cooked frames (any_interface.pcap), a pcapng and a pcap of Ethernet frames: the same
    records (times to the microsecond) as `mergecap -a`, which re-encodes them all as one pcapng; both
    engines the same bytes, and the summary counts both link types."""
    ethernet = tmp_path / "ethernet.pcapng"
    tool(["editcap", "-F", "pcapng", str(SAMPLES / "refused.pcap"), str(ethernet)])
    order = sorted([SAMPLES / "any_interface.pcap", ethernet, SAMPLES / "half_close.pcap"],
                   key=lambda p: next(f.ts for f in read_frames(p) if isinstance(f, RawFrame)))
    joined = mergecap(order, tmp_path / "joined.pcapng")
    outcomes = {e: analyze(["--set", *map(str, order[::-1])], e) for e in ENGINES}
    assert outcomes["reference"] == outcomes["compiled"]
    status, out, err = outcomes["compiled"]
    assert status == 0
    expected = analyze([str(joined)], "compiled")[1]
    assert [rounded(json.loads(line)) for line in out.splitlines()] == \
        [rounded(json.loads(line)) for line in expected.splitlines()]
    assert "(EN10MB " in err.splitlines()[0] and "LINUX_SLL" in err.splitlines()[0]

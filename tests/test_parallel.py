"""A rotated set analyzed file by file in parallel (analyzer/parallel.py, dask_exec.py) writes, byte for byte,
what reading it in sequence writes: in every format (the table with its summary), and the API's records.

The sets are cut from kernel-made samples (samples/generate.py) at frames chosen by reading the whole
file's records, and each cut is checked to fall where it is named: busy.pcap (340 connections) mid-handshake
(after a SYN, before the answer), mid-close (after the first FIN, before the last ACK), in TIME_WAIT (after
a connection's last frame, one end in TIME_WAIT for the rest of the capture), after a refused connection's
bare SYN (a half-open record in the engine), and every 250 frames; port_reuse.pcap after every frame, so
one boundary falls in TIME_WAIT just before the SYN that reuses its port pair. The files are named so that
name order is not time order. Each set runs through the plain executor (no Dask), a local Dask cluster, and
a `dask scheduler` with a `dask worker` started here on the loopback.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import analyzer
from analyzer import dask_exec, engine, parallel
from analyzer.connection import Timeouts
from analyzer.rotated import from_directory
from tests.engine_compare import run_cli
from tests.flood import syn_flood
from tests.test_rotated import SAMPLES, tool

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None or not engine.available(),
                                reason="needs editcap and the compiled engine")
FORMATS = ("table", "json", "csv")
#: Dask's processes would inherit make sanitize's preloaded runtimes: its run keeps to the plain executor
on_dask = pytest.mark.skipif(bool(os.environ.get("SYNFIN_SANITIZED")), reason="Dask processes under ASan")
ROOT = Path(__file__).resolve().parent.parent
SHORT_TIMERS = ["--msl", "0.05", "--handshake-timeout", "0.2", "--idle-timeout", "0.5"]


def whole_records(sample: str) -> list[dict[str, object]]:
    out = io.StringIO()
    engine.run(SAMPLES / sample, out, "json", Timeouts())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def frames_of(record: dict[str, object], side: str, state: str) -> list[int]:
    return [frame for name, _, frame in record["states"][side] if name == state]  # type: ignore[index]


def final(record: dict[str, object], side: str) -> str:
    return str(record["states"][side][-1][0])  # type: ignore[index]


def named_cuts(records: list[dict[str, object]]) -> dict[str, int]:
    """Frames of busy.pcap to cut after, each at the place its name says (asserted in test_cuts_fall_where_named)."""
    handshake = next(r for r in records if r["open"] == "handshake" and frames_of(r, "client", "SYN_SENT")[0] > 300)
    closing = next(r for r in records if r["close"] == "four-way" and r["first_frame"] > 900)  # type: ignore[operator]
    waiting = next(r for r in records if final(r, "client") == "TIME_WAIT" and r["last_frame"] > 1600)  # type: ignore[operator]
    refused = next(r for r in records if r["open"] == "refused" and r["first_frame"] > 2200)  # type: ignore[operator]
    closer = closing["active_closer"]
    return {"mid-handshake": frames_of(handshake, "client", "SYN_SENT")[0],
            "mid-close": frames_of(closing, closer, "FIN_WAIT_1")[0],  # type: ignore[arg-type]
            "in TIME_WAIT": waiting["last_frame"],  # type: ignore[dict-item]
            "after a refused SYN": refused["first_frame"]}  # type: ignore[dict-item]


def cut_after(sample: str, frames: list[int], into: Path) -> list[Path]:
    """The sample cut after each of `frames` (editcap -r), the parts named backwards in time."""
    total = len(whole_frame_numbers(sample))
    bounds = [0, *sorted(set(frames)), total]
    into.mkdir()
    parts = []
    for index, (low, high) in enumerate(itertools.pairwise(bounds)):
        target = into / f"cap{len(bounds) - 2 - index:04d}.pcap"
        tool(["editcap", "-F", "pcap", "-r", str(SAMPLES / sample), str(target), f"{low + 1}-{high}"])
        parts.append(target)
    return parts


def pcap_records(path: Path) -> tuple[bytes, list[bytes]]:
    """A pcap file's header and its records (each with its own header), as bytes: cut anywhere, exactly."""
    data = path.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records, at = [], 24
    while at < len(data):
        caplen = struct.unpack(order + "I", data[at + 8:at + 12])[0]
        records.append(data[at:at + 16 + caplen])
        at += 16 + caplen
    return data[:24], records


def whole_frame_numbers(sample: str) -> list[int]:
    out = tool(["tshark", "-r", str(SAMPLES / sample), "-T", "fields", "-e", "frame.number"], capture_output=True)
    return [int(n) for n in out.stdout.split()]


@pytest.fixture(scope="module")
def busy_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cuts = [*named_cuts(whole_records("busy.pcap")).values(), *range(250, 3280, 250)]
    into = tmp_path_factory.mktemp("busy") / "parts"
    assert len(cut_after("busy.pcap", cuts, into)) == len(set(cuts)) + 1
    return into


@pytest.fixture(scope="module")
def reuse_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    into = tmp_path_factory.mktemp("reuse") / "parts"
    cut_after("port_reuse.pcap", list(range(1, 22)), into)
    return into


def test_cuts_fall_where_named() -> None:
    records = whole_records("busy.pcap")
    by_cut = {name: frame for name, frame in named_cuts(records).items()}
    handshake = next(r for r in records if frames_of(r, "client", "SYN_SENT")[:1] == [by_cut["mid-handshake"]])
    assert frames_of(handshake, "client", "ESTABLISHED")[0] > by_cut["mid-handshake"]  # the answer is in the next file
    closing = next(r for r in records if r["close"] == "four-way" and by_cut["mid-close"] in
                   frames_of(r, str(r["active_closer"]), "FIN_WAIT_1"))
    assert closing["last_frame"] > by_cut["mid-close"]  # type: ignore[operator]
    assert frames_of(closing, "client", "CLOSED") or frames_of(closing, "server", "CLOSED")
    waiting = next(r for r in records
                   if r["last_frame"] == by_cut["in TIME_WAIT"] and final(r, "client") == "TIME_WAIT")
    assert frames_of(waiting, "client", "TIME_WAIT")[0] <= by_cut["in TIME_WAIT"] < 3280
    refused = next(r for r in records if r["first_frame"] == by_cut["after a refused SYN"])
    assert refused["open"] == "refused" and refused["last_frame"] > by_cut["after a refused SYN"]  # type: ignore[operator]
    first, second = whole_records("port_reuse.pcap")
    assert (first["client"], first["server"]) == (second["client"], second["server"])
    assert frames_of(first, "server", "TIME_WAIT")[0] < first["last_frame"] == 11 < second["first_frame"] == 12  # type: ignore[operator]


def test_the_merge_carries_connections_across_files(busy_set: Path) -> None:
    """The cuts leave connections open at boundaries: files' runs hand them over, and the merge's tracker
    carries them on and writes them (it is not trivial)."""
    merged = parallel.analyze_set(from_directory(busy_set), "json", Timeouts())
    assert merged is not None
    text = b"".join(merged.pieces())
    assert sum(found["number"] for found in merged.scans) == 3280
    assert merged.adopted >= 20 and merged.remade >= 20
    assert merged.counts["connections"] == text.count(b"\n") == len(whole_records("busy.pcap"))


@pytest.mark.parametrize("sample", ["vxlan.pcap", "rst_injected.pcap", "vlan_reuse.pcap", "midstream.pcap",
                                    "half_close.pcap", "keepalive.pcap"])
def test_a_handover_at_every_frame(tmp_path: Path, sample: str) -> None:
    """The sample cut in two after each of its frames in turn: each time the connections open there are handed
    over by the first file's run and carried on by the merge, and what a handover packs (tunnel texts, VLAN
    and VNI keys, anomalies, histories, unreceived segments, timers) must come back as it was."""
    whole = cli(["-f", "json", str(SAMPLES / sample)])[1]
    head, records = pcap_records(SAMPLES / sample)
    frames = len(records)
    adopted = 0
    for cut in range(1, frames):
        into = tmp_path / f"cut{cut}"
        into.mkdir()
        (into / "b.pcap").write_bytes(head + b"".join(records[:cut]))  # named against their order in time
        (into / "a.pcap").write_bytes(head + b"".join(records[cut:]))
        merged = parallel.analyze_set(from_directory(into), "json", Timeouts())
        assert merged is not None, f"cut after {cut}: read in sequence"
        assert b"".join(merged.pieces()) == whole, f"cut after frame {cut}"
        adopted += merged.adopted
    assert adopted >= frames // 2


def cli(args: list[str]) -> tuple[int | str, bytes, str]:
    outcome = run_cli(["analyze", *args])
    return outcome.status, outcome.stdout, outcome.stderr


def without_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dask_exec, "dask_available", lambda: False)
    monkeypatch.setattr("analyzer.cli.dask_available", lambda: False)


NOTE = "synfin: note: dask is not installed"


def assert_parallel_same(directory: Path, parallel_args: list[str], sample: str, options: list[str]) -> None:
    """Each format with `parallel_args` gives what the set read in sequence gives (stdout and stderr: the
    summary), and JSON and CSV what the whole file gives."""
    for fmt in FORMATS:
        sequential = cli([*options, "-f", fmt, str(directory)])
        spread = cli([*options, "-f", fmt, *parallel_args, str(directory)])
        assert sequential[0] == 0 and spread[0] == 0, spread[2]
        assert spread[1] == sequential[1], f"{fmt}: the parallel output differs"
        assert [line for line in spread[2].splitlines() if not line.startswith(NOTE)] == sequential[2].splitlines()
        if fmt != "table":
            assert spread[1] == cli([*options, "-f", fmt, str(SAMPLES / sample)])[1]


def api_records(directory: Path, **options: object) -> list[dict[str, object]]:
    return [analyzer.record(r) for r in analyzer.analyze(directory, **options)]  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [[], SHORT_TIMERS], ids=["default", "short-timers"])
def test_plain_executor(monkeypatch: pytest.MonkeyPatch, busy_set: Path, reuse_set: Path,
                        options: list[str]) -> None:
    """Without the dask extra, --workers runs the same merge with the files one after another."""
    without_dask(monkeypatch)
    assert_parallel_same(busy_set, ["--workers", "2"], "busy.pcap", options)
    assert_parallel_same(reuse_set, ["--workers", "2"], "port_reuse.pcap", options)
    assert NOTE in cli(["--workers", "2", str(reuse_set)])[2]
    assert api_records(busy_set, workers=2) == api_records(busy_set) == api_records(SAMPLES / "busy.pcap")


def test_where_and_filter(monkeypatch: pytest.MonkeyPatch, busy_set: Path) -> None:
    """--where: the records it matches, the census of those; --filter: the frames it matches."""
    without_dask(monkeypatch)
    assert_parallel_same(busy_set, ["--workers", "2"], "busy.pcap", ["--where", "close=reset,four-way"])
    if engine.filters_available():
        assert_parallel_same(busy_set, ["--workers", "2"], "busy.pcap", ["--filter", "tcp port 9105 or tcp port 9109"])


def test_overlapping_or_damaged_files_are_read_in_sequence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           busy_set: Path) -> None:
    """Files that overlap in time, or one cut short mid-record: the same output as in sequence."""
    without_dask(monkeypatch)
    files = sorted(busy_set.iterdir())
    overlapping = tmp_path / "overlap"
    shutil.copytree(busy_set, overlapping)
    shutil.copy(files[3], overlapping / "zcopy.pcap")
    assert parallel.analyze_set(from_directory(overlapping), "json", Timeouts()) is None
    for fmt in FORMATS:
        assert cli(["-f", fmt, "--workers", "2", str(overlapping)])[1] == cli(["-f", fmt, str(overlapping)])[1]
    damaged = tmp_path / "damaged"
    shutil.copytree(busy_set, damaged)
    victim = damaged / files[5].name
    victim.write_bytes(victim.read_bytes()[:-30])
    for fmt in FORMATS:
        spread, sequential = cli(["-f", fmt, "--workers", "2", str(damaged)]), cli(["-f", fmt, str(damaged)])
        assert spread[:2] == sequential[:2] and "record cut short" in sequential[2] + sequential[1].decode()


@pytest.mark.slow
@on_dask
def test_local_dask_cluster(busy_set: Path, reuse_set: Path) -> None:
    """--workers 2 with dask installed: a LocalCluster of two processes (each start costs seconds: one run of
    the CLI and one of the API; every format goes through the same merge in test_plain_executor)."""
    pytest.importorskip("distributed")
    sequential = cli([*SHORT_TIMERS, "-f", "json", str(busy_set)])
    spread = cli([*SHORT_TIMERS, "-f", "json", "--workers", "2", str(busy_set)])
    assert spread[0] == 0 and spread[1] == sequential[1] == cli([*SHORT_TIMERS, "-f", "json",
                                                                  str(SAMPLES / "busy.pcap")])[1]
    assert spread[2] == sequential[2]  # the summary
    assert api_records(reuse_set, workers=2) == api_records(SAMPLES / "port_reuse.pcap")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def scheduler() -> Iterator[str]:
    """A `dask scheduler` and a `dask worker` (two processes) on the loopback, stopped after the test."""
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(Path(sys.executable).parent / "dask")  # the console script of the dask extra
    started = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                 "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        started.append(subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                         "--no-dashboard"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_workers(address, 2)
        yield address
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=3)  # a worker's graceful close takes longer, and nothing of it is tested
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    deadline = time.monotonic() + 60
    with Client(address, timeout="30s") as client:
        while len(client.scheduler_info()["workers"]) < count:
            assert time.monotonic() < deadline, "the dask workers did not come up"
            time.sleep(0.2)


@pytest.mark.slow
@on_dask
def test_dask_scheduler_and_worker(scheduler: str, busy_set: Path, reuse_set: Path) -> None:
    """--scheduler ADDRESS: the parts run on a scheduler's workers (other processes, reading the same paths)."""
    assert_parallel_same(busy_set, ["--scheduler", scheduler], "busy.pcap", [])
    assert_parallel_same(reuse_set, ["--scheduler", scheduler], "port_reuse.pcap", SHORT_TIMERS)
    assert api_records(busy_set, scheduler=scheduler) == api_records(SAMPLES / "busy.pcap")


@pytest.mark.slow
@on_dask
def test_no_scheduler_there(busy_set: Path) -> None:
    pytest.importorskip("distributed")
    status, out, err = cli(["--scheduler", f"tcp://127.0.0.1:{free_port()}", str(busy_set)])
    assert status == 2 and out == b""
    assert err.startswith("synfin: ") and "Traceback" not in err and len(err.splitlines()) == 1


def test_kept_and_remade_connections_retired_in_one_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One frame runs out two timers: a connection of its own file (kept from the part) and one carried from
    the file before (remade by the replay). They must come out in order of wake time, not of id.

    Kernel-made samples, re-timed with editcap -t (only their times change): file 1 is port_reuse.pcap's
    first connection (CLOSED at 05:21:02.327, lingering 5 s: its wake 05:21:07.327); file 2 is
    fourway_server_close.pcap moved to start at 05:21:02.5 (the server's TIME_WAIT, --msl 0.05, runs out at
    05:21:02.9), then busy.pcap moved to 05:21:20, whose first frame runs out both, then refused.pcap moved
    20 s later, whose first frame runs out busy's connections (kept records after the remade one: the tick
    at busy's first frame puts it before them)."""
    without_dask(monkeypatch)
    into = tmp_path / "set"
    into.mkdir()
    tool(["editcap", "-F", "pcap", "-r", str(SAMPLES / "port_reuse.pcap"), str(into / "a.pcap"), "1-11"])
    tool(["editcap", "-F", "pcap", "-t", "43.388152", str(SAMPLES / "fourway_server_close.pcap"),
          str(tmp_path / "f.pcap")])
    tool(["editcap", "-F", "pcap", "-t", "10.653261", str(SAMPLES / "busy.pcap"), str(tmp_path / "b.pcap")])
    tool(["editcap", "-F", "pcap", "-t", "79.0", str(SAMPLES / "refused.pcap"), str(tmp_path / "r.pcap")])
    tool(["mergecap", "-F", "pcap", "-a", "-w", str(into / "b.pcap"), str(tmp_path / "f.pcap"),
          str(tmp_path / "b.pcap"), str(tmp_path / "r.pcap")])
    options = ["--msl", "0.05", "-f", "json"]
    sequential = cli([*options, str(into)])[1].splitlines()
    assert [json.loads(line)["id"] for line in sequential[:2]] == [1, 0]  # wake order: id 1 before id 0
    for fmt in FORMATS:
        spread = cli(["--msl", "0.05", "-f", fmt, "--workers", "2", str(into)])
        assert spread[:2] == cli(["--msl", "0.05", "-f", fmt, str(into)])[:2]


def test_summary_rows_of_remade_connections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """server_states.pcap cut every 40 frames: the slow-accept connection whose SYN is resent at frames 824 and
    838 (its first SYN at 9) and the TIME_WAIT and CLOSE_WAIT ones carried to the end are remade, so the
    summary's retransmissions and busiest-endpoint rows must take the parts' copies of them off again."""
    without_dask(monkeypatch)
    into = tmp_path / "parts"
    cut_after("server_states.pcap", list(range(40, 847, 40)), into)
    status, out, err = cli(["--workers", "2", str(into)])
    assert status == 0, err
    summary = out.decode() + err  # the table and its summary (on a terminal, or not, the summary is in one of them)
    assert "retransmitted: SYN 2, SYN-ACK 0, FIN 0" in summary
    assert "10.77.0.2:9102: 60 connections, 60 handshake, 60 closed, 0 reset; at the end server TIME_WAIT 60" in summary
    assert_parallel_same(into, ["--workers", "2"], "server_states.pcap", [])


MERGE_PEAK = """
import sys
from pathlib import Path
from analyzer import parallel
from analyzer.connection import Timeouts
from analyzer.rotated import from_directory
merged = parallel.analyze_set(from_directory(Path(sys.argv[1])), "json", Timeouts())
written = sum(len(piece) for piece in merged.pieces())
with open("/proc/self/status") as status_file:  # VmHWM, not ru_maxrss: a child's starts at its parent's
    print(merged.counts["connections"], written, next(line.split()[1] for line in status_file
                                                       if line.startswith("VmHWM:")))
"""


def merge_peak(directory: Path) -> tuple[int, int, int]:
    """(connections, bytes written, peak RSS in KiB) of merging the set in a child."""
    done = subprocess.run([sys.executable, "-c", MERGE_PEAK, str(directory)], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    connections, written, kib = done.stdout.split()
    return int(connections), int(written), int(kib)


@pytest.mark.skipif(bool(os.environ.get("SYNFIN_SANITIZED")), reason="memory under ASan means nothing")
def test_the_merge_holds_one_file_not_the_set(tmp_path: Path) -> None:
    """busy.pcap (340 connections, 0.5 MB of JSON) copied 4 and 32 times, each copy a file 100 s after the
    one before (their TIME_WAITs end in the next file): the merge of 32 files peaks within 12 MiB of the merge
    of 4 (44 MiB for both here; the merge that held every record until the end peaked at 33 and 92 MiB)."""
    sets = {}
    for copies in (4, 32):
        into = tmp_path / f"x{copies}"
        into.mkdir()
        for k in range(copies):
            tool(["editcap", "-F", "pcap", "-t", str(100.0 * k), str(SAMPLES / "busy.pcap"),
                  str(into / f"copy{copies - k:03d}.pcap")])
        sets[copies] = merge_peak(into)
    (few, few_bytes, few_kib), (many, many_bytes, many_kib) = sets[4], sets[32]
    assert (few, many) == (4 * 340, 32 * 340) and many_bytes > 7 * few_bytes
    assert many_kib - few_kib < 12 * 1024, (few_kib, many_kib)


def test_a_damaged_or_foreign_handover_is_refused(tmp_path: Path) -> None:
    """The bytes a file's run hands over are checked before the merge takes them: cut short, they are
    malformed; from a build whose connections have another layout (a worker running another synfin), they
    are refused by name. Neither crashes, and the merge takes nothing of them."""
    cut_after("half_close.pcap", [6], tmp_path / "parts")
    first = sorted((tmp_path / "parts").iterdir())[-1]  # named backwards: the last name is the first file
    counts, _ = parallel.run_part(str(first), 0, parallel.Settings("json", Timeouts(), None, False, None, None))
    handover = counts["handover"]
    assert len(_engine_module().handover_keys(handover)) == 48  # one connection open after frame 6
    foreign = bytearray(handover)
    foreign[0] ^= 0x40  # the header's sizeof(Conn)
    for damaged, why in [(handover[:-8], "malformed"), (handover[:40], "malformed"),
                         (bytes(foreign), "another build")]:
        merger = _engine_module().merger(lambda _: None, engine.FORMATS["json"], (30.0, 900.0, 40.0, 5.0), None,
                                         False)
        _engine_module().merger_enter(merger)
        with pytest.raises(ValueError, match=why):
            _engine_module().merger_adopt(merger, damaged)
        assert _engine_module().merger_held(merger, 0) == b""
    merger = _engine_module().merger(lambda _: None, engine.FORMATS["json"], (30.0, 900.0, 40.0, 5.0), None, False)
    assert _engine_module().merger_adopt(merger, handover) == 1


def _engine_module() -> Any:
    from analyzer import _engine

    return _engine


@pytest.mark.skipif(bool(os.environ.get("SYNFIN_SANITIZED")), reason="memory under ASan means nothing")
def test_a_syn_flood_across_a_boundary_stays_compact(tmp_path: Path) -> None:
    """A SYN flood (tests/flood.py, crafted: distinct clients, none answered) cut in two in its middle: every
    half-open connection is open at the boundary, and still open at the end. Handed over as the tracker keeps it
    (the SYN alone, about 170 bytes, not an 848-byte connection), and written at the end a piece at a time, each
    costs the merge about 0.6 KiB of peak here (both files' runs, the handover, the merge's own record). Bound:
    1.5 KiB, measured as the growth of the peak from 10,000 SYNs to 60,000. (A 250,000-SYN flood so cut peaked
    at 1.3 GB when full connections were handed over and the end written at once; 0.27 GB now, and 0.13 GB
    read whole.) The records are the whole file's."""
    peaks = {}
    for count in (60_000, 10_000):
        whole = syn_flood(tmp_path / f"flood{count}.pcap", count)
        into = tmp_path / f"set{count}"
        into.mkdir()
        tool(["editcap", "-F", "pcap", "-c", str(count // 2), str(whole), str(into / "part.pcap")])
        connections, _, peaks[count] = merge_peak(into)
        assert connections == count
    assert cli(["-f", "json", "--workers", "1", str(into)])[1] == cli(["-f", "json", str(whole)])[1]
    per_connection = (peaks[60_000] - peaks[10_000]) * 1024 / 50_000
    assert per_connection < 1.5 * 1024, per_connection

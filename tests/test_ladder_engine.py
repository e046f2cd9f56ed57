"""The ladder on the compiled engine draws exactly what the analyzer decided.

`synfin ladder --conn ID` finds its connections with the engine (collect.c)
and replays their frames alone through the reference pipeline
(analyzer/ladder_source.py). These tests hold that replay to the record
`synfin analyze -f json` writes for the same id:

* every connection of every sample and of the 480 crafted captures of
  tests/crafting.py (port reuse, timers run out by other connections' frames,
  time going backwards, damaged frames, filters' numbering): the replayed
  connection's whole JSON record equals the CLI's, the ladder's state marks
  on each line are the record's states history (state, time, frame), and its
  arrows are exactly the frames the connection was given, first to last;
* on the samples, the ladder equals the one the reference pipeline draws
  from the whole capture (`--engine reference`), and so do the CLI's outputs;
* reading stops early: a connection at the start of a 200,000-frame capture
  is drawn after reading a small part of it (frames counted, not time);
* unknown ids, standard input, filters and the default-pictures limit behave
  as they do on the reference path.

Dropping any part of the replay (the frame that finished a connection when it
was another's, the tick to the tracker's time before each frame, the final
tick, the end of input at the finish time) makes the crafted comparison fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import analyzer
from analyzer import engine, report
from analyzer.connection import Connection, Timeouts
from analyzer.ladder import Ladder, build
from analyzer.ladder_source import connections, find
from tests.crafting import crafted
from tests.engine_compare import run_cli
from tests.flood import ACK, RST, SERVER4, SYN, Seg, client4, write_pcap

pytestmark = pytest.mark.skipif(not engine.available(), reason="the compiled engine is not built")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPTURES = sorted(p for p in SAMPLES.glob("*") if p.suffix in (".pcap", ".pcapng"))
CRAFTED_SEEDS, CRAFTED_BATCHES = 480, 4


def records(capture: Path, options: list[str]) -> dict[int, dict]:
    """The connections `synfin analyze -f json --engine compiled` writes, by id."""
    out = run_cli(["analyze", "--engine", "compiled", "-f", "json", "--no-summary", *options, str(capture)])
    assert out.status in (0, 2), out.stderr
    return {r["id"]: r for r in map(json.loads, out.stdout.decode().splitlines())}


def timeouts(options: list[str]) -> Timeouts:
    given = dict(zip(options[::2], map(float, options[1::2]), strict=True))
    return Timeouts(msl=given.get("--msl", 30.0), idle=given.get("--idle-timeout", 900.0),
                    handshake=given.get("--handshake-timeout", 40.0))


def collected_frames(capture: Path, ids: list[int], limits: Timeouts) -> dict[int, list[int]]:
    """The frame numbers the engine gave each connection."""
    found = engine.collect(capture, ids, limits)
    return {conn_id: [f[0] for f in frames] for conn_id, frames in found["frames"].items()}


def as_json(record: dict) -> dict:
    return json.loads(json.dumps(record))


def disagreements(capture: Path, options: list[str]) -> list[str]:
    """Where the ladders of every connection of `capture` (found by the engine) differ from the records."""
    want = records(capture, options)
    if not want:
        return []
    limits = timeouts(options)
    found = find(capture, list(want), limits)
    given = collected_frames(capture, list(want), limits)
    problems = [] if [c.id for c in found.connections] == sorted(want) else [f"{capture.name}: ids differ"]
    for conn in found.connections:
        record = want[conn.id]
        where = f"{capture.name} ({' '.join(options) or 'default timing'}) connection {conn.id}"
        if as_json(report.record(conn)) != record:
            mine = as_json(report.record(conn))
            problems.append(f"{where}: record differs in {sorted(k for k in record if mine.get(k) != record[k])}")
        ladder = build(conn, "sequential", False, True)
        for side, client in (("client", True), ("server", False)):
            marks = [[m.state, m.ts, m.frame] for m in ladder.states if m.client == client]
            if marks != record["states"][side]:
                problems.append(f"{where}: the {side}'s states drawn {marks} != {record['states'][side]}")
        arrows = [a.frame for a in ladder.arrows]
        if arrows != given[conn.id] or arrows[0] != record["first_frame"] or arrows[-1] != record["last_frame"]:
            problems.append(f"{where}: arrows {arrows} != the connection's frames {given[conn.id]}")
        if len(arrows) != record["packets"]["client"] + record["packets"]["server"]:
            problems.append(f"{where}: {len(arrows)} arrows for {record['packets']} packets")
    return problems


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_sample_connection_is_drawn_as_analyzed(capture: Path) -> None:
    problems = disagreements(capture, [])
    assert not problems, "\n".join(problems[:10])


@pytest.mark.parametrize("batch", range(CRAFTED_BATCHES))
def test_every_crafted_connection_is_drawn_as_analyzed(tmp_path: Path, batch: int) -> None:
    """Seed 327 (port_reuse, a replayed connection) needs the finishing frame of another connection."""
    problems: list[str] = []
    per = CRAFTED_SEEDS // CRAFTED_BATCHES
    for seed in range(batch * per, (batch + 1) * per):
        made = crafted(seed)
        problems += [f"seed {seed}: {p}" for p in disagreements(made.write(tmp_path), made.options)]
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:10])


@cache
def reference_connections(capture: Path) -> dict[int, Connection]:
    return {c.id: c for c in analyzer.analyze(capture, keep_segments=True)}


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_sample_ladders_equal_the_reference_pipelines(capture: Path) -> None:
    """The whole Ladder (every arrow, block, gap, state and timer, with its place) as the reference draws it."""
    reference = reference_connections(capture)
    found = find(capture, list(reference), Timeouts())
    assert [c.id for c in found.connections] == sorted(reference)
    for conn in found.connections:
        for mode in ("proportional", "sequential"):
            mine: Ladder = build(conn, mode, False, False)
            assert mine == build(reference[conn.id], mode, False, False), (capture.name, conn.id, mode)


def test_cli_outputs_are_the_reference_paths(tmp_path: Path) -> None:
    capture = SAMPLES / "port_reuse.pcap"
    for form in (["--text"], ["--mermaid"], ["--text", "--time", "sequential", "--absolute"]):
        runs = {e: run_cli(["ladder", str(capture), "--conn", "1", "0", "--engine", e, *form])
                for e in ("compiled", "reference")}
        assert runs["compiled"].status == 0 and runs["compiled"].stdout
        assert runs["compiled"] == runs["reference"]
    svg = {e: run_cli(["ladder", str(capture), "--conn", "1", "--engine", e], tmp_path / f"{e}.svg").output
           for e in ("compiled", "reference")}
    assert svg["compiled"] is not None and svg["compiled"].count(b"<svg") == 1


# -- reading stops early -----------------------------------------------------------------------

FLOOD = 200_000


@pytest.fixture(scope="module")
def long_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Connection 0 (handshake, then the client resets: both ends CLOSED, finished 5 s later by the close
    linger) at the start, then 200,000 SYNs from other clients spread over 100 s."""
    start = 1_700_000_000_000_000
    client, server = client4(0), SERVER4
    first = [Seg(start, client, server, 5000, 80, SYN, 100),
             Seg(start + 10, server, client, 80, 5000, SYN | ACK, 900, 101),
             Seg(start + 20, client, server, 5000, 80, ACK, 101, 901),
             Seg(start + 30, client, server, 5000, 80, RST | ACK, 101, 901)]
    step = 100_000_000 // FLOOD
    flood = (Seg(start + 1000 + i * step, client4(i + 1), server, 1024 + i % 60000, 80, SYN, i * 7919)
             for i in range(FLOOD))
    return write_pcap(tmp_path_factory.mktemp("long") / "long.pcap", [*first, *flood])


def test_reading_stops_once_the_wanted_connections_finished(long_capture: Path) -> None:
    found = find(long_capture, [0], Timeouts())
    assert found.stopped
    # Finished at 5 s (about frame 10,000); the reading thread reads a few batches (4,096 each) ahead.
    assert found.frames_read < (FLOOD + 4) // 4
    (conn,) = found.connections
    assert (conn.id, conn.first_frame, conn.last_frame, conn.labels["close"]) == (0, 1, 4, "reset")
    assert conn.finished_at == pytest.approx(1_700_000_000.000030 + 5.0)
    whole = find(long_capture, [0], Timeouts(), stop_early=False)
    assert not whole.stopped and whole.frames_read == FLOOD + 4 and whole.count == FLOOD + 1
    assert report.record(whole.connections[0]) == report.record(conn)


PEAK = """
import sys
from analyzer.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as status_file:  # VmHWM, not ru_maxrss: a child's starts at its parent's
    print(next(line.split()[1] for line in status_file if line.startswith("VmHWM:")), file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.skipif(bool(os.environ.get("SYNFIN_SANITIZED")), reason="memory under ASan means nothing")
def test_an_early_connection_costs_little_memory(long_capture: Path) -> None:
    """Peak RSS of `synfin ladder --conn 0 --text`: 29 MB here (the reference pipeline over the whole capture:
    295 MB)."""
    done = subprocess.run([sys.executable, "-c", PEAK, "ladder", str(long_capture), "--conn", "0", "--text"],
                          capture_output=True, text=True, check=True)
    assert "RST+ACK" in done.stdout
    assert int(done.stderr.split()[-1]) < 100 * 1024  # KiB


# -- the command line ---------------------------------------------------------------------------------------


def test_an_unknown_id_lists_the_ids_there_are() -> None:
    capture = SAMPLES / "port_reuse.pcap"
    out = run_cli(["ladder", str(capture), "--conn", "0", "7", "--text", "--engine", "compiled"])
    assert out.status == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"synfin: {capture}: no connection 7; the connections there are 0-1"


def test_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    capture = SAMPLES / "port_reuse.pcap"
    want = run_cli(["ladder", str(capture), "--conn", "1", "--text"])
    piped = subprocess.run([sys.executable, "-m", "analyzer", "ladder", "-", "--conn", "1", "--text"],
                           stdin=capture.open("rb"), capture_output=True, check=True)
    assert piped.stdout == want.stdout and b"connection 1" in piped.stdout


@pytest.mark.skipif(not engine.filters_available(), reason="the engine was built without libpcap")
def test_filtered_ids_are_analyzes_filtered_ids() -> None:
    capture = next(p for p in CAPTURES if len(records(p, [])) > 20)
    port = records(capture, [])[7]["client"].rsplit(":", 1)[1]
    expression = f"tcp port {port}"
    want = records(capture, ["--filter", expression])
    found = find(capture, list(want), Timeouts(), expression)
    assert want and [as_json(report.record(c)) for c in found.connections] == [want[i] for i in sorted(want)]
    out = run_cli(["ladder", str(capture), "--filter", expression, "--conn", "0", "--text"])
    assert out.status == 0 and f":{port}" in out.stdout.decode()


def test_too_many_for_default_pictures(tmp_path: Path) -> None:
    capture = next(p for p in CAPTURES if len(records(p, [])) > 20)
    count = len(records(capture, []))
    runs = {e: run_cli(["ladder", str(capture), "--engine", e]) for e in ("compiled", "reference")}
    assert runs["compiled"] == runs["reference"]
    assert runs["compiled"].status == 2
    assert f"has {count} connections (0-{count - 1}): choose some" in runs["compiled"].stderr


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "reference"])
def test_connections_for_notebooks(monkeypatch: pytest.MonkeyPatch, compiled: bool) -> None:
    """ladder_source.connections: by id, with segments; the reference pipeline when the engine is not built."""
    capture = SAMPLES / "port_reuse.pcap"
    if not compiled:
        monkeypatch.setattr(engine, "available", lambda: False)
        monkeypatch.setattr(engine, "collect", None)  # never called
    got = connections(capture, [1, 0, 5])
    assert [c.id for c in got] == [0, 1]
    reference = reference_connections(capture)
    assert [build(c, "proportional", False, False) for c in got] == [
        build(reference[i], "proportional", False, False) for i in (0, 1)]

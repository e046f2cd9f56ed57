"""`synfin live` on a replayed capture: the live report labels every connection as `synfin analyze` of the file.

A sample capture made by real kernels (samples/busy.pcap: 3,280 frames, a few
hundred connections of every kind) is replayed with `tcpreplay --topspeed`
into a veth pair in a namespace of the test's own (tests/replay.py), `synfin
live -f json` listening on the far end. Nothing may be dropped, every frame
that passed the filter must be analyzed, and each connection's labels (open,
close, active closer, who reset) must be those `synfin analyze` gives the file.
This is the equality issue 14 asks of live mode at high rates; it runs on both
paths (`--engine compiled`, `--engine reference`), and the engine path alone
keeps up with busy.pcap replayed 30 times over at top speed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzer.engine import filters_available
from tests.replay import ReplayLink, analyze, differing, labels, link_for_test

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "busy.pcap"
SAMPLE_FRAMES = 3280  # capinfos -c samples/busy.pcap


@pytest.fixture()
def link() -> Iterator[ReplayLink]:
    yield from link_for_test()


@pytest.fixture(params=["compiled", "reference"])
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "compiled" and not filters_available():
        pytest.skip("the compiled engine was built without libpcap: no live capture in it")
    return str(request.param)


@pytest.mark.kernel
def test_top_speed_replay_labels_as_analyze(link: ReplayLink, tmp_path: Path, engine: str) -> None:
    expected = labels(analyze(SAMPLE))
    assert len(expected) > 100  # a test of many connections, not of none
    run = link.replay(SAMPLE, "top", ["--engine", engine], tmp_path)
    assert run.sent == SAMPLE_FRAMES
    assert run.dropped == 0
    assert run.analyzed == run.received == SAMPLE_FRAMES  # every frame of busy.pcap is TCP over Ethernet
    assert differing(expected, labels(run.records)) == []
    assert len(run.records) == len(expected)
    opened = [e for e in run.events if e["event"] == "open"]
    assert len(opened) == len(expected)  # one open event per connection, as the reference announces them



@pytest.mark.kernel
def test_engine_keeps_up_with_a_long_top_speed_replay(link: ReplayLink, tmp_path: Path) -> None:
    """busy.pcap 30 times over (98,400 frames) at top speed: the engine path drops none, analyzes every one,
    and reports exactly what `synfin analyze` gives its -w file (the same 4-tuples and sequence numbers come back
    each round: to the analyzer, retransmissions and segments of connections long closed)."""
    if not filters_available():
        pytest.skip("the compiled engine was built without libpcap: no live capture in it")
    written = tmp_path / "written.pcap"
    run = link.replay(SAMPLE, "top", ["--engine", "compiled", "-w", str(written)], tmp_path, loops=30)
    assert run.sent == 30 * SAMPLE_FRAMES
    assert run.dropped == 0 and run.analyzed == run.received == run.sent
    assert run.records == analyze(written)
    assert len(run.records) > 300


@pytest.mark.kernel
def test_interface_deleted_while_running(link: ReplayLink, tmp_path: Path, engine: str) -> None:
    """The veth is deleted under a running capture: the report of what was read, then one line why; status 1."""
    written = tmp_path / "written.pcap"
    expected = labels(analyze(SAMPLE))
    run = link.replay(SAMPLE, "top", ["--engine", engine, "-w", str(written)], tmp_path,
                      stop=lambda _: subprocess.run(link.exec("ip", "link", "del", "r0"), check=True), status=1)
    assert run.err.strip().splitlines()[-1] == "synfin live: stopped: the interface r1 disappeared"
    assert run.analyzed == SAMPLE_FRAMES and run.dropped == 0
    assert differing(expected, labels(run.records)) == []  # the whole report of what was read
    assert analyze(written) == run.records  # and the -w file was closed whole: it reads back to the same


@pytest.mark.kernel
def test_interface_set_down_while_running(link: ReplayLink, tmp_path: Path, engine: str) -> None:
    """The veth is set down under a running capture: the report of what was read, one line why; status 1."""
    written = tmp_path / "written.pcap"
    run = link.replay(SAMPLE, "top", ["--engine", engine, "-w", str(written)], tmp_path,
                      stop=lambda _: subprocess.run(link.exec("ip", "link", "set", "r1", "down"), check=True), status=1)
    assert run.err.strip().splitlines()[-1] == "synfin live: stopped: the interface r1 went down"
    assert run.analyzed == SAMPLE_FRAMES and run.dropped == 0
    assert differing(labels(analyze(SAMPLE)), labels(run.records)) == []
    assert analyze(written) == run.records

"""`synfin live` on the compiled engine prints, for the frames it read, exactly what the reference path prints.

Every Ethernet sample capture (kernel-made and crafted: handshakes, every
close, resets, simultaneous open and close, port reuse, IPv6, VLAN tags,
mid-connection starts, lost and reordered segments, tunnels) is joined into
one file (`mergecap -a`) and replayed with `tcpreplay --topspeed` into a veth
pair (tests/replay.py), `synfin live --engine compiled -w FILE` listening.
The events it printed, text and JSON, must be byte for byte what the reference
pipeline's EventWatcher prints for the frames of FILE (tests/replay.py's
reference_events, which drives them as live_cli.Session does), and its final
report what `synfin analyze FILE` writes. Live timestamps are the kernel's, so
the -w file, not the sample, is what both must agree on; the replay takes a few
milliseconds, far inside every timer, so the wall clock finishes nothing early.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzer import engine
from analyzer.capture import read_frames
from analyzer.live import DEFAULT_FILTERS
from analyzer.pipeline import Stats
from analyzer.pipeline import analyze as analyze_frames
from tests.replay import ReplayLink, analyze, link_for_test, reference_events

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture()
def link() -> Iterator[ReplayLink]:
    if not engine.filters_available():
        pytest.skip("the compiled engine was built without libpcap: no live capture in it")
    yield from link_for_test("mergecap")


def ethernet_samples() -> list[Path]:
    """The sample captures whose frames are Ethernet (what a veth carries), in name order."""
    found = []
    for path in sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")]):
        if all(getattr(frame, "linktype", None) == 1 for frame in read_frames(path)):
            found.append(path)
    return found


def matching(path: Path) -> int:
    """The frames of `path` that synfin live's default filter passes (tunnelled TCP in UDP does not)."""
    stats = Stats()
    deque(analyze_frames(path, stats=stats, bpf=DEFAULT_FILTERS[False]), maxlen=0)
    return stats.frames


@pytest.fixture(scope="module")
def all_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = ethernet_samples()
    assert len(samples) > 30  # a test of every kind of connection, not of a few
    joined = tmp_path_factory.mktemp("samples") / "all.pcap"
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(joined), *map(str, samples)], check=True,
                   capture_output=True)
    return joined


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_events_as_the_reference_prints_them(link: ReplayLink, all_samples: Path, tmp_path: Path, fmt: str) -> None:
    written = tmp_path / "written.pcap"
    run = link.replay(all_samples, "top", ["--engine", "compiled", "-f", fmt, "-w", str(written)], tmp_path)
    assert run.dropped == 0 and run.analyzed == run.received == matching(all_samples)
    expected = reference_events(written, fmt)
    assert expected.count("\n") > 500
    assert run.out.startswith(expected)  # the events, byte for byte, then the report
    report = run.out[len(expected):]
    if fmt == "json":
        assert run.records == analyze(written)
        return
    analyzed = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(written)], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    table, _, summary = analyzed.partition(f"{written}:")
    assert table.count("\n") > 100 and report.startswith(table)
    assert report[len(table):].startswith("r1 (live):" + summary)  # then the kernel's line
    assert report.rstrip("\n").splitlines()[-1].startswith("  kernel: ")


@pytest.mark.kernel
@pytest.mark.parametrize("engine_name", ["compiled", "reference"])
def test_loopback_counts_each_packet_once(tmp_path: Path, engine_name: str) -> None:
    """On lo every packet passes twice (out and back in): both paths analyze it once, and the kernel counts it
    once as passing the filter (PACKET_IGNORE_OUTGOING), so nothing shows as left unread."""
    if os.geteuid() != 0:
        pytest.skip("needs root (packet capture)")
    if engine_name == "compiled" and not engine.filters_available():
        pytest.skip("the compiled engine was built without libpcap: no live capture in it")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    err_path = tmp_path / "err"
    with open(err_path, "w") as err, listener:
        sniffer = subprocess.Popen([sys.executable, "-m", "analyzer", "live", "-i", "lo", "--engine", engine_name,
                                    "-f", "json", f"tcp port {port}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                   text=True)
        try:
            deadline = time.monotonic() + 30
            while "listening on" not in err_path.read_text():
                assert sniffer.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.05)
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port)) as client:
                    accepted, _ = listener.accept()
                    client.sendall(b"ping")
                    assert accepted.recv(4) == b"ping"
                    accepted.close()
            time.sleep(0.5)
            sniffer.send_signal(signal.SIGTERM)
            out, _ = sniffer.communicate(timeout=30)
        finally:
            if sniffer.poll() is None:
                sniffer.kill()
                sniffer.wait()
    assert sniffer.returncode == 0
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"id"')]
    assert [record["open"] for record in records] == ["handshake"] * 3
    kernel = re.search(r"kernel: (\d+) frames passed the filter, 0 dropped, (\d+) analyzed\n", err_path.read_text())
    assert kernel is not None, err_path.read_text()
    assert kernel.group(1) == kernel.group(2) == str(sum(r["packets"]["client"] + r["packets"]["server"]
                                                          for r in records))

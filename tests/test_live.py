"""`synfin live` on real traffic: namespaces of our own, real sockets, no mocks.

The sniffer runs in the background inside the server namespace; the client
namespace makes one connection of each kind (normal close, refused, reset by
SO_LINGER 0, half-close with data after SHUT_WR). Each run checks the events
and the final report against what the client did, and that the `-w` capture
analyzes to the very same records. User errors (no such interface, a bad
filter, no CAP_NET_RAW) give one sentence and no traceback. Every test runs
on both paths (`--engine compiled` and `--engine reference`).
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from analyzer.cli import main
from analyzer.engine import filters_available
from tests.netns import SERVER_ADDR, NetnsPair, set_up_for_test

ROOT = Path(__file__).resolve().parent.parent
TRAFFIC = str(Path(__file__).with_name("livetraffic.py"))
EXPECTED = {  # kind -> labels of the final report
    "normal": {"open": "handshake", "close": "four-way", "active_closer": "client",
               "half_close": False, "reset_by": None},
    "refused": {"open": "refused", "close": "none", "reset_by": "server"},
    "reset": {"open": "handshake", "close": "reset", "reset_by": "client",
              "reset_state": "ESTABLISHED"},
    "half_close": {"open": "handshake", "close": "four-way", "active_closer": "client",
                   "half_close": True},
}


# -- the network ---------------------------------------------------------------

@pytest.fixture(params=["compiled", "reference"])
def engine(request: pytest.FixtureRequest) -> str:
    """Each test on both live paths: the compiled engine on libpcap's ring, the reference on a packet socket."""
    if request.param == "compiled" and not filters_available():
        pytest.skip("the compiled engine was built without libpcap: no live capture in it")
    return str(request.param)


@pytest.fixture(scope="module")
def net() -> Iterator[NetnsPair]:
    yield from set_up_for_test(NetnsPair, "live capture tests", "network namespaces")


@pytest.fixture(scope="module")
def server(net: NetnsPair) -> Iterator[None]:
    proc = subprocess.Popen(net.exec(net.server, sys.executable, TRAFFIC, "serve", SERVER_ADDR),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert _line(proc.stdout, 10) == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing within {timeout} s"
    return stream.readline().strip()


def client(net: NetnsPair, *args: str) -> dict[str, int]:
    result = subprocess.run(net.exec(net.client, sys.executable, TRAFFIC, *args, SERVER_ADDR),
                            capture_output=True, text=True, timeout=20, check=True)
    return json.loads(result.stdout)


# -- the sniffer ---------------------------------------------------------------

class Lines:
    """A pipe read line by line in a thread, so a wait for the next line can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, timeout: float) -> str:
        line = self.queue.get(timeout=timeout)
        assert line is not None, "the stream ended"
        self.seen.append(line)
        return line.strip()

    def rest(self) -> str:
        self._thread.join(timeout=15)
        while (line := self.queue.get_nowait()) is not None:
            self.seen.append(line)
        return "".join(self.seen)


class Sniffer:
    """`synfin live` in the background in the server namespace."""

    def __init__(self, net: NetnsPair, engine: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "analyzer", "live", "--engine", engine, *args]
        self.proc = subprocess.Popen(net.exec(net.server, *cmd), cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out, self.err = Lines(self.proc.stdout), Lines(self.proc.stderr)
        try:
            first = self.err.next(15)
        except queue.Empty:
            first = "(nothing)"
        assert first.startswith("synfin: listening on"), first + self.err.rest()

    def wait(self, timeout: float = 15) -> tuple[str, str]:
        """Wait for it to stop (by itself or on SIGTERM); its output."""
        self.proc.wait(timeout=timeout)
        out, err = self.out.rest(), self.err.rest()
        assert self.proc.returncode == 0, err
        assert "Traceback" not in out + err
        return out, err

    def stop(self, timeout: float = 15) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def split(out: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSON Lines output: (events, final records)."""
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [x for x in lines if "event" in x], [x for x in lines if "event" not in x]


def by_client_port(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["client"].rsplit(":", 1)[1]): r for r in records}


def analyze_json(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(path), "--format", "json",
                             "--no-summary"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- the tests -----------------------------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("iface", ["s0", "any"])
def test_every_kind_of_connection_reported(net: NetnsPair, server: None, tmp_path: Path, iface: str,
                                           engine: str) -> None:
    pcap = tmp_path / "live.pcap"
    sniffer = Sniffer(net, engine, "-i", iface, "--format", "json", "-w", str(pcap), "tcp", "port", "8001",
                      "or", "port", "8002", "or", "port", "8003", "or", "port", "8009")
    try:
        ports = client(net, "kinds")
        out, err = sniffer.stop()
    finally:
        sniffer.kill()
    events, records = split(out)
    conns = by_client_port(records)
    assert len(records) == len(ports) == len(conns), records
    for kind, port in ports.items():
        got = conns[port]
        assert {key: got[key] for key in EXPECTED[kind]} == EXPECTED[kind], (kind, got)
        _check_events(events, got)
    assert sorted(analyze_json(pcap), key=lambda r: r["id"]) == sorted(records, key=lambda r: r["id"])
    assert "frames passed the filter, 0 dropped" in err


def _check_events(events: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """One open, one close with the record's labels; the state events replay the histories."""
    mine = [e for e in events if e["id"] == record["id"]]
    opens = [e for e in mine if e["event"] == "open"]
    closes = [e for e in mine if e["event"] == "close"]
    assert [e["open"] for e in opens] == [record["open"]]
    assert closes and all(closes[-1][key] == record[key] for key in
                          ("close", "half_close", "active_closer", "reset_by", "reset_state"))
    for role in ("client", "server"):
        states = [e["to"] for e in mine if e["event"] == "state" and e["role"] == role]
        assert states == [state for state, _, _ in record["states"][role]], (role, mine)
        durations = [e["after"] for e in mine if e["event"] == "state" and e["role"] == role]
        assert all(d is None or d >= 0 for d in durations)


@pytest.mark.kernel
def test_events_are_flushed_as_they_happen(net: NetnsPair, server: None, engine: str) -> None:
    sniffer = Sniffer(net, engine, "-i", "s0", "--format", "json", "--no-summary", "port", "8009")
    try:
        port = client(net, "kinds")["refused"]
        seen = []
        deadline = time.monotonic() + 10
        while not any(e.get("event") == "close" for e in seen) and time.monotonic() < deadline:
            seen.append(json.loads(sniffer.out.next(10)))
        assert sniffer.proc.poll() is None, "the sniffer should still be running"
        assert [e["event"] for e in seen] == ["state", "state", "open", "close"]
        assert seen[0]["endpoint"].endswith(f":{port}") and seen[2]["open"] == "refused"
        sniffer.stop()
    finally:
        sniffer.kill()


@pytest.mark.kernel
def test_text_events_and_the_analyze_report(net: NetnsPair, server: None, tmp_path: Path, engine: str) -> None:
    pcap = tmp_path / "text.pcap"
    sniffer = Sniffer(net, engine, "-i", "s0", "-w", str(pcap), "port", "8001")
    try:
        port = client(net, "kinds")["normal"]
        out, _ = sniffer.stop()
    finally:
        sniffer.kill()
    assert f"opened 10.88.0.1:{port} > {SERVER_ADDR}:8001: handshake" in out
    assert f"10.88.0.1:{port} FIN_WAIT_1 -> FIN_WAIT_2 after " in out
    assert f"closed 10.88.0.1:{port} > {SERVER_ADDR}:8001: four-way, closed by client" in out
    analyzed = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(pcap)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True).stdout
    table = analyzed.split(f"{pcap}:")[0]  # the per-connection table, before the summary
    assert table in out and table.count("\n") >= 2


@pytest.mark.kernel
def test_count_stops_it(net: NetnsPair, server: None, engine: str) -> None:
    sniffer = Sniffer(net, engine, "-i", "s0", "-c", "3", "--format", "json", "port", "8001")
    try:
        client(net, "kinds")
        out, err = sniffer.wait()  # stops by itself
    finally:
        sniffer.kill()
    assert "3 analyzed" in err
    _, records = split(out)
    assert [r["open"] for r in records] == ["handshake"] and records[0]["close"] == "open"


@pytest.mark.kernel
def test_idle_connections_are_finished_while_running(net: NetnsPair, server: None, engine: str) -> None:
    sniffer = Sniffer(net, engine, "-i", "s0", "--format", "json", "--idle-timeout", "0.5", "--duration", "8",
                      "port", "8001")
    holder = subprocess.Popen(net.exec(net.client, sys.executable, TRAFFIC, "idle", SERVER_ADDR, "3"),
                              stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(_line(holder.stdout, 10))["idle"]
        closes: list[dict[str, Any]] = []
        while not closes:
            event = json.loads(sniffer.out.next(5))
            closes += [event] if event.get("event") == "close" else []
        assert holder.poll() is None, "the connection should still be open"
        assert closes[0]["client"].endswith(f":{port}") and closes[0]["close"] == "open"
    finally:
        holder.kill()
        holder.wait(timeout=10)
        sniffer.kill()


@pytest.mark.kernel
def test_summary_table(net: NetnsPair, server: None, engine: str) -> None:
    sniffer = Sniffer(net, engine, "-i", "s0", "--summary", "--duration", "1.5", "port", "8001")
    try:
        client(net, "kinds")
        out, _ = sniffer.wait()
    finally:
        sniffer.kill()
    assert "open connections" in out and "opens" in out and "resets" in out
    assert "handshake" in out  # the final report follows


@pytest.mark.kernel
def test_without_cap_net_raw(tmp_path: Path, engine: str) -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop the capability")
    cmd = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
           sys.executable, "-m", "analyzer", "live", "--engine", engine, "-i", "lo", "--duration", "1"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "CAP_NET_RAW" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def run_cli(capsys: pytest.CaptureFixture[str], engine: str, *args: str) -> tuple[int, str]:
    status = main(["live", "--engine", engine, *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.err


def test_unknown_interface_lists_the_interfaces(capsys: pytest.CaptureFixture[str], engine: str) -> None:
    status, err = run_cli(capsys, engine, "-i", "nosuch0")
    assert status == 2
    assert "no interface named 'nosuch0'" in err and "lo" in err and "any" in err


def test_bad_filter(capsys: pytest.CaptureFixture[str], engine: str) -> None:
    status, err = run_cli(capsys, engine, "-i", "lo", "tcp", "portt", "80")
    assert status == 2 and "bad filter 'tcp portt 80'" in err and "syntax error" in err

"""A capture replayed into a veth pair with `tcpreplay`, `synfin live` on the other end; for tests and benchmarks.

    [namespace synfin-replay-<pid>-<n>]  r0 (tcpreplay sends) ==== veth ==== r1 (synfin live -f json)

The namespace has no addresses, so nothing in it answers the replayed frames;
offloads are off and the MTU is 9000, so r1 sees the file's frames as they are.
`replay` starts `synfin live`, waits until it listens, replays the capture at a
rate (frames/s, or "top": tcpreplay --topspeed), waits until the live output
has stopped growing (what the kernel queued has been read), stops synfin
with SIGTERM and returns what it reported, with its resident memory sampled
along the way. `labels` keys each connection by (client, server, how many
times the pair came before), since live timestamps are the kernel's, not the
capture's, so a live report and `synfin analyze` of the file can be compared.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from analyzer.capture import read_frames
from analyzer.connection import Timeouts
from analyzer.events import EventWatcher, event_json, format_event
from analyzer.pipeline import Options, Pipeline, Stats
from tests.netns import NetnsError, run_command, set_up_for_test

ROOT = Path(__file__).resolve().parent.parent
LABEL_KEYS = ("open", "close", "active_closer", "reset_by")
KERNEL_LINE = re.compile(r"kernel: (\d+) frames passed the filter, (\d+) dropped, (\d+) analyzed")
SETTLE_SECONDS = 1.5  # the live output has not grown this long: synfin has read everything
RSS_EVERY = 0.2
_counter = itertools.count(1)

Key = tuple[str, str, int]
Record = dict[str, Any]


class ReplayError(NetnsError):
    """tcpreplay or synfin live failed; the message says how (setting up the link fails with NetnsError)."""


@dataclass
class LiveRun:
    sent: int                 # frames tcpreplay sent
    seconds: float            # how long tcpreplay took to send them (its own "Actual: ... sent in" figure)
    received: int             # frames that passed the filter (the kernel's count)
    dropped: int              # ... and that the kernel dropped
    analyzed: int             # frames synfin read
    records: list[Record]     # the final report
    events: list[Record]
    err: str                  # what synfin wrote to standard error
    rss_kb: list[int] = field(default_factory=list)  # synfin's VmRSS, every RSS_EVERY seconds
    out: str = ""             # what synfin wrote to standard output, as it is
    cpu_seconds: float = 0.0  # synfin's CPU time (user + system) from listening to the end of the replay


def labels(records: list[Record]) -> dict[Key, tuple[Any, ...]]:
    """Each connection's labels, keyed by its pair and how many times the pair came before."""
    seen: Counter[tuple[str, str]] = Counter()
    found: dict[Key, tuple[Any, ...]] = {}
    for record in records:
        pair = (str(record["client"]), str(record["server"]))
        found[(*pair, seen[pair])] = tuple(record[key] for key in LABEL_KEYS)
        seen[pair] += 1
    return found


def differing(expected: dict[Key, tuple[Any, ...]], got: dict[Key, tuple[Any, ...]]) -> list[Key]:
    """The connections of `expected` missing from `got` or labelled otherwise there."""
    return [key for key, value in expected.items() if got.get(key) != value]


def analyze(path: Path) -> list[Record]:
    done = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(path), "-f", "json", "--no-summary"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def reference_events(path: Path, fmt: str) -> str:
    """The events the reference live path prints for the frames of `path` (a live run's -w file), as
    live_cli.Session makes them: the Pipeline, an EventWatcher on it, every finished connection announced."""
    line = event_json if fmt == "json" else format_event
    lines: list[str] = []
    watcher = EventWatcher(lambda event: lines.append(line(event) + "\n"))
    pipeline = Pipeline(Stats(), Options(Timeouts()), watcher.on_segment)
    for frame in read_frames(path):
        for conn in pipeline.feed(frame):
            watcher.finished(conn)
    for conn in pipeline.close():
        watcher.finished(conn)
    return "".join(lines)


class ReplayLink:
    """The namespace and its veth pair; removed however the `with` block ends."""

    def __init__(self) -> None:
        self.ns = f"synfin-replay-{os.getpid()}-{next(_counter)}"

    def __enter__(self) -> ReplayLink:
        try:
            for cmd in (["ip", "netns", "add", self.ns],
                        ["ip", "-n", self.ns, "link", "add", "r0", "mtu", "9000", "type", "veth",
                         "peer", "name", "r1", "mtu", "9000"],
                        ["ip", "-n", self.ns, "link", "set", "r0", "up"],
                        ["ip", "-n", self.ns, "link", "set", "r1", "up"]):
                run_command(cmd)
            for dev in ("r0", "r1"):
                run_command(self.exec("ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=20, check=False)

    def replay(self, capture: Path, rate: str, live: list[str], tmp: Path,
               stop: Callable[[subprocess.Popen[bytes]], None] | None = None, status: int = 0,
               loops: int = 1, preload: bool = False, keep_events: bool = True) -> LiveRun:
        """Replay `capture` at `rate` (`loops` times over; `preload`: read into memory first, tcpreplay -K, which
        sends faster) with `synfin live -i r1 -f json LIVE...` listening; what it reported (without
        `keep_events`, only its final report and counts: a long replay prints gigabytes of events).

        Once it has read everything, `stop` ends it (default: SIGTERM); it must exit with `status`."""
        out_path, err_path = tmp / "live.out", tmp / "live.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            sniffer = subprocess.Popen(self.exec(sys.executable, "-m", "analyzer", "live", "-i", "r1", "-f", "json",
                                                 *live), cwd=ROOT, stdout=out, stderr=err)
            try:
                _wait_listening(err_path, sniffer)
                rss = [_rss(sniffer.pid)]
                cpu = _cpu_seconds(sniffer.pid)
                sent, seconds = self._tcpreplay(capture, rate, sniffer.pid, rss, loops, preload)
                _settle(out_path, sniffer.pid, rss)
                cpu = _cpu_seconds(sniffer.pid) - cpu
                (stop or _terminate)(sniffer)
                sniffer.wait(timeout=600)
            finally:
                if sniffer.poll() is None:
                    sniffer.kill()
                    sniffer.wait()
        text = err_path.read_text()
        records, events, printed, kernel = _read_output(out_path, keep_events)
        counts = KERNEL_LINE.search(text) or KERNEL_LINE.search(kernel)  # -f text: the summary is on stdout
        if sniffer.returncode != status or counts is None or "Traceback" in text:
            raise ReplayError(f"synfin live failed (status {sniffer.returncode}): {text.strip()[-800:]}")
        received, dropped, analyzed = (int(x) for x in counts.groups())
        return LiveRun(sent, seconds, received, dropped, analyzed, records, events, text, [kb for kb in rss if kb],
                       printed, cpu)

    def _tcpreplay(self, capture: Path, rate: str, pid: int, rss: list[int], loops: int = 1,
                   preload: bool = False) -> tuple[int, float]:
        speed = ["--topspeed"] if rate == "top" else [f"--pps={rate}"]
        speed += ([f"--loop={loops}"] if loops > 1 else []) + (["--preload-pcap"] if preload else [])
        start = time.monotonic()
        replay = subprocess.Popen(self.exec("tcpreplay", "-q", "-i", "r0", *speed, str(capture)),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while replay.poll() is None:
            rss.append(_rss(pid))
            time.sleep(RSS_EVERY)
        seconds = time.monotonic() - start
        report = replay.communicate()[0]
        sent = re.search(r"Successful packets:\s+(\d+)", report)
        if replay.returncode != 0 or sent is None:
            raise ReplayError(f"tcpreplay failed: {report.strip()[-500:]}")
        sending = re.search(r"Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds", report)
        return int(sent.group(1)), float(sending.group(1)) if sending else seconds


def link_for_test(*tools: str) -> Iterator[ReplayLink]:
    """A fixture's body: a ReplayLink for one test, closed after it; the test skipped, saying why, where
    namespaces, tcpreplay, ethtool or `tools` are missing."""
    yield from set_up_for_test(ReplayLink, "replay tests", "the replay namespace", "tcpreplay", "ethtool", *tools)


def _read_output(path: Path, keep_events: bool) -> tuple[list[Record], list[Record], str, str]:
    """The JSON records and (with `keep_events`) events of a live run's output, read line by line; the output
    as it is (only with `keep_events`), and its last kernel line ("" if none)."""
    records: list[Record] = []
    events: list[Record] = []
    kept: list[str] = []
    kernel = ""
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if keep_events:
                kept.append(line)
            if line.startswith('{"event"'):
                if keep_events:
                    events.append(json.loads(line))
            elif line.startswith("{"):
                records.append(json.loads(line))
            elif line.startswith("  kernel: "):
                kernel = line
    return records, events, "".join(kept), kernel


def _terminate(sniffer: subprocess.Popen[bytes]) -> None:
    sniffer.send_signal(signal.SIGTERM)


def _wait_listening(err_path: Path, sniffer: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while "listening on" not in err_path.read_text():
        if sniffer.poll() is not None or time.monotonic() > deadline:
            raise ReplayError(f"synfin live did not start: {err_path.read_text().strip()}")
        time.sleep(0.05)


def _settle(out_path: Path, pid: int, rss: list[int]) -> None:
    """Wait until the live output has stopped growing: what the kernel queued has been read."""
    size, since = -1, time.monotonic()
    while time.monotonic() - since < SETTLE_SECONDS:
        now = out_path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        rss.append(_rss(pid))
        time.sleep(RSS_EVERY)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, in seconds (/proc/PID/stat's utime and stime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    """VmRSS of `pid` in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

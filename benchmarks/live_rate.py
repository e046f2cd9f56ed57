"""How fast can `synfin live` keep up? Steady connection rates, stepped up, until it misses one.

    sudo python benchmarks/live_rate.py [--seconds 3] [--rates 250,500,...] [--format json]
                                        [--engine auto|compiled|reference]

A client namespace opens and closes connections at a steady rate to a server
namespace across a veth pair (see tests/netns.py); `synfin live -i s0` runs in
the server namespace, events going to a file as they would to a terminal or a
pipe. After each step the final report is checked against the generator's
own count: every connection must be there, labelled handshake and
four-way/three-way, closed by the client. The table shows each step; the
answer is the highest rate with nothing missed or mislabelled.

Each connection is connect(), then close() (the server closes when it reads
the end): 6-7 frames. The generator, the server and the sniffer share this
machine's cores, so the figure is for this machine and this load.
Bounded: a step lasts `--seconds`, and the run stops at the first failing step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns import SERVER_ADDR, NetnsPair  # noqa: E402

PORTS = range(9000, 9008)
DEFAULT_RATES = "250,500,1000,1500,2000,2500,3000,4000,6000"
GOOD_CLOSES = ("four-way", "three-way")


# -- the two ends of the traffic (run inside the namespaces) ------------------

def serve(addr: str) -> None:
    """Accept on every port; close each connection when its client has closed."""
    sel = selectors.DefaultSelector()
    for port in PORTS:
        listener = socket.create_server((addr, port), backlog=4096)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, "listen")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "listen":
                _accept(sel, sock)
            else:
                _read(sel, sock)


def _accept(sel: selectors.BaseSelector, listener: socket.socket) -> None:
    for _ in range(64):
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, "conn")


def _read(sel: selectors.BaseSelector, conn: socket.socket) -> None:
    try:
        data = conn.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        sel.unregister(conn)
        conn.close()


def generate(addr: str, rate: float, seconds: float) -> None:
    """Open and close connections at `rate` per second; print how many were made, and when."""
    total = int(rate * seconds)
    made = failed = 0
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            sock = socket.create_connection((addr, PORTS[i % len(PORTS)]), timeout=5)
            sock.close()
            made += 1
        except OSError:
            failed += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"made": made, "failed": failed, "seconds": elapsed}), flush=True)


# -- the driver ----------------------------------------------------------------

@dataclass
class Step:
    rate: float
    made: int
    seconds: float
    records: int
    good: int
    frames: int
    dropped: int
    unread: int
    stop_seconds: float

    @property
    def achieved(self) -> float:
        return self.made / self.seconds

    @property
    def ok(self) -> bool:
        return self.good == self.made == self.records


def run_step(net: NetnsPair, rate: float, seconds: float, fmt: str, buffer_mib: int, engine: str) -> Step:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        sniffer = subprocess.Popen(
            net.exec(net.server, sys.executable, "-m", "analyzer", "live", "-i", net.server_if,
                     "--format", fmt, "-B", str(buffer_mib), "--engine", engine, "tcp"),
            cwd=ROOT, stdout=out, stderr=err, text=True)
        try:
            _wait_listening(err)
            gen = subprocess.run(net.exec(net.client, sys.executable, __file__, "generate", SERVER_ADDR,
                                          str(rate), str(seconds)),
                                 capture_output=True, text=True, timeout=seconds * 10 + 30, check=True)
            time.sleep(0.5)
            stopped = time.monotonic()
            sniffer.send_signal(signal.SIGTERM)
            sniffer.wait(timeout=120)
            stop_seconds = time.monotonic() - stopped
        finally:
            if sniffer.poll() is None:
                sniffer.kill()
                sniffer.wait()
        made = json.loads(gen.stdout)
        out.seek(0)
        err.seek(0)
        return _tally(rate, made, out.read(), err.read(), fmt, stop_seconds)


def _wait_listening(err: object) -> None:
    assert hasattr(err, "seek") and hasattr(err, "read")
    for _ in range(300):
        err.seek(0)
        if "listening on" in err.read():
            return
        time.sleep(0.05)
    raise RuntimeError("synfin live did not start")


def _tally(rate: float, made: dict[str, float], out: str, err: str, fmt: str, stop_seconds: float) -> Step:
    text = out + err  # the summary goes to stdout with text events, to stderr with JSON
    kernel = re.search(r"kernel: (\d+) frames passed the filter, (\d+) dropped", text)
    if kernel is None:
        raise RuntimeError(f"no kernel line in the sniffer's output:\n{err[-2000:]}")
    unread = re.search(r"(\d+) left unread at the stop", text)
    if fmt == "json":
        records = [r for r in map(json.loads, out.splitlines()) if "event" not in r]
        good = sum(r["open"] == "handshake" and r["close"] in GOOD_CLOSES
                   and r["active_closer"] == "client" for r in records)
        count = len(records)
    else:
        summary = re.search(r"(\d+) connections \(", out)
        count = int(summary.group(1)) if summary else -1
        good = len(re.findall(r"handshake\s+(?:four-way|three-way)\s+client", out))
    return Step(rate, int(made["made"]), made["seconds"], count, good,
                int(kernel.group(1)), int(kernel.group(2)), int(unread.group(1)) if unread else 0,
                stop_seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step (default 5)")
    parser.add_argument("--rates", default=DEFAULT_RATES, help="connections/s, comma-separated")
    parser.add_argument("--buffer", type=int, default=2, metavar="MiB",
                        help="the sniffer's kernel buffer (default 2, as tcpdump's): small, so a "
                             "sniffer that falls behind drops within a step instead of catching up after")
    parser.add_argument("--format", choices=("json", "text"), default="json",
                        help="event format of the sniffer (default json)")
    parser.add_argument("--engine", choices=("auto", "compiled", "reference"), default="auto",
                        help="synfin live --engine (default auto: the compiled engine when built with libpcap)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("live_rate: needs root (network namespaces, packet capture)", file=sys.stderr)
        return 2
    best: Step | None = None
    print(f"{'target/s':>9} {'made/s':>8} {'made':>7} {'reported':>8} {'right':>7} "
          f"{'frames/s':>9} {'dropped':>7} {'unread':>6} {'stop s':>6}  verdict", flush=True)
    with NetnsPair() as net:
        subprocess.run(net.exec(net.client, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"), check=True)
        server = subprocess.Popen(net.exec(net.server, sys.executable, __file__, "serve", SERVER_ADDR),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            for rate in (float(r) for r in args.rates.split(",")):
                step = run_step(net, rate, args.seconds, args.format, args.buffer, args.engine)
                _print(step)
                if not step.ok:
                    break
                best = step
        finally:
            server.kill()
            server.wait()
    if best is None:
        print("no step passed")
        return 1
    print(f"\nhighest rate with nothing missed or mislabelled: {best.achieved:.0f} connections/s, "
          f"{best.frames / best.seconds:.0f} frames/s ({args.seconds:g} s steps, events as {args.format}, "
          f"{args.buffer} MiB buffer)")
    return 0


def _print(step: Step) -> None:
    verdict = "ok" if step.ok else (
        f"MISSED {step.made - step.good}" if step.good < step.made else "EXTRA/MISLABELLED")
    if step.dropped:
        verdict += f", kernel dropped {step.dropped}"
    if step.unread:
        verdict += f", fell behind: {step.unread} unread at the stop"
    print(f"{step.rate:>9.0f} {step.achieved:>8.0f} {step.made:>7} {step.records:>8} {step.good:>7} "
          f"{step.frames / step.seconds:>9.0f} {step.dropped:>7} {step.unread:>6} {step.stop_seconds:>6.1f}"
          f"  {verdict}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "generate":
        generate(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(main())

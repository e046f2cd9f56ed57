"""Make the big benchmark capture of issue 6 with real traffic (run as root).

    python benchmarks/make_capture.py [--connections 250000] [--out /tmp/synfin-bench]
                                      [--ipv6] [--vlan] [--pcapng] [--scale]

Two throw-away network namespaces joined by a veth pair (offloads off, so the
frames are wire-size segments)::

    [synfin-bench-<pid>-c] c0 10.99.0.1/24 fd99::1/64 ==veth== s0 10.99.0.2/24 fd99::2/64 [synfin-bench-<pid>-s]

Several server worker processes (asyncio, SO_REUSEPORT) listen in the server
namespace, several client worker processes open the connections, many at a
time, and ``tcpdump -i c0 -s 128 --immediate-mode -U -w FILE`` records in the
client namespace (Ethernet, snaplen 128; ``-B`` enlarges its kernel buffer so
that it drops nothing). The kind of each connection is told by its server
port (see ``KINDS``), so every kind can be counted in any tool's output. The
client namespace has ``net.ipv4.tcp_tw_reuse=1`` and ports 1024-65535 (9000-9009
reserved: only servers use them), so
ephemeral ports wrap and 4-tuples are reused, as in a real busy capture.

Files written to ``--out`` (never into the repository):

- ``bench.pcap``: IPv4 traffic; ``bench.manifest.json``: per kind the planned,
  completed and failed connections, tcpdump's own counters, and a scan of the
  file (packets, SYN/SYN-ACK/FIN/RST per port, reused 4-tuples, timestamps
  that step backwards).
- ``--ipv6``: ``bench-ipv6.pcap`` (+ manifest), a second real run, same plan, over fd99::/64.
- ``--vlan``: ``bench-vlan.pcap``, *rewritten* from ``bench.pcap``: an 802.1Q tag
  (VLAN 100) inserted after the MAC addresses of every frame, cut back to the
  128-byte snap length; the same traffic, so VLAN vs plain compares like with like.
- ``--pcapng``: ``bench.pcapng`` (``editcap -F pcapng``).
- ``--scale``: ``bench-x0.25.pcap`` and ``bench-x0.5.pcap`` (the first quarter /
  half of the packets, ``editcap -r``) and ``bench-x2.pcap`` (the capture, then
  itself shifted in time by its length + 1 s: ``editcap -t``, ``mergecap -a``).
- ``manifest.json``: every file with its size, packet count and origin.

The namespaces are removed at the end, also on errors and signals. The traffic
phase stops at ``--max-seconds`` whatever the count; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLIENT4, SERVER4 = "10.99.0.1", "10.99.0.2"
CLIENT6, SERVER6 = "fd99::1", "fd99::2"
CLIENT_IF, SERVER_IF = "c0", "s0"
SNAPLEN = 128
VLAN_ID = 100
REQUEST_SIZE = 64
FOURWAY_PAUSE = 0.1  # > the 40 ms delayed-ACK minimum: the first FIN is ACKed on its own
RESET_PAUSE = 0.02  # server_reset: let the reply be ACKed before the RST
UNANSWERED_TIMEOUT = 2.5  # s: the SYN and its retransmissions (1 s apart on Linux 6.x: 3 SYNs)
REPLY_SIZES = ((300, 0.5), (3000, 0.3), (8000, 0.2))  # bytes, weight: 1, 3 and 6 segments


@dataclass(frozen=True)
class Kind:
    """One kind of connection: its server port, share of the mix and description."""

    port: int
    share: float
    how: str


KINDS: dict[str, Kind] = {
    "client_close": Kind(9001, 0.22, "client FIN first, server closes 100 ms after EOF: four-way"),
    "server_close": Kind(9002, 0.22, "HTTP/1.0 style: server FIN first after its reply (TIME_WAIT on the server), "
                                     "client closes 100 ms after EOF: four-way"),
    "three_way": Kind(9003, 0.12, "client FIN first, server closes at once on EOF: FIN, FIN+ACK, ACK"),
    "client_reset": Kind(9004, 0.10, "client closes with SO_LINGER 0 after the reply: RST from the client"),
    "server_reset": Kind(9005, 0.10, "server closes with SO_LINGER 0 after its reply: RST from the server"),
    "half_close": Kind(9006, 0.10, "client sends, shutdown(SHUT_WR); server replies after the FIN, then closes"),
    "refused": Kind(9007, 0.14, "SYN to a closed port, answered by RST+ACK"),
    "unanswered": Kind(9008, 0.0, "SYN dropped by nftables in the server namespace; client gives up after 2.5 s"),
}
SERVER_PORTS = frozenset(kind.port for kind in KINDS.values())
UNANSWERED_EVERY = 2000  # one unanswered SYN per this many connections (at least one)


# -- the plan ------------------------------------------------------------------


def plan_counts(total: int) -> dict[str, int]:
    """How many connections of each kind, summing to `total`."""
    unanswered = max(1, total // UNANSWERED_EVERY)
    rest = total - unanswered
    counts = {name: int(rest * kind.share) for name, kind in KINDS.items() if kind.share}
    counts["client_close"] += rest - sum(counts.values())
    counts["unanswered"] = unanswered
    return counts


def split_counts(counts: dict[str, int], workers: int) -> list[dict[str, int]]:
    """Share every kind's count between `workers` clients as evenly as possible."""
    return [{name: n // workers + (i < n % workers) for name, n in counts.items()} for i in range(workers)]


# -- server worker (runs inside the server namespace) -------------------------


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _recv_until_eof(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> int:
    total = 0
    while chunk := await loop.sock_recv(sock, 65536):
        total += len(chunk)
    return total


def _linger0(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _serve_one(loop: asyncio.AbstractEventLoop, sock: socket.socket, kind: str) -> None:
    """The server's side of one connection of `kind`."""
    with sock:
        request = await _recv_exactly(loop, sock, REQUEST_SIZE)
        size = int(request.split(b" ")[1]) if request.startswith(b"GET ") else 100
        reply = b"x" * size
        if kind == "half_close":
            await _recv_until_eof(loop, sock)
            await loop.sock_sendall(sock, reply)
            return
        await loop.sock_sendall(sock, reply)
        if kind == "server_close":
            return
        if kind == "server_reset":
            await asyncio.sleep(RESET_PAUSE)
            _linger0(sock)
            return
        await _recv_until_eof(loop, sock)
        if kind == "client_close":
            await asyncio.sleep(FOURWAY_PAUSE)


async def _accept_loop(listener: socket.socket, kind: str, tasks: set[asyncio.Task[None]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        sock, _ = await loop.sock_accept(listener)
        task = loop.create_task(_guard(_serve_one(loop, sock, kind)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _guard(coro: Any) -> None:
    with contextlib.suppress(OSError):
        await coro


async def serve(addr: str) -> None:
    """Listen on every kind's port (SO_REUSEPORT: several workers share them)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    tasks: set[asyncio.Task[None]] = set()
    loops = []
    for name, kind in KINDS.items():
        if name in ("refused", "unanswered"):
            continue
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((addr, kind.port))
        listener.listen(4096)
        listener.setblocking(False)
        loops.append(asyncio.ensure_future(_accept_loop(listener, name, tasks)))
    print("ready", flush=True)
    await asyncio.gather(*loops)


# -- client worker (runs inside the client namespace) -------------------------


@dataclass
class ClientTally:
    """What one client worker did, per kind."""

    done: Counter[str] = field(default_factory=Counter)
    errors: dict[str, Counter[str]] = field(default_factory=dict)
    port_retries: int = 0

    def error(self, kind: str, err: BaseException) -> None:
        self.errors.setdefault(kind, Counter())[type(err).__name__] += 1


async def _connect(loop: asyncio.AbstractEventLoop, family: int, addr: tuple[str, int],
                   tally: ClientTally) -> socket.socket:
    """A connected socket; retries while every ephemeral port is busy."""
    for _ in range(200):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as err:
            sock.close()
            if err.errno != errno.EADDRNOTAVAIL:
                raise
            tally.port_retries += 1
            await asyncio.sleep(0.01)
    raise OSError(errno.EADDRNOTAVAIL, "no free ephemeral port")


async def _client_one(loop: asyncio.AbstractEventLoop, family: int, server: str, kind: str,
                      reply_size: int, tally: ClientTally) -> None:
    """The client's side of one connection of `kind`; counts it as done or failed."""
    addr = (server, KINDS[kind].port)
    try:
        if kind == "refused":
            await _expect_refused(loop, family, addr, tally)
        elif kind == "unanswered":
            await _expect_silence(loop, family, addr)
        else:
            await _exchange(loop, await _connect(loop, family, addr, tally), kind, reply_size)
        tally.done[kind] += 1
    except (OSError, AssertionError, TimeoutError) as err:
        tally.error(kind, err)


async def _expect_refused(loop: asyncio.AbstractEventLoop, family: int, addr: tuple[str, int],
                          tally: ClientTally) -> None:
    try:
        sock = await _connect(loop, family, addr, tally)
    except ConnectionRefusedError:
        return
    sock.close()
    raise AssertionError("connected to the closed port")


async def _expect_silence(loop: asyncio.AbstractEventLoop, family: int, addr: tuple[str, int]) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), UNANSWERED_TIMEOUT)
        except TimeoutError:
            return
    raise AssertionError("the dropped port answered")


async def _exchange(loop: asyncio.AbstractEventLoop, sock: socket.socket, kind: str, reply_size: int) -> None:
    """Request, reply and close, the way `kind` closes."""
    with sock:
        request = f"GET {reply_size} {kind} ".encode().ljust(REQUEST_SIZE, b".")
        await loop.sock_sendall(sock, request)
        if kind == "half_close":
            sock.shutdown(socket.SHUT_WR)
            await _recv_until_eof(loop, sock)
            return
        if kind in ("server_close", "server_reset"):
            with contextlib.suppress(ConnectionResetError):
                await _recv_until_eof(loop, sock)
            if kind == "server_close":
                await asyncio.sleep(FOURWAY_PAUSE)
            return
        got = await _recv_exactly(loop, sock, reply_size)
        assert len(got) == reply_size, "short reply"
        if kind == "client_reset":
            _linger0(sock)


def _shuffled_plan(counts: dict[str, int], seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    sizes, weights = zip(*REPLY_SIZES, strict=True)
    plan = [(name, rng.choices(sizes, weights)[0]) for name, n in counts.items() for _ in range(n)]
    rng.shuffle(plan)
    return plan


async def run_clients(server: str, counts: dict[str, int], concurrency: int, seed: int, deadline: float) -> None:
    """Open the planned connections, `concurrency` at a time; report progress and a tally on stdout."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    tally, gate = ClientTally(), asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    next_report = time.monotonic() + 1
    for kind, size in _shuffled_plan(counts, seed):
        if time.time() > deadline:
            tally.error(kind, TimeoutError("deadline"))
            continue
        await gate.acquire()
        task = loop.create_task(_client_one(loop, family, server, kind, size, tally))
        tasks.add(task)
        task.add_done_callback(lambda t: (tasks.discard(t), gate.release()))
        if time.monotonic() > next_report:
            print(f"done {sum(tally.done.values()) + _failed(tally)}", flush=True)
            next_report += 1
    while tasks:
        await asyncio.sleep(0.05)
    result = {"done": dict(tally.done), "errors": {k: dict(v) for k, v in tally.errors.items()},
              "port_retries": tally.port_retries}
    print("result " + json.dumps(result), flush=True)


def _failed(tally: ClientTally) -> int:
    return sum(sum(c.values()) for c in tally.errors.values())


# -- namespaces ----------------------------------------------------------------


def run(cmd: Sequence[str], timeout: float = 60) -> str:
    """Run a command, fail loudly, return its standard output."""
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


class Netns:
    """A client and a server namespace on one veth pair; `close` removes both."""

    def __init__(self) -> None:
        prefix = f"synfin-bench-{os.getpid()}"
        self.client, self.server = f"{prefix}-c", f"{prefix}-s"
        self.made: list[str] = []

    def exec(self, ns: str, *cmd: str) -> list[str]:
        """The command line that runs `cmd` in namespace `ns`."""
        return ["ip", "netns", "exec", ns, *cmd]

    def build(self) -> None:
        """Namespaces, veth, addresses, sysctls, offloads off, the nftables drop."""
        for ns in (self.client, self.server):
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
        run(["ip", "-n", self.client, "link", "add", CLIENT_IF, "type", "veth",
             "peer", "name", SERVER_IF, "netns", self.server])
        for ns, dev, v4, v6 in ((self.client, CLIENT_IF, CLIENT4, CLIENT6),
                                (self.server, SERVER_IF, SERVER4, SERVER6)):
            run(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev])
            run(["ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(self.exec(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off"))
            for setting in ("net.core.somaxconn=8192", "net.ipv4.tcp_max_syn_backlog=8192"):
                run(self.exec(ns, "sysctl", "-qw", setting))
        for setting in ("net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65535",
                        "net.ipv4.ip_local_reserved_ports=9000-9009"):
            run(self.exec(self.client, "sysctl", "-qw", setting))
        drop = f"tcp dport {KINDS['unanswered'].port} drop"
        script = ("table inet synfin_bench {\n chain input {\n  type filter hook input priority 0;\n"
                  f"  {drop}\n }}\n}}\n")
        subprocess.run(self.exec(self.server, "nft", "-f", "-"), input=script, text=True, check=True, timeout=20)

    def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)
        self.made.clear()


@contextlib.contextmanager
def netns_pair() -> Iterator[Netns]:
    """Namespaces that are removed however the block ends (SIGTERM/SIGHUP too)."""
    pair = Netns()
    old = {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        pair.build()
        yield pair
    finally:
        pair.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# -- one recording --------------------------------------------------------------


@dataclass
class Workers:
    """The processes this script started for one recording (ended by pid)."""

    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    clients: list[subprocess.Popen[str]] = field(default_factory=list)
    tcpdump: subprocess.Popen[str] | None = None

    def stop(self) -> None:
        for proc in [*self.clients, *self.servers]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def start_servers(pair: Netns, addr: str, count: int, workers: Workers) -> None:
    for _ in range(count):
        proc = subprocess.Popen(pair.exec(pair.server, *_self_cmd("_serve", addr)),
                                stdout=subprocess.PIPE, text=True)
        workers.servers.append(proc)
    for proc in workers.servers:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a server worker did not start")


def start_tcpdump(pair: Netns, path: Path, workers: Workers) -> None:
    cmd = ["tcpdump", "-i", CLIENT_IF, "-s", str(SNAPLEN), "--immediate-mode", "-U", "-B", "262144",
           "-w", str(path)]
    workers.tcpdump = subprocess.Popen(pair.exec(pair.client, *cmd), stderr=subprocess.PIPE, text=True)
    assert workers.tcpdump.stderr is not None
    line = workers.tcpdump.stderr.readline()
    if "listening on" not in line:
        raise RuntimeError(f"tcpdump did not start: {line.strip()}")


def stop_tcpdump(workers: Workers) -> dict[str, int]:
    """SIGINT to tcpdump; its captured / received / dropped counters."""
    proc = workers.tcpdump
    assert proc is not None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    stats = {}
    for number, what in re.findall(r"(\d+) packets? (captured|received by filter|dropped by kernel)", err):
        stats[what.replace(" ", "_")] = int(number)
    return stats


def run_client_workers(pair: Netns, server: str, counts: dict[str, int], args: argparse.Namespace,
                       workers: Workers) -> list[dict[str, Any]]:
    """Start the clients, print progress until they finish, return their tallies."""
    deadline = time.time() + args.max_seconds
    progress = [0] * args.clients
    results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
    readers = []
    for i, share in enumerate(split_counts(counts, args.clients)):
        cmd = _self_cmd("_client", server, json.dumps(share), str(args.concurrency), str(args.seed + i),
                        str(deadline))
        proc = subprocess.Popen(pair.exec(pair.client, *cmd), stdout=subprocess.PIPE, text=True)
        workers.clients.append(proc)
        reader = threading.Thread(target=_read_client, args=(proc, i, progress, results), daemon=True)
        reader.start()
        readers.append(reader)
    _report_progress(workers, progress, sum(counts.values()))
    for reader in readers:
        reader.join()
    if any(p.returncode for p in workers.clients) or not all(results):
        raise RuntimeError("a client worker failed")
    return results


def _read_client(proc: subprocess.Popen[str], i: int, progress: list[int], results: list[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("done "):
            progress[i] = int(line.split()[1])
        elif line.startswith("result "):
            results[i] = json.loads(line[len("result "):])
    proc.wait()


def _report_progress(workers: Workers, progress: list[int], total: int) -> None:
    start = time.monotonic()
    next_print = start + 5
    while any(p.poll() is None for p in workers.clients):
        time.sleep(0.25)
        now = time.monotonic()
        if now >= next_print:
            next_print += 5
            elapsed, done = now - start, sum(progress)
            print(f"  {done:,}/{total:,} connections, {elapsed:.0f} s, {done / max(elapsed, 1e-9):,.0f}/s",
                  file=sys.stderr, flush=True)


def record(path: Path, server: str, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Record one capture of the planned traffic; returns what happened, per kind."""
    workers = Workers()
    started = time.monotonic()
    with netns_pair() as pair:
        try:
            start_servers(pair, server, args.servers, workers)
            start_tcpdump(pair, path, workers)
            results = run_client_workers(pair, server, counts, args, workers)
            time.sleep(1.0)  # the last delayed closes and ACKs
            tcpdump = stop_tcpdump(workers)
        finally:
            workers.stop()
            if workers.tcpdump and workers.tcpdump.poll() is None:
                workers.tcpdump.kill()
                workers.tcpdump.wait()
    return _tally(results, counts, tcpdump, time.monotonic() - started)


def _tally(results: list[dict[str, Any]], counts: dict[str, int], tcpdump: dict[str, int],
           seconds: float) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for name, planned in counts.items():
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"].get(name, {}))
        done = sum(r["done"].get(name, 0) for r in results)
        kinds[name] = {"port": KINDS[name].port, "planned": planned, "completed": done,
                       "failed": dict(errors), "how": KINDS[name].how}
    return {"kinds": kinds, "completed": sum(k["completed"] for k in kinds.values()),
            "planned": sum(counts.values()), "port_retries": sum(r["port_retries"] for r in results),
            "tcpdump": tcpdump, "traffic_seconds": round(seconds, 1)}


# -- reading the capture back --------------------------------------------------


PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD = struct.Struct("<IIII")


def scan(path: Path) -> dict[str, Any]:
    """Count what the file holds: packets, TCP flags per server port, reused 4-tuples, time steps back."""
    data = path.read_bytes()
    magic = PCAP_HEADER.unpack_from(data)[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise ValueError(f"{path}: not a little-endian pcap")
    nano = magic == 0xA1B23C4D
    flags: dict[int, Counter[str]] = {}
    isns: dict[tuple[bytes, int, bytes, int], set[int]] = {}
    stats = {"packets": 0, "tcp": 0, "backsteps": 0, "max_backstep_us": 0.0}
    offset, last = PCAP_HEADER.size, 0.0
    while offset + RECORD.size <= len(data):
        sec, frac, incl, _ = RECORD.unpack_from(data, offset)
        ts = sec + frac / (1e9 if nano else 1e6)
        if ts < last:
            stats["backsteps"] += 1
            stats["max_backstep_us"] = max(stats["max_backstep_us"], (last - ts) * 1e6)
        last = max(last, ts)
        stats["packets"] += 1
        frame = data[offset + RECORD.size: offset + RECORD.size + incl]
        offset += RECORD.size + incl
        _scan_frame(frame, flags, isns, stats)
    reused = sum(1 for s in isns.values() if len(s) > 1)
    stats["max_backstep_us"] = round(stats["max_backstep_us"], 1)
    return {**stats, "four_tuples": len(isns), "reused_four_tuples": reused,
            "connections_by_syn": sum(len(s) for s in isns.values()),
            "flags_by_port": {str(p): dict(c) for p, c in sorted(flags.items())}}


def _scan_frame(frame: bytes, flags: dict[int, Counter[str]], isns: dict[tuple[bytes, int, bytes, int], set[int]],
                stats: dict[str, Any]) -> None:
    ethertype, at = struct.unpack_from("!H", frame, 12)[0], 14
    if ethertype == 0x8100:
        ethertype, at = struct.unpack_from("!H", frame, 16)[0], 18
    if ethertype == 0x0800 and frame[at + 9] == 6:
        src, dst, at = frame[at + 12:at + 16], frame[at + 16:at + 20], at + (frame[at] & 15) * 4
    elif ethertype == 0x86DD and frame[at + 6] == 6:
        src, dst, at = frame[at + 8:at + 24], frame[at + 24:at + 40], at + 40
    else:
        return
    sport, dport, seq = struct.unpack_from("!HHI", frame, at)
    bits = frame[at + 13]
    stats["tcp"] += 1
    server_port = dport if dport in SERVER_PORTS else sport if sport in SERVER_PORTS else 0
    counter = flags.setdefault(server_port, Counter())
    syn, ack = bits & 0x02, bits & 0x10
    if syn and not ack:
        counter["syn"] += 1
        isns.setdefault((src, sport, dst, dport), set()).add(seq)
    elif syn:
        counter["synack"] += 1
    if bits & 0x01:
        counter["fin"] += 1
    if bits & 0x04:
        counter["rst"] += 1


# -- derived files ---------------------------------------------------------------


def add_vlan(src: Path, dst: Path, vlan: int = VLAN_ID) -> None:
    """Copy an Ethernet pcap, inserting an 802.1Q tag in every frame, cut to the snap length."""
    data = src.read_bytes()
    header = list(PCAP_HEADER.unpack_from(data))
    snaplen = header[5]
    tag = struct.pack("!HH", 0x8100, vlan)
    out = [PCAP_HEADER.pack(*header)]
    offset = PCAP_HEADER.size
    while offset + RECORD.size <= len(data):
        sec, frac, incl, orig = RECORD.unpack_from(data, offset)
        frame = data[offset + RECORD.size: offset + RECORD.size + incl]
        offset += RECORD.size + incl
        tagged = (frame[:12] + tag + frame[12:])[:snaplen]
        out.append(RECORD.pack(sec, frac, len(tagged), orig + 4))
        out.append(tagged)
    dst.write_bytes(b"".join(out))


def make_pcapng(src: Path, dst: Path) -> None:
    run(["editcap", "-F", "pcapng", str(src), str(dst)], timeout=600)


def make_scaled(src: Path, packets: int, duration: float) -> dict[str, Path]:
    """¼ and ½ (leading packets) and 2× (the file, then itself shifted by its length + 1 s)."""
    made = {}
    for factor in (0.25, 0.5):
        dst = src.with_name(f"{src.stem}-x{factor:g}.pcap")
        run(["editcap", "-F", "pcap", "-r", str(src), str(dst), f"1-{int(packets * factor)}"], timeout=600)
        made[f"x{factor:g}"] = dst
    shifted = src.with_name(f"{src.stem}-shifted.pcap")
    double = src.with_name(f"{src.stem}-x2.pcap")
    try:
        run(["editcap", "-F", "pcap", "-t", f"{duration + 1:.6f}", str(src), str(shifted)], timeout=600)
        run(["mergecap", "-F", "pcap", "-a", "-w", str(double), str(src), str(shifted)], timeout=600)
    finally:
        shifted.unlink(missing_ok=True)
    made["x2"] = double
    return made


def capinfos(path: Path) -> dict[str, Any]:
    """Packets, duration, size and time order as capinfos reports them."""
    out = run(["capinfos", "-M", "-c", "-u", "-s", "-o", "-T", str(path)], timeout=600)
    names, values = (line.split("\t") for line in out.strip().splitlines()[:2])
    row = dict(zip(names, values, strict=True))
    return {"packets": int(row["Number of packets"]), "duration_s": float(row["Capture duration (seconds)"]),
            "bytes": int(row["File size (bytes)"]), "strict_time_order": row["Strict time order"].strip() == "True"}


# -- main ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=250_000, help="connections per capture (default 250000)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/synfin-bench"), help="output directory")
    parser.add_argument("--ipv6", action="store_true", help="also record an IPv6 capture (a second real run)")
    parser.add_argument("--vlan", action="store_true", help="also write a VLAN-tagged copy (rewritten)")
    parser.add_argument("--pcapng", action="store_true", help="also write a pcapng copy (editcap)")
    parser.add_argument("--scale", action="store_true", help="also write 1/4, 1/2 and 2x files")
    parser.add_argument("--servers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--clients", type=int, default=3, help="client worker processes (default 3)")
    parser.add_argument("--concurrency", type=int, default=200, help="open connections per client (default 200)")
    parser.add_argument("--max-seconds", type=float, default=200, help="stop opening connections after this long")
    parser.add_argument("--seed", type=int, default=6)
    return parser.parse_args(argv)


def record_one(name: str, server: str, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Record, scan and describe one capture; writes its manifest."""
    path = args.out / f"{name}.pcap"
    print(f"recording {path} ({args.connections:,} connections to {server})", file=sys.stderr, flush=True)
    counts = plan_counts(args.connections)
    manifest = {"capture": path.name, "client": CLIENT6 if ":" in server else CLIENT4, "server": server,
                "snaplen": SNAPLEN, "link": "Ethernet", **record(path, server, counts, args)}
    print(f"  {manifest['completed']:,} completed in {manifest['traffic_seconds']} s; tcpdump {manifest['tcpdump']}",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    manifest["scan"] = scan(path)
    manifest["capinfos"] = capinfos(path)
    print(f"  scanned in {time.monotonic() - t0:.1f} s: {manifest['scan']['packets']:,} packets, "
          f"{manifest['scan']['reused_four_tuples']:,} reused 4-tuples", file=sys.stderr, flush=True)
    path.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path, manifest


def describe(path: Path, origin: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    info = info or capinfos(path)
    return {"file": path.name, "origin": origin, "bytes": path.stat().st_size, "packets": info["packets"],
            "duration_s": info["duration_s"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("make_capture.py: needs root (network namespaces, tcpdump)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base, manifest = record_one("bench", SERVER4, args)
    files = {"ipv4": describe(base, "recorded over IPv4", manifest["capinfos"])}
    captures = {"ipv4": manifest}
    if args.ipv6:
        path, m6 = record_one("bench-ipv6", SERVER6, args)
        files["ipv6"], captures["ipv6"] = describe(path, "recorded over IPv6", m6["capinfos"]), m6
    files.update(derived(base, manifest, args))
    index = {"connections_per_capture": args.connections, "generation_seconds": round(time.monotonic() - started, 1),
             "files": files, "captures": {k: {"manifest": f"{v['capture'][:-5]}.manifest.json",
                                              "completed": v["completed"]} for k, v in captures.items()}}
    (args.out / "manifest.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"done in {index['generation_seconds']} s; see {args.out / 'manifest.json'}", file=sys.stderr)
    return 0


def derived(base: Path, manifest: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The rewritten, converted and scaled copies asked for."""
    files = {}
    if args.vlan:
        vlan = base.with_name("bench-vlan.pcap")
        print(f"writing {vlan}", file=sys.stderr, flush=True)
        add_vlan(base, vlan)
        files["vlan"] = describe(vlan, f"bench.pcap with an 802.1Q tag (VLAN {VLAN_ID}) inserted in every frame")
    if args.pcapng:
        ng = base.with_suffix(".pcapng")
        print(f"writing {ng}", file=sys.stderr, flush=True)
        make_pcapng(base, ng)
        files["pcapng"] = describe(ng, "editcap -F pcapng bench.pcap")
    if args.scale:
        print("writing the 1/4, 1/2 and 2x files", file=sys.stderr, flush=True)
        info = manifest["capinfos"]
        for key, path in make_scaled(base, info["packets"], info["duration_s"]).items():
            files[key] = describe(path, f"bench.pcap scaled {key}")
    return files


def worker_main(argv: list[str]) -> int:
    """The hidden `_serve ADDR` and `_client SERVER COUNTS CONCURRENCY SEED DEADLINE` roles."""
    role, rest = argv[0], argv[1:]
    with contextlib.suppress(KeyboardInterrupt):
        if role == "_serve":
            asyncio.run(serve(rest[0]))
        else:
            asyncio.run(run_clients(rest[0], json.loads(rest[1]), int(rest[2]), int(rest[3]), float(rest[4])))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_serve", "_client"):
        sys.exit(worker_main(sys.argv[1:]))
    sys.exit(main())

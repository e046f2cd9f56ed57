"""A throw-away test network of Linux network namespaces for the samples.

Layout (all names get a ``synfin-gen-<pid>-<n>`` prefix so runs never clash)::

    direct:   [client ns] c0 ====veth==== s0 [server ns]

    delayed:  [client ns] c0 ==veth== m0 [middle ns] m1 ==veth== s0 [server ns]
                                       \\__ peer.py forward __/
                                         (one-way delay, e.g. 50 ms)

Addresses exist only on those veths: client 10.77.0.1 / fd77::1, server
10.77.0.2 / fd77::2 (one /24 and one /64, the middle namespace has no address
and is a delaying "wire"). Checksum, segmentation and GRO offloads are turned
off on every veth so captures show wire-size segments with real checksums.

Every namespace, process and capture a :class:`Lab` starts is removed again in
:meth:`Lab.close` (called from ``with``, from ``atexit`` and on signals).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
PEER = HERE / "peer.py"
PREFIX = f"synfin-gen-{os.getpid()}"
CLIENT4, SERVER4 = "10.77.0.1", "10.77.0.2"
CLIENT6, SERVER6 = "fd77::1", "fd77::2"
MACS = {
    "c0": "02:77:00:00:00:01",
    "s0": "02:77:00:00:00:02",
    "m0": "02:77:00:00:00:10",
    "m1": "02:77:00:00:00:11",
}
OFFLOADS = ["tx", "off", "tso", "off", "gso", "off", "gro", "off", "sg", "off"]
_live: set[Lab] = set()
_counter = iter(range(1, 1_000_000))


class LabError(RuntimeError):
    """A command of the lab failed or a helper did not come up in time."""


def run(cmd: Sequence[str], stdin: str | None = None) -> str:
    """Run a command, raise LabError with its stderr if it fails."""
    res = subprocess.run(
        list(cmd), input=stdin, capture_output=True, text=True, timeout=30,
        check=False,
    )
    if res.returncode != 0:
        raise LabError(f"{' '.join(cmd)} -> {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


class Proc:
    """A helper process started in a namespace (peer, forwarder, capture)."""

    def __init__(self, cmd: list[str], log: Path | None = None) -> None:
        self.log = log
        err: Any = log.open("w") if log else subprocess.PIPE
        self.popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )
        if log:
            err.close()
        self.seen = {"stdout": "", "stderr": ""}

    def wait_for(self, pattern: str, timeout: float, stream: str = "stdout") -> None:
        """Read a pipe until ``pattern`` appears (bounded by ``timeout``)."""
        fd = getattr(self.popen, stream).fileno()
        end = time.monotonic() + timeout
        while pattern not in self.seen[stream]:
            left = end - time.monotonic()
            if left <= 0 or self.popen.poll() is not None:
                raise LabError(f"{self.popen.args!r}: no {pattern!r} in "
                               f"{self.seen[stream]!r} {self.log_text()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                self.seen[stream] += os.read(fd, 4096).decode(errors="replace")

    def log_text(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def wait(self, timeout: float) -> str:
        """Wait for a normal exit and return the rest of stdout."""
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise LabError(f"{self.popen.args!r} did not finish in {timeout}s") from exc
        return self.seen["stdout"] + (out or b"").decode(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        """Stop the process by its pid: SIGTERM, then SIGKILL."""
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=5)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe:
                pipe.close()


class Peer(Proc):
    """``peer.py sockets`` in a namespace; ``finish`` returns its summary."""

    def finish(self, timeout: float = 20.0) -> dict[str, Any]:
        out = self.wait(timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"errors": -1, "first": [out]}


class Capture:
    """tcpdump or dumpcap writing one file; use as a context manager."""

    def __init__(self, lab: Lab, ns: str, path: Path, iface: str = "c0",
                 snaplen: int = 128, bpf: str = "tcp", tool: str = "tcpdump",
                 extra: Sequence[str] = ()) -> None:
        self.lab, self.ns, self.path, self.tool = lab, ns, path, tool
        if tool == "dumpcap":
            cmd = ["dumpcap", "-q", "-i", iface, "-s", str(snaplen), "-f", bpf,
                   "-w", str(path), *extra]
        else:
            cmd = ["tcpdump", "-i", iface, "-nn", "--immediate-mode", "-U",
                   "-Z", "root", "-s", str(snaplen), "-w", str(path), *extra, bpf]
        self.cmd = in_ns(ns, *cmd)
        self.proc: Proc | None = None
        self.stats = ""

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.proc = Proc(self.cmd)
        self.lab.procs.append(self.proc)
        token = "Capturing on" if self.tool == "dumpcap" else "listening on"
        self.proc.wait_for(token, 10, stream="stderr")
        time.sleep(0.5 if self.tool == "dumpcap" else 0.3)

    def stop(self, pause: float = 0.8) -> None:
        """Wait ``pause`` so the last segments are flushed, then SIGINT."""
        if self.proc is None:
            return
        time.sleep(pause)
        self.proc.signal(signal.SIGINT)
        try:
            _, err = self.proc.popen.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise LabError(f"{self.tool} did not stop") from None
        self.stats = self.proc.seen["stderr"] + (err or b"").decode(errors="replace")
        dropped = re.search(r"(\d+) packets? dropped by kernel", self.stats)
        if dropped and int(dropped.group(1)):
            raise LabError(f"{self.tool} dropped packets: {self.stats}")
        if not self.path.exists():
            raise LabError(f"{self.tool} wrote no {self.path}: {self.stats}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.stop()
        elif self.proc:
            self.proc.kill()


class Lab:
    """Client and server namespaces, optionally joined by a delaying middle."""

    def __init__(self, delay: float | None = None) -> None:
        n = next(_counter)
        self.client = f"{PREFIX}-{n}-cli"
        self.server = f"{PREFIX}-{n}-srv"
        self.middle = f"{PREFIX}-{n}-mid" if delay else None
        self.delay = delay
        self.procs: list[Proc] = []
        self.namespaces: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{n}-"))

    # -- building ---------------------------------------------------------
    def __enter__(self) -> Self:
        _live.add(self)
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def build(self) -> None:
        self.add_ns(self.client)
        self.add_ns(self.server)
        if self.middle is None:
            self.veth(self.client, "c0", self.server, "s0")
        else:
            self.add_ns(self.middle)
            self.sysctl(self.middle, "net.ipv6.conf.all.disable_ipv6", 1)
            self.sysctl(self.middle, "net.ipv6.conf.default.disable_ipv6", 1)
            self.veth(self.client, "c0", self.middle, "m0")
            self.veth(self.server, "s0", self.middle, "m1")
        self.endpoint(self.client, "c0", CLIENT4, CLIENT6)
        self.endpoint(self.server, "s0", SERVER4, SERVER6)
        if self.middle is not None:
            self.start_forwarder()

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth",
             "peer", "name", if_b, "netns", ns_b])
        for ns, iface in ((ns_a, if_a), (ns_b, if_b)):
            run(["ip", "-n", ns, "link", "set", iface, "address", MACS[iface]])
            run(in_ns(ns, "ethtool", "-K", iface, *OFFLOADS))
            run(["ip", "-n", ns, "link", "set", iface, "up"])

    def endpoint(self, ns: str, iface: str, addr4: str, addr6: str) -> None:
        run(["ip", "-n", ns, "addr", "add", f"{addr4}/24", "dev", iface])
        run(["ip", "-n", ns, "addr", "add", f"{addr6}/64", "dev", iface, "nodad"])

    def start_forwarder(self) -> None:
        assert self.middle is not None
        for iface in ("m0", "m1"):
            run(["ip", "-n", self.middle, "link", "set", iface, "promisc", "on"])
        spec = {"if_a": "m0", "if_b": "m1", "delay": self.delay, "deadline": 60}
        proc = Proc(in_ns(self.middle, sys.executable, str(PEER), "forward",
                          json.dumps(spec)), log=self.tmp / "forward.log")
        self.procs.append(proc)
        proc.wait_for("READY", 10)

    # -- using --------------------------------------------------------------
    def sysctl(self, ns: str, key: str, value: object) -> None:
        run(in_ns(ns, "sysctl", "-qw", f"{key}={value}"))

    def nft(self, ns: str, ruleset: str) -> None:
        run(in_ns(ns, "nft", "-f", "-"), stdin=ruleset)

    def peer(self, ns: str, spec: dict[str, Any]) -> Peer:
        """Start ``peer.py sockets`` in ``ns``; return once its listeners are up."""
        spec = {"deadline": 40, **spec}
        log = self.tmp / f"peer-{len(self.procs)}.log"
        proc = Peer(in_ns(ns, sys.executable, str(PEER), "sockets",
                          json.dumps(spec)), log=log)
        self.procs.append(proc)
        proc.wait_for("READY", 10)
        return proc

    def injector(self, spec: dict[str, Any]) -> Peer:
        """Start ``peer.py inject`` (forged RSTs) in the middle namespace; return once it watches."""
        assert self.middle is not None, "the injector sits on the delaying wire"
        spec = {"deadline": 30, "iface": "m0", "client": CLIENT4, "server": SERVER4,
                "macs": {"client": MACS["c0"], "server": MACS["s0"]}, **spec}
        proc = Peer(in_ns(self.middle, sys.executable, str(PEER), "inject", json.dumps(spec)),
                    log=self.tmp / "inject.log")
        self.procs.append(proc)
        proc.wait_for("READY", 10)
        return proc

    def capture(self, path: Path, ns: str | None = None, **kw: Any) -> Capture:
        return Capture(self, ns or self.client, path, **kw)

    # -- tearing down -------------------------------------------------------
    def close(self) -> None:
        """Stop our processes (by pid) and delete our namespaces."""
        for proc in reversed(self.procs):
            proc.kill()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            self.kill_ns_pids(ns)
            with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                run(["ip", "netns", "del", ns])
        self.namespaces.clear()
        for path in self.tmp.glob("*"):
            path.unlink()
        with contextlib.suppress(OSError):
            self.tmp.rmdir()
        _live.discard(self)

    @staticmethod
    def kill_ns_pids(ns: str) -> None:
        """Kill leftovers that run inside one of *our* namespaces."""
        with contextlib.suppress(LabError, subprocess.TimeoutExpired):
            for pid in run(["ip", "netns", "pids", ns]).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def cleanup_all() -> None:
    for lab in list(_live):
        lab.close()


def _on_signal(signum: int, _frame: object) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into exceptions so ``with``/``finally``
    blocks tear the lab down (SIGINT too, even if it was inherited ignored)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


atexit.register(cleanup_all)

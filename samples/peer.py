"""Programs that run *inside* one network namespace of the sample lab.

This file is started by ``netlab.py`` as
``ip netns exec NS python3 peer.py MODE JSON`` and uses only the standard
library. It has two modes:

``sockets``
    Runs TCP listeners and clients described by a JSON spec. Each client and
    each accepted connection executes a small list of *steps*, e.g.
    ``[["connect", "10.77.0.2", 9000], ["send", 100], ["recv", 100],
    ["close"]]``. All listeners are up before ``READY`` is printed on stdout.

``forward``
    A delaying Ethernet "wire": copies every frame arriving on one
    AF_PACKET socket to the other interface after a fixed delay, so that
    two segments can really cross in flight.

``inject``
    An on-path attacker on the delaying wire: watches one interface with an
    AF_PACKET socket and writes forged RSTs "from the server" into it (a raw
    socket, frames built here with struct): one at the client's SYN whose ACK
    is the client's ISN (not ISN + 1), and one in ESTABLISHED whose sequence
    number is far outside the window. The kernel must ignore both.

Every mode is bounded in time by a watchdog (``deadline`` seconds).
"""

from __future__ import annotations

import heapq
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

Step = list[Any]
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOCK_TIMEOUT = 15.0


def log(msg: str) -> None:
    """Write a diagnostic line to stderr (collected by the generator)."""
    sys.stderr.write(f"[peer {os.getpid()}] {msg}\n")
    sys.stderr.flush()


def start_watchdog(seconds: float) -> None:
    """Hard-exit the process after ``seconds`` whatever it is doing."""

    def bomb() -> None:
        time.sleep(seconds)
        log(f"watchdog: exiting after {seconds}s")
        os._exit(3)

    threading.Thread(target=bomb, daemon=True).start()


# --------------------------------------------------------------------------
# socket steps
# --------------------------------------------------------------------------


class Conn:
    """The state one step list works on: the current socket."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.family = socket.AF_INET

    def need(self) -> socket.socket:
        if self.sock is None:
            raise RuntimeError("no socket: add a 'socket' step first")
        return self.sock


def family_of(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def recv_exact(sock: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def recv_eof(sock: socket.socket) -> int:
    got = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += len(chunk)


def do_socket(c: Conn, args: Step) -> None:
    c.family = socket.AF_INET6 if args and str(args[0]) == "6" else socket.AF_INET
    c.sock = socket.socket(c.family, socket.SOCK_STREAM)
    c.sock.settimeout(SOCK_TIMEOUT)


def do_connect(c: Conn, args: Step) -> None:
    if c.sock is None:
        do_socket(c, ["6" if ":" in args[0] else "4"])
    timeout = float(args[2]) if len(args) > 2 else SOCK_TIMEOUT
    sock = c.need()
    sock.settimeout(timeout)
    sock.connect((args[0], int(args[1])))
    sock.settimeout(SOCK_TIMEOUT)


def do_tfo(c: Conn, args: Step) -> None:
    """connect + send in one sendto(MSG_FASTOPEN) (TCP Fast Open)."""
    if c.sock is None:
        do_socket(c, ["6" if ":" in args[0] else "4"])
    sock = c.need()
    sock.settimeout(None)  # a timeout makes the fd non-blocking: EINPROGRESS
    sock.sendto(b"F" * int(args[2]), socket.MSG_FASTOPEN, (args[0], int(args[1])))
    sock.settimeout(SOCK_TIMEOUT)


def do_linger0(c: Conn, _args: Step) -> None:
    c.need().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def do_keepalive(c: Conn, args: Step) -> None:
    sock = c.need()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(args[0]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, int(args[1]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, int(args[2]))


def do_at(_c: Conn, args: Step) -> None:
    """Sleep until the wall-clock instant args[0] (a time barrier)."""
    delay = float(args[0]) - time.time()
    if 0 < delay < 30:
        time.sleep(delay)


def do_close(c: Conn, _args: Step) -> None:
    c.need().close()
    c.sock = None


STEPS = {
    "socket": do_socket,
    "reuseaddr": lambda c, a: c.need().setsockopt(
        socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
    ),
    "bind": lambda c, a: c.need().bind((a[0], int(a[1]))),
    "connect": do_connect,
    "tfo": do_tfo,
    "send": lambda c, a: c.need().sendall(b"x" * int(a[0])),
    "recv": lambda c, a: recv_exact(c.need(), int(a[0])),
    "eof": lambda c, a: recv_eof(c.need()),
    "shutwr": lambda c, a: c.need().shutdown(socket.SHUT_WR),
    "sleep": lambda c, a: time.sleep(float(a[0])),
    "at": do_at,
    "linger0": do_linger0,
    "keepalive": do_keepalive,
    "nodelay": lambda c, a: c.need().setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    ),
    "close": do_close,
}


def run_steps(c: Conn, steps: list[Step], tag: str, errors: list[str]) -> None:
    """Run one step list; a socket error ends the list (it may be expected)."""
    for step in steps:
        name, args = step[0], step[1:]
        try:
            STEPS[name](c, args)
        except OSError as exc:
            errors.append(f"{tag}: {name}: {exc!r}")
            break
    if c.sock is not None:
        c.sock.close()


def run_listener(spec: dict[str, Any], ready: threading.Barrier,
                 errors: list[str]) -> None:
    """Accept ``accepts`` connections; each runs ``steps`` in its own thread."""
    port = int(spec["port"])
    try:
        lsock = open_listener(spec)
    except OSError as exc:
        errors.append(f"listen {port}: {exc!r}")
        ready.wait()
        return
    ready.wait()
    time.sleep(float(spec.get("accept_after", 0.0)))  # a server too busy to accept: the queue fills up
    workers = []
    for i in range(int(spec.get("accepts", 1))):
        try:
            sock, _peer = lsock.accept()
        except OSError as exc:
            errors.append(f"accept {port}: {exc!r}")
            break
        sock.settimeout(SOCK_TIMEOUT)
        worker = threading.Thread(
            target=run_steps,
            args=(Conn(sock), spec["steps"], f"srv{port}#{i}", errors),
        )
        worker.start()
        workers.append(worker)
    for worker in workers:
        worker.join()
    time.sleep(float(spec.get("hold", 0.0)))
    lsock.close()


def open_listener(spec: dict[str, Any]) -> socket.socket:
    addr, port = spec["addr"], int(spec["port"])
    lsock = socket.socket(family_of(addr), socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if spec.get("fastopen"):
        lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
    lsock.bind((addr, port))
    lsock.listen(int(spec.get("backlog", 128)))
    lsock.settimeout(SOCK_TIMEOUT)
    return lsock


def start_clients(spec: dict[str, Any], errors: list[str]) -> list[threading.Thread]:
    """Start ``count`` copies of one client step list, ``stagger`` s apart."""
    threads = []
    for i in range(int(spec.get("count", 1))):
        worker = threading.Thread(
            target=run_steps, args=(Conn(), spec["steps"], f"cli#{i}", errors)
        )
        worker.start()
        threads.append(worker)
        time.sleep(float(spec.get("stagger", 0.0)))
    return threads


def mode_sockets(spec: dict[str, Any]) -> int:
    listeners = spec.get("listeners", [])
    errors: list[str] = []
    ready = threading.Barrier(len(listeners) + 1)
    threads = [
        threading.Thread(target=run_listener, args=(ls, ready, errors))
        for ls in listeners
    ]
    for thread in threads:
        thread.start()
    ready.wait(timeout=10)
    print("READY", flush=True)
    for client in spec.get("clients", []):
        threads += start_clients(client, errors)
    for thread in threads:
        thread.join()
    for err in errors:
        log(err)
    print(json.dumps({"errors": len(errors), "first": errors[:5]}), flush=True)
    return 0


# --------------------------------------------------------------------------
# delaying forwarder
# --------------------------------------------------------------------------


def packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def mode_forward(spec: dict[str, Any]) -> int:
    """Copy frames between two interfaces with a one-way delay."""
    a, b = packet_socket(spec["if_a"]), packet_socket(spec["if_b"])
    other = {a.fileno(): b, b.fileno(): a}
    delay = float(spec["delay"])
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    print("READY", flush=True)
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        readable, _, _ = select.select([a, b], [], [], timeout)
        for sock in readable:
            while True:
                try:
                    frame, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                seq += 1
                heapq.heappush(
                    queue, (time.monotonic() + delay, seq, other[sock.fileno()], frame)
                )
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            out.send(frame)


SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10


def _tagged_frame(sock: socket.socket) -> tuple[bytes, int, int] | None:
    """One frame, whether the kernel sent it, and its VLAN id (from the frame, or from the
    auxdata the kernel moves a received tag to); None when no frame waits."""
    try:
        frame, ancillary, _, addr = sock.recvmsg(65535, socket.CMSG_SPACE(20))
    except BlockingIOError:
        return None
    vid = 0
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 18:
            status, tci = struct.unpack_from("=I", data)[0], struct.unpack_from("=H", data, 16)[0]
            vid = tci & 0x0FFF if status & TP_STATUS_VLAN_VALID else 0
    if not vid and frame[12:14] == b"\x81\x00":
        vid, frame = struct.unpack_from("!H", frame, 14)[0] & 0x0FFF, frame[:12] + frame[16:]
    return frame, addr[2] == PACKET_OUTGOING, vid


def mode_trunk(spec: dict[str, Any]) -> int:
    """A VLAN switch with a trunk looped through a veth pair: frames from the client access port of
    VLAN v go out tagged v on one trunk end, arrive at the other, and leave untagged on the server
    access port of v; the answers go the other way. (This kernel has no 8021q: the tag is ours, the
    traffic the kernel's.)"""
    near, far = spec["trunk"]
    ports = {name: packet_socket(name) for name in [near, far, *spec["clients"].values(), *spec["servers"].values()]}
    for name in (near, far):
        ports[name].setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    access = {ports[name].fileno(): (vid, near) for vid, name in spec["clients"].items()}
    access |= {ports[name].fileno(): (vid, far) for vid, name in spec["servers"].items()}
    leave = {near: spec["clients"], far: spec["servers"]}
    print("READY", flush=True)
    while True:
        readable, _, _ = select.select(list(ports.values()), [], [], 1.0)
        for sock in readable:
            name = next(n for n, s in ports.items() if s is sock)
            while (got := _tagged_frame(sock)) is not None:
                frame, sent, vid = got
                if sent:
                    continue
                if sock.fileno() in access:
                    tag_vid, trunk = access[sock.fileno()]
                    ports[trunk].send(frame[:12] + struct.pack("!HH", 0x8100, int(tag_vid)) + frame[12:])
                elif str(vid) in leave[name]:
                    ports[leave[name][str(vid)]].send(frame)


# --------------------------------------------------------------------------
# RST injector
# --------------------------------------------------------------------------

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp4_frame(spec: dict[str, Any], sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    """An Ethernet/IPv4/TCP frame from the server's address and MAC to the client's, checksums right."""
    src, dst = socket.inet_aton(spec["server"]), socket.inet_aton(spec["client"])
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 512, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x4242, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    mac = {k: bytes.fromhex(v.replace(":", "")) for k, v in spec["macs"].items()}
    return mac["client"] + mac["server"] + b"\x08\x00" + ip + tcp


def tcp4_fields(frame: bytes) -> tuple[str, int, int, int, int, int] | None:
    """(source address, source port, dest port, seq, flags, payload length) of an Ethernet/IPv4/TCP frame."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack("!H", frame[16:18])[0]
    tcp = frame[14 + ihl:]
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    offset = (tcp[12] >> 4) * 4
    return socket.inet_ntoa(frame[26:30]), sport, dport, seq, tcp[13], total - ihl - offset


def watch(sock: socket.socket, want: Any) -> tuple[str, int, int, int, int, int]:
    """Frames on the interface, either way, until one `want(fields)` accepts."""
    while True:
        select.select([sock], [], [], 1.0)
        while True:
            try:
                frame = sock.recv(65535)
            except BlockingIOError:
                break
            fields = tcp4_fields(frame)
            if fields is not None and want(fields):
                return fields


def mode_inject(spec: dict[str, Any]) -> int:
    """Forge the two RSTs (module docstring), log what was sent, and exit."""
    sock = packet_socket(spec["iface"])
    client, server, port = spec["client"], spec["server"], int(spec["port"])
    print("READY", flush=True)
    _, cport, _, isn, _, _ = watch(sock, lambda f: f[0] == client and f[2] == port and f[4] & 0x3F == TCP_SYN)
    sock.send(tcp4_frame(spec, port, cport, 0x5EED0000, isn, TCP_RST | TCP_ACK))  # ack = ISN: not acceptable
    log(f"injected RST+ACK ack={isn} (the client's ISN) at its SYN")
    _, _, _, seq, _, plen = watch(sock, lambda f: f[0] == server and f[1] == port and f[5] > 0)
    time.sleep(float(spec.get("pause", 0.05)))
    blind = seq + plen + int(spec.get("offset", 3_000_000))
    sock.send(tcp4_frame(spec, port, cport, blind, 0, TCP_RST))  # far outside the client's window
    log(f"injected RST seq={blind & 0xFFFFFFFF} (out of window) in ESTABLISHED")
    print(json.dumps({"port": cport, "isn": isn, "blind_seq": blind & 0xFFFFFFFF}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    mode, spec = argv[1], json.loads(argv[2])
    start_watchdog(float(spec.get("deadline", 30)))
    if mode == "forward":
        return mode_forward(spec)
    if mode == "sockets":
        return mode_sockets(spec)
    if mode == "trunk":
        return mode_trunk(spec)
    if mode == "inject":
        return mode_inject(spec)
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))

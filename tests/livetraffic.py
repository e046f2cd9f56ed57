"""Real connections of several kinds, for the live tests; run inside a network namespace.

    python tests/livetraffic.py serve ADDR    # listeners; prints "ready", serves until killed
    python tests/livetraffic.py kinds ADDR    # one connection of each kind; prints a JSON map
                                              # {"normal": port, "refused": port, ...} of client ports
    python tests/livetraffic.py idle ADDR SECONDS   # one connection held open, idle, then closed

Ports on the server: 8001 normal (the server closes 50 ms after the client's
FIN, so its ACK goes first: a four-way close), 8002 reset (the client aborts
with SO_LINGER 0), 8003 half-close (the client shuts down writing, the server
still sends 4 KiB, then closes), 8009 has no listener (refused).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time

NORMAL, RESET, HALF, REFUSED = 8001, 8002, 8003, 8009
TIMEOUT = 5.0


def _drain(conn: socket.socket) -> None:
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def _handle(conn: socket.socket, port: int) -> None:
    conn.settimeout(TIMEOUT)
    with conn:
        _drain(conn)
        if port == HALF:
            conn.sendall(b"x" * 4096)  # data after the client's FIN
        time.sleep(0.05)


def _listen(addr: str, port: int) -> None:
    server = socket.create_server((addr, port), reuse_port=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_handle, args=(conn, port), daemon=True).start()


def serve(addr: str) -> None:
    for port in (NORMAL, RESET, HALF):
        threading.Thread(target=_listen, args=(addr, port), daemon=True).start()
    time.sleep(0.2)
    print("ready", flush=True)
    while True:
        time.sleep(60)


def _connect(addr: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    sock.connect((addr, port))
    return sock


def normal(addr: str) -> int:
    sock = _connect(addr, NORMAL)
    sock.sendall(b"hello")
    port = sock.getsockname()[1]
    sock.shutdown(socket.SHUT_WR)
    _drain(sock)
    sock.close()
    return port


def refused(addr: str) -> int:
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(ConnectionRefusedError):
        sock.connect((addr, REFUSED))
    port = sock.getsockname()[1]
    sock.close()
    return port


def reset(addr: str) -> int:
    sock = _connect(addr, RESET)
    sock.sendall(b"hello")
    time.sleep(0.05)
    port = sock.getsockname()[1]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return port


def half_close(addr: str) -> int:
    sock = _connect(addr, HALF)
    sock.sendall(b"request")
    sock.shutdown(socket.SHUT_WR)
    _drain(sock)  # the 4 KiB the server sends after our FIN, then its FIN
    port = sock.getsockname()[1]
    sock.close()
    return port


def kinds(addr: str) -> None:
    ports = {"normal": normal(addr), "refused": refused(addr), "reset": reset(addr),
             "half_close": half_close(addr)}
    print(json.dumps(ports), flush=True)


def idle(addr: str, seconds: float) -> None:
    sock = _connect(addr, NORMAL)
    print(json.dumps({"idle": sock.getsockname()[1]}), flush=True)
    time.sleep(seconds)
    sock.close()


if __name__ == "__main__":
    command, address = sys.argv[1], sys.argv[2]
    if command == "serve":
        serve(address)
    elif command == "kinds":
        kinds(address)
    else:
        idle(address, float(sys.argv[3]))

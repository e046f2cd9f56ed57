"""Frames from a live interface: an AF_PACKET socket with the BPF filter in the kernel.

`LiveCapture` is the live twin of `capture.read_frames`: it hands out
`RawFrame`s numbered from 1, stamped by the kernel (SO_TIMESTAMPNS), so the
same `Pipeline` reads both. The filter expression is compiled by libpcap
(through scapy's `compile_filter`, which needs no privileges) and attached to
the socket, so the kernel drops what does not match before Python sees it.

Link types: Ethernet and loopback devices are read as they are (LINKTYPE 1);
every other device, and the pseudo-interface ``any``, is read "cooked"
(SOCK_DGRAM) and given a Linux SLL header (LINKTYPE 113), as libpcap does.
On loopback every packet passes twice (out and back in); the outgoing copy
is skipped, as tcpdump does.

`PcapWriter` writes the frames to a nanosecond pcap (`-w`), so `synfin
analyze` of the file sees exactly the frames, numbers and times the live run saw.
Errors a user can cause (no permission, no such interface, a bad filter)
raise `LiveError` with one sentence. An interface that goes down or is
deleted while the capture runs ends reading, as it does for libpcap:
`LiveCapture.lost` then says which, so the caller can still report what was
read before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from analyzer.capture import RawFrame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, PACKET_STATISTICS = 1, 1, 6
PACKET_OUTGOING, PACKET_IGNORE_OUTGOING = 4, 23
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL = 1, 113
DLT_EN10MB, DLT_RAW = 1, 12  # what libpcap compiles for: Ethernet headers, or bare IP
ANY = "any"
INTERFACE_GONE = frozenset({errno.ENETDOWN, errno.ENODEV, errno.ENXIO})  # what recvmsg says then
DEFAULT_FILTERS = {False: "tcp or (vlan and tcp)", True: "tcp"}  # by "cooked"
DEFAULT_SNAPLEN = 262144
_TIMESPEC = struct.Struct("@qq")
_SLL = struct.Struct("!HHH8sH")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
_REJECT_ALL = [(0x06, 0, 0, 0)]  # BPF "ret #0"


class LiveError(Exception):
    """Live capture cannot start; the message is one sentence for the user."""


@dataclass(slots=True)
class KernelCounts:
    """PACKET_STATISTICS, summed: frames that passed the filter, and those the kernel dropped."""

    received: int = 0
    dropped: int = 0


def interface_names() -> list[str]:
    """Every interface of this network namespace, and ``any``."""
    return [*sorted({name for _, name in socket.if_nameindex()}), ANY]


def device_type(name: str) -> int:
    """The ARPHRD_ type of interface `name` (-1: unknown)."""
    try:
        return int(Path(f"/sys/class/net/{name}/type").read_text())
    except (OSError, ValueError):
        return -1


class LiveCapture:
    """A packet socket on one interface (or ``any``), filtered in the kernel."""

    def __init__(self, iface: str, bpf: str | None = None, snaplen: int = DEFAULT_SNAPLEN,
                 buffer_bytes: int = 32 << 20, promiscuous: bool = True) -> None:
        if iface not in interface_names():
            raise LiveError(f"there is no interface named {iface!r}; the interfaces here are: "
                            + ", ".join(interface_names()))
        self.iface = iface
        device = -1 if iface == ANY else device_type(iface)
        self.cooked = device not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        self.linktype = LINKTYPE_LINUX_SLL if self.cooked else LINKTYPE_ETHERNET
        self.loopback = device == ARPHRD_LOOPBACK
        self.snaplen = snaplen
        self.filter = bpf or DEFAULT_FILTERS[self.cooked]
        self.program = compile_bpf(self.filter, DLT_RAW if self.cooked else DLT_EN10MB)
        self.kernel = KernelCounts()
        self.frames = 0
        self.skipped = 0  # loopback's outgoing copies, when the kernel cannot skip them
        self.lost: str | None = None  # why the interface can no longer be read (None: it can)
        self._buf = bytearray(snaplen)
        self._sock = _open_socket(iface, self.cooked)
        try:
            self._configure(buffer_bytes, promiscuous and iface != ANY)
        except BaseException:
            self._sock.close()
            raise

    def _configure(self, buffer_bytes: int, promiscuous: bool) -> None:
        sock = self._sock
        _attach(sock, _REJECT_ALL)  # nothing gets in until the real filter is on
        if self.iface != ANY:
            sock.bind((self.iface, ETH_P_ALL))
        sock.setblocking(False)
        _drain(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
        except OSError:  # no CAP_NET_ADMIN: as much as net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if self.loopback:  # Linux 4.20+: the kernel skips the outgoing copies itself
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if promiscuous:
            mreq = struct.pack("iHH8s", socket.if_nametoindex(self.iface), PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self.drop_counts()  # start the kernel's counters from here
        _attach(sock, self.program)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, limit: int, writer: PcapWriter | None = None) -> list[RawFrame]:
        """Up to `limit` frames already queued (none if the queue is empty); never blocks."""
        frames: list[RawFrame] = []
        recv, buf, snaplen = self._sock.recvmsg_into, self._buf, self.snaplen
        while len(frames) < limit:
            try:
                size, anc, _, addr = recv([buf], _CMSG_SPACE, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno not in INTERFACE_GONE:
                    raise
                self.lost = self._why_lost()
                break
            if addr[2] == PACKET_OUTGOING and (self.loopback or addr[3] == ARPHRD_LOOPBACK):
                self.skipped += 1
                continue  # loopback: the same packet comes back in
            sec, nsec = _timestamp(anc)
            data = bytes(buf[:min(size, snaplen)])
            if self.cooked:
                data = _sll_header(addr) + data
                size += _SLL.size
            self.frames += 1
            if writer is not None:
                writer.write(sec, nsec, data, size)
            frames.append(RawFrame(self.frames, sec + nsec * 1e-9, self.linktype, data, size))
        return frames

    def _why_lost(self) -> str:
        if self.iface not in interface_names():
            return f"the interface {self.iface} disappeared"
        return f"the interface {self.iface} went down"

    def drop_counts(self) -> KernelCounts:
        """Add up the kernel's counters (reading them resets them) and return the totals."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        self.kernel.received += packets
        self.kernel.dropped += drops
        return self.kernel

    @property
    def unread(self) -> int:
        """Frames that passed the filter, were not dropped, and were never read (left at the stop)."""
        return max(0, self.kernel.received - self.kernel.dropped - self.frames - self.skipped)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self.drop_counts()
            self._sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _open_socket(iface: str, cooked: bool) -> socket.socket:
    kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
    try:
        return socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise LiveError(permission_message(iface)) from None
    except OSError as err:
        raise LiveError(f"cannot open a packet socket for {iface}: {err.strerror or err}") from None


def permission_message(iface: str) -> str:
    """What a capture without CAP_NET_RAW is told (both live paths)."""
    return (f"capturing on {iface} needs the CAP_NET_RAW capability, which this process "
            "does not have: run synfin as root (sudo), or grant it to the Python interpreter "
            "(setcap cap_net_raw,cap_net_admin+eip ...)")


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(1)
        except BlockingIOError:
            return


def _timestamp(anc: list[tuple[int, int, bytes]]) -> tuple[int, int]:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec, nsec
    now = time.time_ns()  # the kernel always stamps; this is only a fallback
    return now // 1_000_000_000, now % 1_000_000_000


def _sll_header(addr: tuple) -> bytes:  # type: ignore[type-arg]
    """The 16-byte Linux "cooked" header libpcap writes for SOCK_DGRAM captures."""
    _, proto, pkttype, hatype, haddr = addr
    return _SLL.pack(pkttype, hatype, len(haddr), haddr[:8], proto)


# -- the filter -----------------------------------------------------------

def compile_bpf(expression: str, dlt: int) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump filter expression to BPF instructions with libpcap."""
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
    except ImportError as err:
        raise LiveError(f"cannot compile the filter: scapy is not usable ({err})") from None
    try:
        program = compile_filter(expression, linktype=dlt)
    except (Scapy_Exception, ImportError, OSError) as err:
        raise LiveError(f"bad filter {expression!r}: {_pcap_reason(str(err))}") from None
    insns = program.bf_insns
    out = [(insns[i].code, insns[i].jt, insns[i].jf, insns[i].k) for i in range(program.bf_len)]
    free_filter(program)
    return out


def _pcap_reason(message: str) -> str:
    start = message.rfind("(")
    return message[start + 1:-1] if start >= 0 and message.endswith(")") else message


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    insns = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(insns))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.ENOMEM):
            raise LiveError(f"the kernel refused the compiled filter: {err.strerror}") from None
        raise


# -- writing what was captured ---------------------------------------------

class PcapWriter:
    """A nanosecond-resolution pcap file of the captured frames (`-w`)."""

    def __init__(self, path: Path, linktype: int, snaplen: int) -> None:
        try:
            self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise LiveError(f"cannot write {path}: {err.strerror or err}") from None
        self.path = path
        self._file.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype))
        self._record = struct.Struct("<IIII")

    def write(self, sec: int, nsec: int, data: bytes, wire_len: int) -> None:
        self._file.write(self._record.pack(sec, nsec, len(data), wire_len))
        self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

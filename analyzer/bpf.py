"""BPF filters, as tcpdump reads them: which frames of a capture are analyzed.

`synfin analyze --filter EXPR`, `synfin ladder --filter EXPR` and
`analyzer.analyze(path, bpf=EXPR)` analyze only the frames the expression
matches, as `tcpdump -r FILE EXPR` would select them: the expression is
compiled by libpcap itself (pcap_open_dead with the frame's link type, then
pcap_compile, optimized, netmask unknown, as tcpdump compiles for a file) and
run by libpcap (pcap_offline_filter, with the frame's captured and original
lengths). A pcapng file may mix link types, so a program is compiled for each
link type met, once. An expression that cannot apply to a link type ("vlan" on
raw IP frames) matches none of its frames; the first such link type and
libpcap's reason are kept (`failed`) for the summary.

This module is the reference pipeline's half, through ctypes on the libpcap
shared library; the compiled engine does the same in C (analyzer/_engine/
filter.c, linked with libpcap), so both keep exactly the same frames. Frame
numbers are not changed by a filter: they stay the file's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from functools import cache
from typing import Any

from analyzer.capture import RawFrame

SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
NETMASK_UNKNOWN = 0xFFFFFFFF
LINKTYPE_RAW, DLT_RAW = 101, 12  # a file's LINKTYPE_RAW is libpcap's DLT_RAW (12 on Linux)
LINKTYPE_ETHERNET = 1
# Link types an expression is tried on before it is called bad: Ethernet first (its message is the one
# reported), then Linux cooked v1 and v2, raw IP, loopback, 802.11 with radiotap.
CHECK_LINKTYPES = (LINKTYPE_ETHERNET, 113, 276, LINKTYPE_RAW, 0, 127)
# Words that start a BPF expression (pcap-filter(7)): a capture argument that is one of them is an expression.
KEYWORDS = frozenset((
    "host", "net", "port", "portrange", "src", "dst", "ether", "ip", "ip6", "arp", "rarp", "tcp", "udp", "icmp",
    "icmp6", "sctp", "vlan", "mpls", "pppoed", "pppoes", "gateway", "proto", "less", "greater", "broadcast",
    "multicast", "inbound", "outbound", "not", "and", "or", "wlan", "link", "decnet"))
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".gz", ".dump", ".dmp")


class FilterError(ValueError):
    """A filter that cannot be used: a bad expression, or no libpcap. One line, naming the expression."""


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _Header(ctypes.Structure):  # struct pcap_pkthdr
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long), ("caplen", ctypes.c_uint32),
                ("len", ctypes.c_uint32)]


@cache
def libpcap() -> Any:
    """The libpcap shared library, its functions typed; FilterError if it is not installed."""
    name = ctypes.util.find_library("pcap")
    try:
        lib = ctypes.CDLL(name or "libpcap.so.0.8")
    except OSError:
        raise FilterError("filters need libpcap, which is not installed (Debian: apt-get install libpcap0.8)"
                          ) from None
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    lib.pcap_offline_filter.restype = ctypes.c_int
    lib.pcap_offline_filter.argtypes = [ctypes.POINTER(_Program), ctypes.POINTER(_Header), ctypes.c_char_p]
    return lib


def _dlt(linktype: int) -> int:
    return DLT_RAW if linktype == LINKTYPE_RAW else linktype


def _compile(expression: str, linktype: int) -> _Program | str:
    """The program for `linktype`, or libpcap's reason why there is none."""
    lib = libpcap()
    if linktype > 0x7FFFFFFF:
        return "link type out of range"  # as filter.c: pcap_open_dead takes an int
    dead = lib.pcap_open_dead(_dlt(linktype), SNAPLEN)
    if not dead:
        return "out of memory"
    try:
        program = _Program()
        if lib.pcap_compile(dead, ctypes.byref(program), expression.encode(), 1, NETMASK_UNKNOWN) != 0:
            return str(lib.pcap_geterr(dead).decode(errors="replace"))
        return program
    finally:
        lib.pcap_close(dead)


def check(expression: str) -> None:
    """Raise FilterError, with libpcap's message, unless `expression` compiles for a common link type."""
    if "\0" in expression:
        raise FilterError(f"bad filter {expression!r}: it holds a NUL character")
    first = None
    for linktype in CHECK_LINKTYPES:
        program = _compile(expression, linktype)
        if not isinstance(program, str):
            libpcap().pcap_freecode(ctypes.byref(program))
            return
        first = first or program
    raise FilterError(f"bad filter {expression!r}: {first}")


def looks_like_filter(text: str) -> bool:
    """Whether a capture argument that is not a file is a filter expression given where a file goes: it starts
    with a BPF keyword ("tcp", "host 10.0.0.1", "not port 22"), "(" or "!", or it has several words one of
    which is a keyword ("10.0.0.1 and port 80"); never a name ending as captures do ("old and new.pcap",
    "capture (1).pcap"). Nothing is compiled here, so no host name is looked up."""
    words = re.split(r"[\s()]+", text.strip().lower())
    if not words or text.lower().endswith(CAPTURE_SUFFIXES):
        return False
    if text.lstrip().startswith(("(", "!")) or words[0] in KEYWORDS:
        return True
    return len(text.split()) > 1 and any(word in KEYWORDS for word in words)


class BpfFilter:
    """One expression, compiled per link type as frames come; `matches(frame)` runs it on a frame."""

    def __init__(self, expression: str) -> None:
        check(expression)
        self.expression = expression
        self._lib = libpcap()
        self._programs: dict[int, _Program | None] = {}
        self._header = _Header()
        self.failed: tuple[int, str] | None = None  # the first link type it cannot apply to, and why

    def matches(self, frame: RawFrame) -> bool:
        program = self._programs.get(frame.linktype, False)
        if program is False:
            program = self._program(frame.linktype)
        if program is None:
            return False
        self._header.caplen = len(frame.data)
        self._header.len = frame.wire_len
        return bool(self._lib.pcap_offline_filter(ctypes.byref(program), ctypes.byref(self._header), frame.data))

    def _program(self, linktype: int) -> _Program | None:
        compiled = _compile(self.expression, linktype)
        if isinstance(compiled, str):
            if self.failed is None:
                self.failed = (linktype, compiled)
            self._programs[linktype] = None
            return None
        self._programs[linktype] = compiled
        return compiled

    def __del__(self) -> None:
        for program in getattr(self, "_programs", {}).values():
            if program is not None:
                self._lib.pcap_freecode(ctypes.byref(program))

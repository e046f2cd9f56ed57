"""Reading capture files: pcap and pcapng, plain or gzip-compressed.

The format is told by the magic bytes, never by the file name. A capture is
opened once, from its path or, for "-", from standard input (as `tcpdump -r -`),
and never reopened or rewound to be read: the first bytes, read to tell the
format, are handed back on the stream (`_Replay`), so a named pipe, a shell's
`<(cat x.pcap)` and a pipe into standard input read as a file does, gzip
included. Messages name standard input "standard input". Each reader
yields `RawFrame`s numbered from 1, as Wireshark numbers them. Problems that
leave the rest of the file readable (a record cut short at the end) are
reported through `CaptureDamage`, counted by the caller; problems that leave
nothing to read (not a capture at all, a header cut short) raise
`CaptureError` with one sentence naming the file.

A gzip file cut short (no end-of-stream marker, as a copy stopped part way or
a `tcpdump | gzip` killed leaves it) is read up to the cut, as a plain pcap cut
short is: `_CutGzip` ends the stream there instead of raising, and the cut is
one more damaged spot, numbered after the last whole frame (`GZIP_CUT`).

The readers read the file in large blocks and slice records out of them, so
memory stays at one block whatever the size of the capture.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

BLOCK = 1 << 20
STDIN = "-"  # as a str, not a Path: the capture that is standard input, read as tcpdump -r - reads it
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
MAX_RECORD = 1 << 24  # no sane record is larger: past this the file is garbled
GZIP_CUT = "gzip data cut short (no end-of-stream marker): read up to the cut"


class CaptureError(Exception):
    """The file cannot be read as a capture at all."""


@dataclass(slots=True)
class RawFrame:
    """One captured frame: its number, time, link type and bytes."""

    number: int
    ts: float
    linktype: int
    data: bytes
    wire_len: int


@dataclass(slots=True)
class CaptureDamage:
    """A part of the file that could not be read; the reader stops or goes on."""

    frame: int
    what: str


Item = RawFrame | CaptureDamage


Progress = Callable[[int], None]


class _Blocks:
    """Sequential reads of exact sizes from a stream, through a large buffer."""

    def __init__(self, capture: OpenCapture, progress: Progress | None = None) -> None:
        self._stream = capture.stream
        self._buf = b""
        self._pos = 0
        self._progress = progress
        self._file = capture.file  # gzip: progress in compressed bytes

    def read(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._buf):
            self._refill(size)
            end = self._pos + size
        chunk = self._buf[self._pos:end]
        self._pos = min(end, len(self._buf))
        return chunk

    def _refill(self, size: int) -> None:
        rest = self._buf[self._pos:]
        more = self._stream.read(max(BLOCK, size - len(rest)))
        self._buf = rest + more
        self._pos = 0
        if self._progress is not None:
            self._progress(self._file.consumed)


def is_stdin(path: str | Path) -> bool:
    """Whether `path` is the string "-", standard input. A Path is always a file: Path("-"), which is what
    ./- on the command line becomes, is a file named -."""
    return isinstance(path, str) and path == STDIN


def capture_path(text: str) -> str | Path:
    """A capture named on the command line (an argparse type): "-" stays standard input, the rest are paths."""
    return STDIN if text == STDIN else Path(text)


def capture_name(path: str | Path) -> str:
    """How messages and summaries name a capture: "standard input" for "-", else the path (a file named -
    as it must be given, ./-)."""
    if is_stdin(path):
        return "standard input"
    return "./-" if str(path) == STDIN else str(path)


class _File(io.FileIO):
    """The capture file as opened, counting the bytes read from it (for progress: the
    compressed bytes of a gzip file, on a pipe as on a disk)."""

    consumed = 0

    def readinto(self, buffer: Any) -> int | None:
        count = super().readinto(buffer)
        if count:
            self.consumed += count
        return count


class _CutGzip(io.RawIOBase):
    """A gzip stream that ends where its data ends: a file cut short gives what it holds, then
    end of file (`cut` says so) instead of EOFError. Damage inside the data still raises."""

    def __init__(self, stream: gzip.GzipFile) -> None:
        super().__init__()
        self._stream = stream
        self.cut = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.cut:
            return 0
        try:  # read1: one read of the gzip data, so nothing already unpacked is lost when the next raises
            data = self._stream.read1(len(buffer))
        except EOFError:
            self.cut = True
            return 0
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


class _Replay(io.RawIOBase):
    """A stream whose first bytes were read to tell its format, given back before the rest:
    a pipe cannot be rewound, nor reopened."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return self._rest.readinto(buffer)  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self._rest.close()
        super().close()


@dataclass(slots=True)
class OpenCapture:
    """A capture opened once: `stream` gives its bytes from the start (decompressed), whatever
    `head` (its first 4 bytes) took; `file` is the file itself; `start` is where the capture
    begins in `file` if it can seek there, None for a pipe."""

    name: str
    stream: BinaryIO
    head: bytes
    file: _File
    start: int | None
    gzipped: bool
    gzip: _CutGzip | None = None  # the gzip stream, if gzipped: whether it was cut short

    @property
    def cut(self) -> bool:
        """Whether the gzip data ended before its end-of-stream marker (read so far)."""
        return self.gzip is not None and self.gzip.cut

    def own_fd(self) -> int:
        """A file descriptor at the start of the plain capture, for a reader of its own (the
        engine's thread), or -1 when the bytes must come through `stream`: gzip (decompressed
        here) or a pipe (its head is in `stream`, no longer in the pipe). After this, read only
        the descriptor."""
        if self.gzipped or self.start is None:
            return -1
        os.lseek(self.file.fileno(), self.start, os.SEEK_SET)
        return self.file.fileno()

    def close(self) -> None:
        self.stream.close()
        self.file.close()


def open_capture(path: str | Path) -> OpenCapture:
    """Open the capture at `path` ("-": standard input) once, unwrapping gzip.

    Nothing is opened twice and nothing is read that is not handed on: the head is read
    through the stream and given back on it, so a named pipe, `<(cat x.pcap)` and standard
    input read as a file does.
    """
    name = capture_name(path)
    if is_stdin(path) and os.isatty(0):
        raise CaptureError(f"{name}: is a terminal, not a capture (pipe one in: synfin analyze - < x.pcap)")
    try:
        file = _File(os.dup(0) if is_stdin(path) else path, "rb")  # a copy: closing it keeps stdin open
    except OSError as err:
        raise CaptureError(f"{name}: cannot open: {err.strerror or err}") from None
    try:
        start = file.tell() if file.seekable() else None
        stream, head = _with_head(io.BufferedReader(file))
    except OSError as err:
        file.close()
        raise CaptureError(f"{name}: read error: {err.strerror or err}") from None
    if head[:2] != GZIP_MAGIC:
        return OpenCapture(name, stream, head, file, start, gzipped=False)
    try:
        unpacked = _CutGzip(gzip.GzipFile(fileobj=stream, mode="rb"))  # type: ignore[arg-type]
        stream, head = _with_head(io.BufferedReader(unpacked))  # type: ignore[arg-type]
    except (OSError, EOFError, zlib.error) as err:
        file.close()
        raise CaptureError(f"{name}: gzip data is damaged: {err}") from None
    if unpacked.cut and not head:
        file.close()
        raise CaptureError(f"{name}: gzip data is damaged: cut short before any data")
    return OpenCapture(name, stream, head, file, start, gzipped=True, gzip=unpacked)


def _with_head(stream: BinaryIO) -> tuple[BinaryIO, bytes]:
    """The stream's first 4 bytes (fewer only at its end), and the stream that gives them back."""
    head = stream.read(4)  # a buffered read: waits on a slow pipe until it has them
    return io.BufferedReader(_Replay(head, stream)), head  # type: ignore[return-value]


def check_head(capture: OpenCapture) -> None:
    """Raise CaptureError unless the capture starts as a pcap or pcapng file does."""
    if not capture.head:
        raise CaptureError(f"{capture.name}: the file is empty, not a capture")
    if capture.head not in PCAP_MAGICS and capture.head != PCAPNG_SHB:
        raise CaptureError(
            f"{capture.name}: not a pcap or pcapng capture (starts with bytes {capture.head.hex(' ')})"
        )


def read_frames(path: str | Path, progress: Progress | None = None) -> Iterator[Item]:
    """Yield every frame (and every damaged spot) of the capture at `path` ("-": standard input).

    `progress`, if given, is called with the number of file bytes read so far.
    """
    yield from read_numbered(path, progress, 0)


def read_numbered(path: str | Path, progress: Progress | None, start: int) -> Generator[Item, None, int]:
    """read_frames, its frames numbered on from `start` (a rotated set's next file: rotated.py); returns the
    last number the file used (a damaged record's too), where the next file's numbering goes on."""
    capture = open_capture(path)
    try:
        check_head(capture)
        read = _read_pcap if capture.head in PCAP_MAGICS else _read_pcapng
        last = start  # the last whole frame's number
        number = start
        reading = read(capture.name, _Blocks(capture, progress), start)
        while True:
            try:
                item = next(reading)
            except StopIteration as end:
                number = end.value
                break
            if isinstance(item, RawFrame):
                last = item.number
            yield item
        if capture.cut:
            yield CaptureDamage(last + 1, GZIP_CUT)
        return number
    except (OSError, EOFError, zlib.error) as err:
        raise CaptureError(f"{capture.name}: read error: {err}") from None
    finally:
        capture.close()


def _read_pcap(name: str, blocks: _Blocks, number: int) -> Generator[Item, None, int]:
    header = blocks.read(24)
    if len(header) < 24:
        raise CaptureError(f"{name}: pcap file header is cut short ({len(header)} of 24 bytes)")
    order, unit = PCAP_MAGICS[header[:4]]
    linktype = struct.unpack(order + "I", header[20:24])[0] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    while True:
        head = blocks.read(16)
        if not head:
            return number
        number += 1
        if len(head) < 16:
            yield CaptureDamage(number, f"record header cut short ({len(head)} of 16 bytes)")
            return number
        sec, frac, caplen, wire_len = record.unpack(head)
        if caplen > MAX_RECORD:
            yield CaptureDamage(number, f"garbled record header (length {caplen}); rest of file skipped")
            return number
        data = blocks.read(caplen)
        if len(data) < caplen:
            yield CaptureDamage(number, f"record cut short ({len(data)} of {caplen} bytes)")
            return number
        yield RawFrame(number, sec + frac * unit, linktype, data, wire_len)


@dataclass(slots=True)
class _Interface:
    linktype: int
    unit: float
    offset: int


def _read_pcapng(name: str, blocks: _Blocks, number: int) -> Generator[Item, None, int]:
    order = "<"
    interfaces: list[_Interface] = []
    first = True
    while True:
        head = blocks.read(8)
        if not head:
            return number
        if len(head) < 8:
            yield CaptureDamage(number + 1, f"block header cut short ({len(head)} of 8 bytes)")
            return number
        if head[:4] == PCAPNG_SHB:
            order = _section_byte_order(name, blocks.read(4))
            interfaces = []
            body_len = struct.unpack(order + "I", head[4:8])[0] - 12
            first = False
        else:
            if first:
                raise CaptureError(f"{name}: pcapng file does not start with a section header")
            body_len = struct.unpack(order + "I", head[4:8])[0] - 8
        if body_len < 4 or body_len > MAX_RECORD:
            if first:
                raise CaptureError(f"{name}: pcapng section header is garbled")
            yield CaptureDamage(number + 1, f"garbled pcapng block (length {body_len + 8}); rest skipped")
            return number
        body = blocks.read(body_len)
        if len(body) < body_len:
            what = "packet block" if head[:4] != PCAPNG_SHB else "section header"
            yield CaptureDamage(number + 1, f"{what} cut short ({len(body)} of {body_len} bytes)")
            return number
        block_type = struct.unpack(order + "I", head[:4])[0]
        if block_type in (2, 3, 6):
            number += 1
            yield _pcapng_packet(block_type, body[:-4], order, interfaces, number)
        elif block_type == 1:
            if len(body) < 6:  # link type, reserved, snaplen: at least 2 bytes must be there
                yield CaptureDamage(number + 1, "interface description block too short")
            else:
                interfaces.append(_parse_idb(body[:-4], order))


def _section_byte_order(name: str, magic: bytes) -> str:
    if magic == b"\x4d\x3c\x2b\x1a":
        return "<"
    if magic == b"\x1a\x2b\x3c\x4d":
        return ">"
    raise CaptureError(f"{name}: pcapng section header has a bad byte-order magic")


def _parse_idb(body: bytes, order: str) -> _Interface:
    linktype = struct.unpack(order + "H", body[:2])[0]
    unit, offset = 1e-6, 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack(order + "HH", body[pos:pos + 4])
        value = body[pos + 4:pos + 4 + length]
        if code == 0:
            break
        if code == 9 and value:
            resolution = value[0]
            unit = 2.0 ** -(resolution & 0x7F) if resolution & 0x80 else 10.0 ** -resolution
        elif code == 14 and len(value) == 8:
            offset = struct.unpack(order + "q", value)[0]
        pos += 4 + (length + 3) // 4 * 4
    return _Interface(linktype, unit, offset)


def _pcapng_packet(
    block_type: int, body: bytes, order: str, interfaces: list[_Interface], number: int,
) -> Item:
    if block_type == 3:  # simple packet block: interface 0, no timestamp
        if len(body) < 4:
            return CaptureDamage(number, "simple packet block too short")
        wire_len = struct.unpack(order + "I", body[:4])[0]
        iface_id, ts_raw, data = 0, 0, body[4:4 + wire_len]
    else:
        if block_type == 6:
            if len(body) < 20:
                return CaptureDamage(number, "enhanced packet block too short")
            iface_id, hi, lo, caplen, wire_len = struct.unpack(order + "IIIII", body[:20])
        else:  # obsolete packet block
            if len(body) < 20:
                return CaptureDamage(number, "packet block too short")
            iface_id, _drops, hi, lo, caplen, wire_len = struct.unpack(order + "HHIIII", body[:20])
        ts_raw = (hi << 32) | lo
        data = body[20:20 + caplen]
        if len(data) < caplen:
            return CaptureDamage(number, f"packet data cut short ({len(data)} of {caplen} bytes)")
    if iface_id >= len(interfaces):
        return CaptureDamage(number, f"packet names interface {iface_id}, which was never described")
    iface = interfaces[iface_id]
    return RawFrame(number, ts_raw * iface.unit + iface.offset, iface.linktype, data, wire_len)

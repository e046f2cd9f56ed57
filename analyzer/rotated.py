"""Rotated capture sets (`tcpdump -C/-G`, dumpcap ring buffers) read as one continuous capture.

A set is a directory of capture files, or a list of files named together (`synfin analyze --set a b c`).
Its files are put in time order by each one's first frame time (not by name: `x.pcap10` sorts before
`x.pcap2`), files without a frame last, and read one after another as `mergecap -a` would join them:
frame numbers go on from file to file, and every connection crossing a boundary is continued, not cut
in two. A damaged or cut file ends where its damage is (as it would alone) and the next file goes on.

Both engines read a set the same way: the reference pipeline chains `capture.read_numbered` per file
(`read_set`); the compiled engine is handed every file's descriptor and its reader goes from one file to
the next itself (reader.c, reader_chain), on its own thread, so a set costs what one file of the same
frames costs. Gzip files and pipes cannot be handed over as descriptors: a set holding one is read by
the reference pipeline (`chainable`).

Where files meet, the summary says how (`Boundaries`): the largest gap between one file's last frame
and the next one's first, and every overlap (a file starting before the previous one ended; its frames
are read after the previous file's, as mergecap -a reads them, so time goes back there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.capture import (
    GZIP_MAGIC,
    PCAP_MAGICS,
    PCAPNG_SHB,
    CaptureError,
    Item,
    Progress,
    RawFrame,
    read_frames,
    read_numbered,
)

NAMED_OVERLAPS = 5  # how many overlaps the summary names


@dataclass
class CaptureSet:
    """A rotated set: its name (the directory, or the first file and how many more) and files in time order."""

    name: str
    files: list[Path]
    first: list[float | None]  # each file's first frame time

    def boundaries(self, last: list[float | None]) -> Boundaries:
        """The set's Boundaries, given each file's last frame time (as the compiled engine counts them)."""
        return Boundaries([str(p) for p in self.files], list(self.first), list(last))


@dataclass
class Boundaries:
    """Each file's first and last frame time (None: it has no frame), in the order the set is read."""

    names: list[str] = field(default_factory=list)
    first: list[float | None] = field(default_factory=list)
    last: list[float | None] = field(default_factory=list)

    def largest_gap(self) -> tuple[float, str, str] | None:
        """The longest silence between one file's last frame and the next file's first, if any."""
        gaps = [(after - before, a, b) for before, after, a, b in self._meetings() if after >= before]
        return max(gaps, key=lambda gap: gap[0]) if gaps else None

    def overlaps(self) -> list[tuple[float, str, str]]:
        """Each file that starts before the one read before it ended: by how much, and the two names."""
        return [(before - after, a, b) for before, after, a, b in self._meetings() if after < before]

    def _meetings(self) -> Iterator[tuple[float, float, str, str]]:
        """(last frame time of a file, first of the next file that has frames, their names)."""
        previous: tuple[float, str] | None = None
        for name, first, last in zip(self.names, self.first, self.last, strict=True):
            if first is None or last is None:
                continue
            if previous is not None:
                yield previous[0], first, previous[1], name
            previous = (last, name)


def is_capture_file(path: Path) -> bool:
    """Whether `path` is a regular file starting as a pcap, pcapng or gzip file does (a directory's
    other files, notes or checksums, are not part of the set)."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False
    return head in PCAP_MAGICS or head == PCAPNG_SHB or head[:2] == GZIP_MAGIC


def from_directory(directory: Path) -> CaptureSet:
    """The set of capture files in `directory` (not its subdirectories, nor hidden files)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as err:
        raise CaptureError(f"{directory}: cannot list: {err.strerror or err}") from None
    files = [p for p in entries if not p.name.startswith(".") and p.is_file() and is_capture_file(p)]
    if not files:
        raise CaptureError(f"{directory}: no capture files (pcap, pcapng, gzip) in this directory")
    return CaptureSet(str(directory), *in_time_order(files))


def from_files(files: list[Path]) -> CaptureSet:
    """The set of the files given together (`--set`), in time order."""
    name = str(files[0]) if len(files) == 1 else f"{files[0]} and {len(files) - 1} more"
    return CaptureSet(name, *in_time_order(files))


def in_time_order(files: list[Path]) -> tuple[list[Path], list[float | None]]:
    """The files by their first frame's time (then name), files without a frame last, and those times.
    Raises CaptureError for a file that is no capture, naming it, before anything is analyzed."""
    keyed = sorted((first is None, first or 0.0, str(path), path, first)
                   for path, first in ((path, first_time(path)) for path in files))
    return [key[3] for key in keyed], [key[4] for key in keyed]


def first_time(path: Path) -> float | None:
    """The time of the file's first frame, None if it has none."""
    frames = read_frames(path)
    try:
        return next((item.ts for item in frames if isinstance(item, RawFrame)), None)
    finally:
        frames.close()


def read_set(capture_set: CaptureSet, boundaries: Boundaries | None = None,
             progress: Progress | None = None) -> Iterator[Item]:
    """Every frame and damaged spot of the set's files, in order, numbered as one capture; `boundaries`, if
    given, gets each file's first and last frame times."""
    number = 0
    done = 0  # bytes of the files already read, for progress
    for path in capture_set.files:
        first: float | None = None
        last: float | None = None
        reading = read_numbered(path, None if progress is None else _offset(progress, done), number)
        while True:
            try:
                item = next(reading)
            except StopIteration as end:
                number = end.value
                break
            if isinstance(item, RawFrame):
                first = item.ts if first is None else first
                last = item.ts
            yield item
        done += _size(path)
        if boundaries is not None:
            boundaries.names.append(str(path))
            boundaries.first.append(first)
            boundaries.last.append(last)


def _offset(progress: Progress, done: int) -> Progress:
    return lambda count: progress(done + count)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def set_size(capture_set: CaptureSet) -> int:
    """All the set's bytes, for a progress bar."""
    return sum(_size(path) for path in capture_set.files)

"""`synfin live` on the compiled engine: libpcap's ring into C, no Python per frame.

The engine (analyzer/_engine/live.c) opens the interface through libpcap (a
TPACKET_V3 ring of `-B` MiB, the filter compiled into the kernel, nanosecond
stamps), reads, decodes and tracks every frame, and formats the events
(events.c: the very lines `format_event` and `event_json` print) into a
buffer. At least every 0.1 s it hands that buffer to `EngineSession._handle`,
which prints it, refreshes `--summary`, and says whether to stop (SIGINT,
SIGTERM, `--duration`); `--count` and a lost interface stop the engine
itself. Finished connections are written by the engine's sink thread to a
temporary file, as `synfin analyze` would write them (table rows or JSON
Lines), and copied out for the final report: nothing per connection is kept
in memory, so `--no-report` only spares the disk.

The reference path (live.py, live_cli.Session) stays: `--engine reference`,
and whenever the engine or its libpcap is missing, or the device is neither
Ethernet, loopback nor `any` (libpcap would pick another link type for it
than live.py's cooked one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from typing import IO, Any

from analyzer import engine
from analyzer.connection import Timeouts
from analyzer.live import (
    ANY,
    ARPHRD_ETHER,
    ARPHRD_LOOPBACK,
    DEFAULT_FILTERS,
    LiveError,
    device_type,
    interface_names,
    permission_message,
)
from analyzer.pipeline import Stats
from analyzer.report import Census, table_header, write_summary
from analyzer.styled import Styled, is_tty

RECORD_FORMATS = {"text": "table", "json": "json"}  # the final report's, by --format
REFRESH_SECONDS = 0.5


def usable(iface: str) -> str | None:
    """Why the engine cannot capture on `iface` (None: it can)."""
    if not engine.available():
        return "the compiled engine is not built"
    if not engine.filters_available():
        return "the compiled engine was built without libpcap (libpcap-dev)"
    if iface != ANY and iface in interface_names() and device_type(iface) not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return f"{iface} is neither Ethernet nor loopback (the engine reads those, and 'any')"
    return None


class EngineSession:
    """One live run on the engine: the handler it calls between reads, and the final report."""

    def __init__(self, args: argparse.Namespace, err: Any) -> None:
        from analyzer.live_cli import Rates, StopFlag

        if args.interface not in interface_names():
            raise LiveError(f"there is no interface named {args.interface!r}; the interfaces here are: "
                            + ", ".join(interface_names()))
        self.args = args
        self.err = err
        self.iface = args.interface
        cooked = args.interface == ANY
        self.filter = " ".join(args.filter) or DEFAULT_FILTERS[cooked]
        self.out = sys.stdout
        self.rates = Rates()
        self.stop = StopFlag()
        self.counts: dict[str, Any] = {}
        self.frames = self.received = self.dropped = 0
        self._totals = (0, 0, 0)
        self._deadline = time.monotonic() + args.duration if args.duration else float("inf")
        self._view: Any = None
        self._next_refresh = 0.0
        self._census: tuple[int, ...] = ()
        self._listening = False

    def run(self, report_out: IO[str]) -> None:
        """Capture until stopped; the records (for the report) go to a temporary file meanwhile."""
        args = self.args
        self.table_console = _table_console(report_out)
        colour = args.format == "text" and self.table_console.is_terminal and not self.table_console.no_color
        if args.write is not None:
            _check_writable(args.write)
        with contextlib.ExitStack() as stack:
            self.spool = stack.enter_context(tempfile.TemporaryFile())
            sink = stack.enter_context(open(os.devnull, "wb")) if args.no_report else self.spool
            stack.enter_context(self.stop)
            if args.summary:
                self._view = stack.enter_context(_live_view(self.out))
            timeouts = Timeouts(msl=args.msl, idle=args.idle_timeout, handshake=args.handshake_timeout)
            counts = engine.live(
                self.iface, self.filter, args.snaplen, args.buffer_size << 20,
                not args.no_promiscuous_mode and self.iface != ANY, self._loopback(), args.write,
                "counted" if args.summary else args.format, sink.fileno(), RECORD_FORMATS[args.format], colour,
                timeouts, args.count or 0, args.summary, self._handle)
            if "open_error" in counts:
                raise LiveError(self._open_error(counts["open_error"], counts["message"]))
            self.counts = counts
            if self._view is not None:
                self._refresh(force=True)
            self.report(report_out)

    def _loopback(self) -> bool:
        return self.iface != ANY and device_type(self.iface) == ARPHRD_LOOPBACK

    def _handle(self, events: bytes, frames: int, received: int, dropped: int, totals: tuple[int, int, int],
                census: tuple[int, ...] | None) -> bool:
        """Between two reads of the ring (and once before the first, when the capture is on): print the
        events; whether to stop."""
        if not self._listening:
            self._listening = True
            self.err.print(f"synfin: listening on {self.iface}, filter {self.filter!r}"
                           + (f", writing {self.args.write}" if self.args.write else ""), soft_wrap=True)
        if events:
            self.out.buffer.write(events)
            self.out.flush()
        self.frames, self.received, self.dropped = frames, received, dropped
        for kind, now, before in zip(("opens", "closes", "resets"), totals, self._totals, strict=True):
            self.rates.add(kind, now - before)
        self._totals = totals
        if census is not None:
            self._census = census
            self._refresh()
        return self.stop.requested or time.monotonic() >= self._deadline

    def _refresh(self, force: bool = False) -> None:
        if self._view is None or not (force or time.monotonic() >= self._next_refresh):
            return
        from analyzer.live_cli import STATE_ORDER, summary_group

        names = [str(name) for name in engine.STATES]
        census = {state: [0, 0] for state in STATE_ORDER}
        half = len(names)
        for index, count in enumerate(self._census):
            if count:
                census.setdefault(names[index % half], [0, 0])[index // half] += count
        open_count = sum(self._census[:half])
        self._view.update(summary_group(self.iface, open_count, census, self.rates, self.frames, self.dropped),
                          refresh=True)
        self._next_refresh = time.monotonic() + REFRESH_SECONDS

    def _open_error(self, code: int, message: str) -> str:
        kind = engine.live_error(code)
        if kind == "permission":
            return permission_message(self.iface)
        if kind == "no device":
            return (f"there is no interface named {self.iface!r}; the interfaces here are: "
                    + ", ".join(interface_names()))
        if kind == "bad filter":
            return f"bad filter {self.filter!r}: {message}"
        return f"cannot capture on {self.iface}: {message}"

    @property
    def lost(self) -> str | None:
        """Why the interface could no longer be read (None: it could), in live.py's words."""
        if not self.counts.get("lost"):
            return None
        if self.iface not in interface_names():
            return f"the interface {self.iface} disappeared"
        return f"the interface {self.iface} went down"

    def report(self, out: IO[str]) -> None:
        """The final report and summary, as `synfin analyze` prints them; then the kernel's counts."""
        from analyzer.live_cli import kernel_line

        self.out.flush()
        args, counts = self.args, self.counts
        summary_console = self.table_console if args.format == "text" else self.err
        if not args.no_report:
            if args.format == "text":
                out.write(table_header())
            out.flush()
            self.spool.seek(0)
            shutil.copyfileobj(self.spool, out.buffer if hasattr(out, "buffer") else _TextSink(out))
            out.flush()
        stats, census = Stats(), Census()
        engine.stats_from(counts, stats)
        engine.census_from(counts, census)
        if not args.no_summary:
            write_summary(f"{self.iface} (live)", stats, census, Styled(console=summary_console))
        # what the kernel passed but was never read; on "any", libpcap's skipping of loopback's outgoing copies
        # makes the kernel's count too high, so a stop that read the ring empty says 0 (live.py counts skips)
        unread = 0 if counts["drained"] else max(0, counts["received"] - counts["dropped"] - counts["frames"])
        summary_console.print(kernel_line(counts["received"], counts["dropped"], counts["frames"], unread))


class _TextSink:
    """A text stream taking bytes (a report file opened in text mode without a buffer)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        return self._out.write(data.decode("utf-8"))


def _table_console(out: IO[str]) -> Any:
    from rich.console import Console

    return Console(file=out, highlight=False, soft_wrap=True, width=None if is_tty(out) else 180)


@contextlib.contextmanager
def _live_view(out: IO[str]) -> Any:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out, highlight=False)
    with Live("", console=console, auto_refresh=False) as live:
        yield live
    console.line()  # the report starts on a line of its own


def _check_writable(path: Any) -> None:
    """-w: the file can be made (live.py's message if not); libpcap then writes it from the engine."""
    try:
        with open(path, "wb"):
            pass
    except OSError as err:
        raise LiveError(f"cannot write {path}: {err.strerror or err}") from None

"""`synfin live`: the analysis as it happens, on a live interface.

Two paths, chosen by --engine: the compiled engine reads libpcap's ring
(live_engine.py, the default whenever the engine was built with libpcap and
the device is Ethernet, loopback or `any`); the reference path, below, where
frames come from `live.LiveCapture` and go through the very `Pipeline` a
capture file goes through. Both print the same events and report.

While it runs, events (opened, state changes, closed) are printed one per
line, or as JSON Lines, or summarised in a table refreshed in place
(`--summary`). When it stops (Ctrl-C, SIGTERM, `--count`,
`--duration`) it prints the per-connection report and summary exactly as
`synfin analyze` would, and what the kernel dropped. Should the interface go
down or disappear while it runs, it stops too, prints the same report and
then one line saying why, and exits with status 1 (EXIT_INTERFACE_LOST).

Memory stays flat: idle connections are finished on wall-clock time when no
packets come (`Pipeline.tick`), and, on the reference path, finished connections are pickled to a
temporary file (in $TMPDIR, about 1.5 kB each) until the final report reads
them back; `--no-report` keeps nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import select
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from analyzer.cli import EXIT_BAD_INPUT, add_timing_options
from analyzer.connection import Connection, Timeouts
from analyzer.events import Event, EventWatcher, event_json, format_event
from analyzer.live import DEFAULT_SNAPLEN, LiveCapture, LiveError, PcapWriter
from analyzer.live_engine import EngineSession, usable
from analyzer.pipeline import Options, Pipeline, Stats
from analyzer.report import Census, write_json, write_summary, write_table
from analyzer.styled import Styled, is_tty

if TYPE_CHECKING:  # rich is imported when the command runs, not when its options are declared
    from rich.console import Console, Group
    from rich.live import Live

ENGINE_BUFFER_MIB = 128  # a TPACKET_V3 ring: about half a second of tcpreplay's top speed on the benchmark capture
REFERENCE_BUFFER_MIB = 32
EXIT_INTERFACE_LOST = 1  # the report of what was read is complete; the capture ended early
BATCH = 256  # frames read between two looks at the clock, signals and output
BUSY_SECONDS = 0.1  # reading at most this long, then back to the clock, signals, --summary
STOP_DRAIN_SECONDS = 2.0  # on stop, frames already queued are still read, this long at most
POLL_SECONDS = 0.2
REFRESH_SECONDS = 0.5
RATE_WINDOW = 5.0  # seconds over which --summary averages opens/closes/resets


def add_live(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "live", help="analyze the traffic of a network interface as it happens",
        description="Print connection events as they happen on an interface; on stop "
                    "(Ctrl-C, SIGTERM, --count, --duration) print the report `synfin analyze` would.")
    parser.add_argument("filter", nargs="*", metavar="FILTER",
                        help="tcpdump filter expression (default: tcp), compiled into the kernel")
    parser.add_argument("-i", "--interface", default="any", metavar="IFACE",
                        help="interface to listen on (default: any)")
    parser.add_argument("-f", "--format", choices=("text", "json"), default="text",
                        help="events as text lines (default) or JSON Lines; the final report "
                             "is then a table or JSON Lines, as with `synfin analyze`")
    parser.add_argument("--summary", action="store_true",
                        help="instead of events, a table refreshed in place: states of the open "
                             "connections, opens/closes/resets per second")
    parser.add_argument("-w", "--write", type=Path, metavar="FILE",
                        help="also write the captured frames to FILE (pcap)")
    parser.add_argument("-c", "--count", type=_positive_int, metavar="N",
                        help="stop after N frames")
    parser.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                        help="stop after SECONDS")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write the final report to FILE instead of standard output")
    parser.add_argument("--no-summary", action="store_true", help="leave out the final summary")
    parser.add_argument("--no-report", action="store_true",
                        help="leave out the final per-connection report (finished connections are "
                             "then not kept on disk until the end: for runs of days)")
    parser.add_argument("-s", "--snaplen", type=_positive_int, default=DEFAULT_SNAPLEN,
                        metavar="BYTES", help=f"bytes kept of each frame (default {DEFAULT_SNAPLEN})")
    parser.add_argument("-B", "--buffer-size", type=_positive_int, default=None, metavar="MiB",
                        help=f"kernel buffer, MiB: the compiled engine's ring (default {ENGINE_BUFFER_MIB}), the "
                             f"reference's socket buffer (default {REFERENCE_BUFFER_MIB})")
    parser.add_argument("-p", "--no-promiscuous-mode", action="store_true",
                        help="do not put the interface into promiscuous mode")
    parser.add_argument("--engine", choices=("auto", "compiled", "reference"), default="auto",
                        help="compiled: the C engine reads libpcap's ring (fast: see the README); reference: "
                             "the Python pipeline reads a packet socket (slow); auto (default): compiled when "
                             "built with libpcap and the interface is Ethernet, loopback or 'any'. Both print "
                             "the same events and report")
    add_timing_options(parser)
    parser.set_defaults(run=run_live)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def run_live(args: argparse.Namespace) -> int:
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    why_not = usable(args.interface) if args.engine != "reference" else "reference"
    if args.engine == "compiled" and why_not is not None:
        err.print(f"[red]synfin live: {why_not}; use --engine reference[/]", soft_wrap=True)
        return EXIT_BAD_INPUT
    if why_not is None:
        args.buffer_size = args.buffer_size or ENGINE_BUFFER_MIB
        return _ended(_run_engine, args, err)
    args.buffer_size = args.buffer_size or REFERENCE_BUFFER_MIB
    if args.engine == "auto":
        err.print(f"[yellow]synfin: note: {why_not}; using the reference pipeline, which drops frames "
                  "above about 10,000 a second[/]", soft_wrap=True)
    return _ended(_run_reference, args, err)


def _run_engine(args: argparse.Namespace, err: Console) -> str | None:
    """The compiled path (live_engine.py); the reason it stopped if the interface was lost."""
    with contextlib.ExitStack() as stack:
        report = stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output else None
        session = EngineSession(args, err)
        session.run(report or sys.stdout)
    return session.lost


def _run_reference(args: argparse.Namespace, err: Console) -> str | None:
    """The Python path: live.py's packet socket into the reference pipeline; the reason it stopped if the
    interface was lost."""
    with contextlib.ExitStack() as stack:
        capture = stack.enter_context(LiveCapture(
            args.interface, " ".join(args.filter) or None, args.snaplen,
            args.buffer_size << 20, not args.no_promiscuous_mode))
        writer = PcapWriter(args.write, capture.linktype, args.snaplen) if args.write else None
        if writer is not None:
            stack.callback(writer.close)
        report = stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output else None
        err.print(f"synfin: listening on {capture.iface}, filter {capture.filter!r}"
                  + (f", writing {args.write}" if args.write else ""), soft_wrap=True)
        session = Session(args, capture, writer)
        session.run()
        session.report(report or sys.stdout, err)
    return capture.lost


def _ended(run: Callable[[argparse.Namespace, Console], str | None], args: argparse.Namespace,
           err: Console) -> int:
    """Run either path; its errors as one line each and the exit status (a lost interface after the report)."""
    try:
        lost = run(args, err)
    except LiveError as problem:
        err.print(f"[red]synfin live: {problem}[/]", soft_wrap=True)
        return EXIT_BAD_INPUT
    except OSError as problem:  # the -o or -w file, mostly
        err.print(f"[red]synfin live: {problem.strerror or problem}"
                  f"{f': {problem.filename}' if problem.filename else ''}[/]", soft_wrap=True)
        return EXIT_BAD_INPUT
    if lost:
        err.print(f"[red]synfin live: stopped: {lost}[/]", soft_wrap=True)
        return EXIT_INTERFACE_LOST
    return 0


class Session:
    """One live run: the capture loop, the events, the spool for the final report."""

    def __init__(self, args: argparse.Namespace, capture: LiveCapture, writer: PcapWriter | None) -> None:
        self.args = args
        self.capture = capture
        self.writer = writer
        self.stats = Stats()
        self.out = sys.stdout
        self.rates = Rates()
        emit = self.rates.note if args.summary else self._printer(args.format)
        self.watcher = EventWatcher(emit)
        timeouts = Timeouts(msl=args.msl, idle=args.idle_timeout, handshake=args.handshake_timeout)
        self.pipeline = Pipeline(self.stats, Options(timeouts), self.watcher.on_segment)
        self.spool = None if args.no_report else Spool()
        self.census = Census()
        self.stop = StopFlag()

    def _printer(self, fmt: str) -> Callable[[Event], None]:
        line = event_json if fmt == "json" else format_event
        write = self.out.write
        return lambda event: write(line(event) + "\n")

    def run(self) -> None:
        deadline = time.monotonic() + self.args.duration if self.args.duration else float("inf")
        with self.stop, self._view() as view:
            poller = select.poll()
            poller.register(self.capture.fileno(), select.POLLIN)
            poller.register(self.stop.fileno(), select.POLLIN)
            next_refresh = 0.0
            while not (self.stop.requested or self._counted() or self.capture.lost):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                poller.poll(min(POLL_SECONDS, left) * 1000)
                self._read(time.monotonic() + BUSY_SECONDS)
                if view is not None and time.monotonic() >= next_refresh:
                    view.update(self._summary_table(), refresh=True)
                    next_refresh = time.monotonic() + REFRESH_SECONDS
            if not self.capture.lost:
                self._read(time.monotonic() + STOP_DRAIN_SECONDS)  # captured before the stop
            self._take(self.pipeline.close())
            if view is not None:
                view.update(self._summary_table(), refresh=True)
        self.capture.drop_counts()

    def _read(self, until: float) -> None:
        """Feed what the socket holds, up to time `until`; tick the clock once it is empty."""
        while not (self._counted() or self.capture.lost):
            limit = self._limit()
            frames = self.capture.read(limit, self.writer)
            for frame in frames:
                self._take(self.pipeline.feed(frame))
            if self.capture.lost:
                break
            if len(frames) < limit:  # the queue is empty: everything up to now is in
                self._take(self.pipeline.tick(time.time()))
                break
            if time.monotonic() >= until:
                break
        self._flush()

    def _counted(self) -> bool:
        return self.args.count is not None and self.capture.frames >= self.args.count

    def _limit(self) -> int:
        count = self.args.count
        return BATCH if count is None else max(1, min(BATCH, count - self.capture.frames))

    def _take(self, conns: list[Connection]) -> None:
        for conn in conns:
            self.watcher.finished(conn)
            deque(self.census.count((conn,)), maxlen=0)  # counted as it finishes: --no-report too
            if self.spool is not None:
                self.spool.add(conn)

    def _flush(self) -> None:
        self.out.flush()
        if self.writer is not None:
            self.writer.flush()

    @contextlib.contextmanager
    def _view(self) -> Iterator[Live | None]:
        if not self.args.summary:
            yield None
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.out, highlight=False)
        with Live(self._summary_table(), console=console, auto_refresh=False) as live:
            yield live
        console.line()  # the report starts on a line of its own

    def _summary_table(self) -> Group:
        return summary_view(self.capture.iface, self.pipeline, self.rates, self.capture)

    def report(self, out: IO[str], err: Console) -> None:
        """The final report and summary, as `synfin analyze` prints them; then the kernel's counts."""
        from rich.console import Console

        self._flush()
        table_console = Console(file=out, highlight=False, soft_wrap=True,
                                width=None if is_tty(out) else 180)
        summary_console = table_console if self.args.format == "text" else err
        if self.spool is not None:
            conns = self.spool.replay()
            if self.args.format == "json":
                write_json(conns, out)
            else:
                write_table(conns, table_console)
            self.spool.close()
        if not self.args.no_summary:
            write_summary(f"{self.capture.iface} (live)", self.stats, self.census, Styled(console=summary_console))
        kernel = self.capture.kernel
        summary_console.print(kernel_line(kernel.received, kernel.dropped, self.capture.frames, self.capture.unread))


def kernel_line(received: int, dropped: int, analyzed: int, unread: int) -> str:
    """The report's last line: what the kernel passed and dropped, what was analyzed (rich markup)."""
    drops = f"[yellow]{dropped} dropped[/]" if dropped else "0 dropped"
    left = f", [yellow]{unread} left unread at the stop[/]" if unread else ""
    return f"  kernel: {received} frames passed the filter, {drops}, {analyzed} analyzed{left}"


class Spool:
    """Finished connections, pickled to a temporary file until the final report."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.count = 0

    def add(self, conn: Connection) -> None:
        pickle.dump(conn, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self.count += 1

    def replay(self) -> Iterator[Connection]:
        self._file.flush()
        self._file.seek(0)
        for _ in range(self.count):
            yield pickle.load(self._file)

    def close(self) -> None:
        self._file.close()


class StopFlag:
    """SIGINT and SIGTERM ask the loop to stop; a wake-up socket ends its wait at once."""

    def __init__(self) -> None:
        self.requested = False
        self._reader, self._writer = socket.socketpair()
        self._saved: dict[int, Any] = {}
        self._saved_fd = -1

    def fileno(self) -> int:
        return self._reader.fileno()

    def _handler(self, signum: int, frame: object) -> None:
        self.requested = True

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handler)
        self._writer.setblocking(False)
        self._saved_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        return self

    def __exit__(self, *_: object) -> None:
        signal.set_wakeup_fd(self._saved_fd)
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._reader.close()
        self._writer.close()


class Rates:
    """Opens, closes and resets over the last few seconds, for `--summary`."""

    def __init__(self) -> None:
        self.totals = {"opens": 0, "closes": 0, "resets": 0}
        self._recent: dict[str, deque[tuple[float, int]]] = {kind: deque() for kind in self.totals}

    def note(self, event: Event) -> None:
        kind = event["event"]
        if kind == "open" and event["open"] != "refused":
            self._count("opens")
        elif kind == "close" and not event.get("revised"):
            self._count("closes")
            if event["close"] == "reset" or event["open"] == "refused":
                self._count("resets")

    def _count(self, kind: str) -> None:
        self.add(kind, 1)

    def add(self, kind: str, count: int) -> None:
        """`count` more of `kind` now (the engine's totals come in steps, between reads)."""
        if count:
            self.totals[kind] += count
            self._recent[kind].append((time.monotonic(), count))

    def per_second(self, kind: str) -> float:
        recent, cutoff = self._recent[kind], time.monotonic() - RATE_WINDOW
        while recent and recent[0][0] < cutoff:
            recent.popleft()
        return sum(count for _, count in recent) / RATE_WINDOW


STATE_ORDER = ("SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
               "CLOSING", "LAST_ACK", "TIME_WAIT", "CLOSED", "LISTEN")


def summary_view(iface: str, pipeline: Pipeline, rates: Rates, capture: LiveCapture) -> Group:
    """The census of endpoint states of the open connections, and the rates."""
    census: dict[str, list[int]] = {state: [0, 0] for state in STATE_ORDER}
    for conn in pipeline.tracker.open.values():
        for side, ep in enumerate((conn.client, conn.server)):
            census.setdefault(str(ep.state), [0, 0])[side] += 1
    kernel = capture.drop_counts()
    return summary_group(iface, len(pipeline.tracker.open), census, rates, capture.frames, kernel.dropped)


def summary_group(iface: str, open_count: int, census: dict[str, list[int]], rates: Rates, frames: int,
                  dropped: int) -> Group:
    """--summary's view: states of the open connections (clients, servers), the rates, the frame counts."""
    from rich.console import Group
    from rich.table import Table

    states = Table(title=f"{iface}: {open_count} open connections", box=None,
                   header_style="bold", title_justify="left")
    for name, justify in (("state", "left"), ("clients", "right"), ("servers", "right")):
        states.add_column(name, justify=justify)  # type: ignore[arg-type]
    for state, (clients, servers) in census.items():
        if clients or servers:
            states.add_row(state, str(clients), str(servers))
    flow = Table(box=None, header_style="bold")
    for name in ("", "per second", "total"):
        flow.add_column(name, justify="right" if name else "left")
    for kind in ("opens", "closes", "resets"):
        flow.add_row(kind, f"{rates.per_second(kind):.1f}", str(rates.totals[kind]))
    return Group(states, "", flow, "", f"{frames} frames, {dropped} dropped by the kernel")

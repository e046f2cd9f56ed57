"""The `synfin` command line."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import stat
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from analyzer import __version__, engine, parallel
from analyzer.bpf import FilterError, looks_like_filter
from analyzer.bpf import check as check_filter
from analyzer.capture import STDIN, CaptureError, capture_name, capture_path, is_stdin
from analyzer.connection import Timeouts
from analyzer.dask_exec import DaskMissing, dask_available, mapper
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS
from analyzer.ladder_cli import add_ladder
from analyzer.parallel import Executor
from analyzer.pipeline import Stats, analyze
from analyzer.report import Census, csv_header, table_header, write_csv, write_json, write_summary, write_table
from analyzer.report_cli import add_report
from analyzer.rotated import CaptureSet, from_directory, from_files, set_size
from analyzer.styled import Styled, console_for, is_tty
from analyzer.where import STATE_NAMES, WhereError
from analyzer.where import parse as parse_where

if TYPE_CHECKING:
    from rich.console import Console

PROGRESS_MIN_BYTES = 16 << 20
EXIT_BAD_INPUT = 2

DESCRIPTION = """\
How each TCP connection opened and closed, and why: two RFC 9293 state
machines per connection, labelled (handshake, refused, four-way, three-way,
simultaneous, reset, half-closed, ...)."""


def build_parser() -> argparse.ArgumentParser:
    from analyzer.live_cli import add_live  # imports this module: not at the top

    parser = argparse.ArgumentParser(prog="synfin", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"synfin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_analyze(commands)
    add_ladder(commands)
    add_report(commands)
    add_live(commands)
    return parser


def seconds(text: str) -> float:
    """A timing option's value (an argparse type): a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, not {text}")
    return value


def add_timing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--msl", type=seconds, default=30.0, metavar="SECONDS",
                        help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default 30, as Linux's 60 s)")
    parser.add_argument("--idle-timeout", type=seconds, default=900.0, metavar="SECONDS",
                        help="forget an established connection idle this long (default 900)")
    parser.add_argument("--handshake-timeout", type=seconds, default=40.0, metavar="SECONDS",
                        help="forget a handshake that never completes after this long idle (default 40)")


def add_filter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", dest="bpf", metavar="EXPR",
                        help="analyze only the frames this BPF expression matches, as tcpdump -r FILE EXPR "
                             "selects them (pcap-filter(7), e.g. 'tcp port 443', 'vlan and host 10.0.0.1'); "
                             "frame numbers stay the file's. Quote it: it is one argument")


WHERE_HELP = (
    "only the connections this term matches: KEY=VALUE, or KEY!=VALUE for the others; VALUE may be a comma list "
    "(any of them); repeat --where (or separate terms by spaces) for terms that must all hold. Keys: "
    f"open ({', '.join(OPEN_LABELS)}), close ({', '.join(CLOSE_LABELS)}), closer (client, server, both, none), "
    "reset_by (client, server, none), reset_state (a state, or none), half_close (yes, no), "
    "client_state, server_state (that end's final state), state (either end's final state; states: "
    f"{', '.join(STATE_NAMES)}, in any case), retransmits, anomalies (yes: any; no), ip_version (4, 6), "
    "client, server, endpoint (that end, either end: ADDRESS, ADDRESS/PREFIX, PORT, ADDRESS:PORT, "
    "[IPv6]:PORT), host (either end's address or network), port (either end's port). E.g. --where close=reset "
    "--where port=443, --where 'state!=CLOSED,TIME_WAIT'")


def add_where_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument("--where", action="append", metavar="KEY=VALUE", help=WHERE_HELP + what)


def check_where_args(args: argparse.Namespace, err: Styled) -> bool:
    """Parse --where into args.where_filter (None without one); False (and a one-line message) if a term is bad."""
    try:
        args.where_filter = parse_where(args.where)
    except WhereError as bad:
        err.line((f"synfin: {bad}", "red"))
        return False
    return True


def filter_misplaced(captures: list[str | Path]) -> str | None:
    """The error for a filter expression given where a capture goes (`synfin analyze x.pcap 'tcp port 80'`):
    an argument that is no file and looks like an expression, named with the rest of the arguments after it;
    None if there is none. Checked before anything is read."""
    missing = [str(c) for c in captures if not is_stdin(c) and not os.path.lexists(c)]
    first = next((i for i, text in enumerate(missing) if looks_like_filter(text)), None)
    if first is None:
        return None
    expression = " ".join(missing[first:])
    return (f"synfin: {missing[first]!r} is not a file but looks like a filter expression: "
            f"use --filter {shlex.quote(expression)}")


def check_filter_args(args: argparse.Namespace, captures: list[str | Path], err: Styled) -> bool:
    """Before reading anything: no expression where a capture goes, and a --filter libpcap compiles. False
    (and a one-line message on `err`) if not."""
    problem = filter_misplaced(captures)
    if problem is None and args.bpf is not None:
        try:
            check_filter(args.bpf)
        except FilterError as bad:
            problem = f"synfin: {bad}"
    if problem is not None:
        err.line((problem, "red"))
        return False
    return True


def add_analyze(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "analyze", help="analyze capture files (pcap, pcapng, gzip)",
        description="Report how every TCP connection in the captures opened and closed (with --filter, in "
                    "the frames a BPF expression selects, as tcpdump -r FILE EXPR does).")
    parser.add_argument("captures", nargs="*", type=capture_path, metavar="CAPTURE",
                        help="pcap or pcapng file, optionally gzip-compressed; a named pipe or <(command) "
                             "works too; - reads standard input (called 'standard input' in messages and "
                             "the summary, '-' in the capture column; ./- is a file named -). A directory is a "
                             "rotated set (its capture files read as one capture, see --set). Each CAPTURE is "
                             "analyzed on its own. A filter expression goes in --filter, never here")
    parser.add_argument("--set", nargs="+", type=Path, dest="set_files", metavar="FILE",
                        help="files of one rotated set (tcpdump -C/-G, dumpcap ring buffer), read as ONE capture "
                             "as mergecap -a joins them: in the order of their first frame times (not their "
                             "names), frame numbers going on from file to file, connections continued across "
                             "files; the summary names the largest gap and every overlap between files. Put "
                             "--set after any CAPTURE (it takes every file that follows)")
    add_parallel_options(parser)
    add_filter_option(parser)
    add_where_option(parser, "; the summary counts the connections it matched (and says how many of all)")
    parser.add_argument("-f", "--format", choices=("table", "json", "csv"), default="table",
                        help="table (default), JSON Lines (one object per connection) or CSV")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write connections to FILE instead of standard output")
    parser.add_argument("--no-summary", action="store_true", help="leave out the summary")
    add_engine_option(parser, ", the one live capture uses")
    add_timing_options(parser)
    parser.set_defaults(run=run_analyze, usage_error=parser.error)


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="analyze a rotated set's files in parallel, each by the compiled engine, on a local "
                             "Dask cluster of N worker processes (pip install 'synfin[dask]'; without it, the "
                             "files are run one after another here), and merge them: the output is exactly the "
                             "one of reading the set in sequence (the default, and on one machine the faster: "
                             "the merge runs here, in Python per connection; see the README)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="as --workers, on a running `dask scheduler` (e.g. tcp://10.0.0.5:8786) and its "
                             "workers, which must have synfin installed and read the set's files at the same paths")


def positive_int(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `synfin analyze x.pcap | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush into the pipe at exit
        return 0


def add_engine_option(parser: argparse.ArgumentParser, reference_users: str) -> None:
    parser.add_argument("--engine", choices=("auto", "compiled", "reference"), default="auto",
                        help="compiled: the C engine (fast; built at install); reference: the Python "
                             f"pipeline (slow{reference_users}); auto (default): compiled when built. "
                             "Both give the same output")


def pick_engine(args: argparse.Namespace, err: Styled) -> bool:
    """Set args.compiled from --engine (and --filter): False, and a one-line message, if the engine asked
    for cannot run; a note when auto falls back to the reference pipeline."""
    if args.engine == "compiled" and not engine.available():
        err.line(("synfin: the compiled engine is not built (was a C compiler present at install?); "
                  "use --engine reference", "red"))
        return False
    if args.engine == "compiled" and args.bpf is not None and not engine.filters_available():
        err.line(("synfin: the compiled engine was built without libpcap (libpcap-dev), so it cannot filter; "
                  "use --engine reference", "red"))
        return False
    usable = engine.available() and (args.bpf is None or engine.filters_available())
    args.compiled = args.engine == "compiled" or (args.engine == "auto" and usable)
    if args.engine == "auto" and not args.compiled:
        why = ("was built without libpcap (libpcap-dev), so it cannot filter" if engine.available()
               else "is not built")
        err.line((f"synfin: note: the compiled engine {why}; using the reference pipeline, "
                  "which is slow on large captures", "yellow"))
    return True


def run_analyze(args: argparse.Namespace) -> int:
    err = Styled()  # standard error
    status = 0
    if not args.captures and not args.set_files:  # argparse's message and status 2, as when CAPTURE was required
        args.usage_error("the following arguments are required: CAPTURE (or --set FILE ...)")
    if not check_filter_args(args, args.captures + (args.set_files or []), err) or not check_where_args(args, err):
        return EXIT_BAD_INPUT
    if not pick_engine(args, err):
        return EXIT_BAD_INPUT
    try:
        args.captures = with_sets(args.captures, args.set_files)
    except CaptureError as problem:
        err.line((f"synfin: {problem}", "red"))
        return EXIT_BAD_INPUT
    with ExitStack() as stack:
        out: IO[str] = (stack.enter_context(open(args.output, "w", encoding="utf-8"))
                        if args.output else sys.stdout)
        table_console = (console_for(out, width=None if is_tty(out) else 180)
                         if args.format == "table" else None)  # JSON and CSV need no rich
        summary = Styled(out, table_console) if table_console is not None else err
        try:
            args.mapper = _mapper(args, stack, err)
        except (DaskMissing, OSError, TimeoutError) as problem:  # no dask; no scheduler at that address
            err.line((f"synfin: {problem}", "red"))
            return EXIT_BAD_INPUT
        for index, path in enumerate(args.captures):
            try:
                _analyze_one(args, path, out, table_console, summary, err, index)
            except CaptureError as problem:
                err.line((f"synfin: {problem}", "red"))
                status = EXIT_BAD_INPUT
    return status


def _mapper(args: argparse.Namespace, stack: ExitStack, err: Styled) -> Executor | None:
    """With --workers or --scheduler, and a set to analyze with the compiled engine: where its files run
    (dask_exec.py), the cluster started for the whole command; otherwise None (sets are read in sequence)."""
    if not (args.workers or args.scheduler) or not args.compiled:
        return None
    if not any(isinstance(path, CaptureSet) for path in args.captures):
        return None
    if args.scheduler is None and not dask_available():
        err.line(("synfin: note: dask is not installed (pip install 'synfin[dask]'): the set's files are run "
                  "one after another here", "yellow"))
    return stack.enter_context(mapper(args.workers, args.scheduler))


def with_sets(captures: list[str | Path], set_files: list[Path] | None) -> list[str | Path | CaptureSet]:
    """The captures to analyze: each directory a rotated set, and the files of --set one more (rotated.py).
    Raises CaptureError (a file that is no capture, a directory without one) before anything is analyzed."""
    items: list[str | Path | CaptureSet] = [
        from_directory(c) if isinstance(c, Path) and c.is_dir() else c for c in captures]
    if set_files:
        items.append(from_files(set_files))
    return items


def _name(path: str | Path | CaptureSet) -> str:
    return path.name if isinstance(path, CaptureSet) else capture_name(path)


def _analyze_one(args: argparse.Namespace, path: str | Path | CaptureSet, out: IO[str],
                 table_console: Console | None, summary: Styled, err: Styled, index: int) -> None:
    stats, census = Stats(), Census()
    capture = (STDIN if is_stdin(path) else _name(path)) if len(args.captures) > 1 else None
    if table_console is not None and len(args.captures) > 1:
        table_console.rule(_name(path))
    compiled = args.compiled and (not isinstance(path, CaptureSet) or _chainable(path, err))
    with _progress_bar(path, err) as progress:
        if compiled:
            colour = table_console is not None and table_console.is_terminal and not table_console.no_color
            if args.format == "table":
                out.write(table_header())
            elif args.format == "csv" and index == 0:
                out.write(csv_header())
            timeouts = Timeouts(msl=args.msl, idle=args.idle_timeout, handshake=args.handshake_timeout)
            if isinstance(path, CaptureSet) and args.mapper is not None:
                counts = parallel.run_set(path, out, args.format, timeouts, capture, colour, args.bpf,
                                          args.where_filter, args.mapper)
            else:
                run = engine.run_set if isinstance(path, CaptureSet) else engine.run
                counts = run(path, out, args.format, timeouts, capture, colour, progress, args.bpf,  # type: ignore[arg-type]
                             args.where_filter)
            engine.stats_from(counts, stats)
            engine.census_from(counts, census)
            if isinstance(path, CaptureSet):
                stats.boundaries = path.boundaries(counts["last_ts"])
        else:
            _analyze_reference(args, path, out, table_console, stats, census, capture, progress, index)
    if not args.no_summary:
        where = args.where_filter.text if args.where_filter is not None else None
        write_summary(_name(path), stats, census, summary, where)


def _chainable(capture_set: CaptureSet, err: Styled) -> bool:
    """Whether the compiled engine can read the set; a note if not (a gzip file in it: the reference reads it)."""
    if engine.chainable(capture_set):
        return True
    err.line((f"synfin: note: {capture_set.name} holds a gzip file, which the compiled engine cannot chain; "
              "using the reference pipeline, which is slow on large captures", "yellow"))
    return False


def _analyze_reference(args: argparse.Namespace, path: str | Path | CaptureSet, out: IO[str],
                       table_console: Console | None,
                       stats: Stats, census: Census, capture: str | None, progress: Any, index: int) -> None:
    """The Python pipeline: a Connection object per connection, written by report.py."""
    conns = census.count(analyze(path, msl=args.msl, idle_timeout=args.idle_timeout,
                                 handshake_timeout=args.handshake_timeout,
                                 stats=stats, progress=progress, bpf=args.bpf, where=args.where))
    if args.format == "json":
        write_json(conns, out, capture)
    elif args.format == "csv":
        write_csv(conns, out, capture, header=index == 0)
    else:
        write_table(conns, table_console or console_for(out))


@contextmanager
def _progress_bar(path: str | Path | CaptureSet, err: Styled) -> Iterator[object]:
    """A progress bar on stderr for large files, when stderr is a terminal (none for a pipe: no size)."""
    if isinstance(path, CaptureSet):
        size = set_size(path)
    else:
        try:
            info = os.fstat(0) if is_stdin(path) else os.stat(path)
            size = info.st_size if stat.S_ISREG(info.st_mode) else 0
        except OSError:
            size = 0
    if size < PROGRESS_MIN_BYTES or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn  # only for big files

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=err.console, transient=True)
    label = path.name if isinstance(path, CaptureSet) else capture_name(path) if is_stdin(path) else Path(path).name
    task = bar.add_task(label, total=size)
    with bar:
        yield lambda done: bar.update(task, completed=done)


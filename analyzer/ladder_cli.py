"""`synfin ladder`: draw connections of a capture as ladder diagrams.

    synfin ladder capture.pcap                       # CAPTURE-ID.png per connection, here
    synfin ladder capture.pcap --conn 3 -o c3.svg    # one connection, as SVG
    synfin ladder capture.pcap -o all.pdf            # every connection, a page each
    synfin ladder capture.pcap --conn 3 --text       # box-drawing ladder on the terminal
    synfin ladder capture.pcap --conn 3 --mermaid    # a Mermaid sequenceDiagram
    synfin ladder capture.pcap --where close=reset --text   # the connections --where matches
    zcat capture.pcap.gz | synfin ladder - --text    # "-": standard input (stdin-ID.png for pictures)

The connections asked for by id (and, without --conn, the default pictures)
are found by the compiled engine, which stops reading once they have
finished, and laid out by the reference pipeline (ladder_source.py); --conn
all, and every connection as text, Mermaid or one PDF, run the reference
pipeline over the whole capture (as --engine reference does).

With --where, no connection matching is exit status 1, as is a capture with
no TCP connection at all. Errors are one line on standard error and exit status 2: an unreadable
capture, an unknown connection id (the ids there are are listed), an output
name that is not .png/.svg/.pdf. Matplotlib is imported only when a picture
is drawn, so `--text` and `--mermaid` start fast.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from analyzer import engine
from analyzer.capture import CaptureError, capture_name, capture_path, is_stdin
from analyzer.connection import Connection, Timeouts
from analyzer.pipeline import analyze
from analyzer.rotated import CaptureSet
from analyzer.styled import Styled
from analyzer.where import matching_ids

if TYPE_CHECKING:
    from analyzer.ladder import Ladder

EXIT_BAD_INPUT = 2
EXIT_NOTHING = 1
MAX_DEFAULT_FILES = 20  # more connections than this need --conn (or --conn all) for picture files
PICTURE_SUFFIXES = (".png", ".svg", ".pdf")

DESCRIPTION = """\
Draw TCP connections as ladder diagrams: client line on the left, server line
on the right, time running down, one slanted arrow per segment labelled with
its flags, relative seq:seq+len, ack, length and frame number, and each
endpoint's state written beside its line where the analyzer says it changed.

Output: without -o, one PNG per connection in the current directory, named
CAPTURE-ID.png (CAPTURE is the capture's name without its extension). With
-o FILE the extension picks the format (.png, .svg, .pdf); several
connections give FILE-ID.png files, or one PDF with a page per connection.
--text and --mermaid print to standard output (or -o FILE) instead."""

EPILOG = """\
examples:
  synfin ladder handshake.pcap                 handshake-0.png (one file per connection)
  synfin ladder busy.pcap --conn 4 7 -o x.pdf  connections 4 and 7, a page each
  synfin ladder slow.pcap --time sequential    one row per segment, pauses not shown
  synfin ladder x.pcap --conn 0 --text         paste into a ticket
  synfin ladder x.pcap --conn 0 --mermaid > ladder.mmd
  synfin ladder x.pcap --where open=refused --text   the connections a --where term matches
                                               (as `synfin analyze --where` selects them)
  zcat x.pcap.gz | synfin ladder - --text      standard input ("-"), or a pipe: <(ssh h cat x.pcap)
  synfin ladder x.pcap --filter 'port 443'     only the frames a BPF expression matches (connection ids
                                               as `synfin analyze --filter 'port 443'` numbers them)"""


def add_ladder(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from analyzer.cli import add_engine_option, add_filter_option, add_timing_options, add_where_option

    parser = commands.add_parser(
        "ladder", help="draw connections as ladder diagrams (PNG, SVG, PDF, text, Mermaid)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", nargs="?", type=capture_path, metavar="CAPTURE",
                        help="pcap or pcapng file, optionally gzipped; a named pipe or <(command) works too; "
                             "- reads standard input (pictures are then named stdin-ID.png); a directory is "
                             "a rotated set, read as one capture (see --set)")
    parser.add_argument("--set", nargs="+", type=Path, dest="set_files", metavar="FILE",
                        help="instead of CAPTURE: the files of one rotated set, read as one capture, as "
                             "`synfin analyze --set` reads them (connection ids and frame numbers the same)")
    parser.add_argument("--conn", nargs="+", action="extend", metavar="ID", default=[],
                        help="connection ids to draw, as `synfin analyze` numbers them, or 'all' "
                             f"(default: all of them, if there are at most {MAX_DEFAULT_FILES})")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="output file; .png, .svg or .pdf picks the picture format "
                             "(default: CAPTURE-ID.png in the current directory)")
    parser.add_argument("--time", choices=("proportional", "sequential"), default="proportional",
                        help="proportional (default): spacing follows time, pauses of 1 s or more are cut "
                             "and marked '≈ 3.2 s'; sequential: one row per segment")
    parser.add_argument("--absolute", action="store_true",
                        help="raw sequence and acknowledgement numbers instead of relative ones")
    parser.add_argument("--all-segments", action="store_true",
                        help="draw every segment; by default long runs of data and ACKs collapse into "
                             "one block ('… 1,204 segments, 1.6 MB …')")
    add_filter_option(parser)
    add_where_option(parser, "; with --conn, a connection must be named there and match")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--text", action="store_true", help="print a box-drawing ladder instead of a picture")
    form.add_argument("--mermaid", action="store_true", help="print a Mermaid sequenceDiagram instead")
    add_engine_option(parser, "; used for --conn all, and for every connection with --text, --mermaid or "
                              "a PDF: see ladder_source.py")
    add_timing_options(parser)
    parser.set_defaults(run=run_ladder, usage_error=parser.error)


class LadderError(Exception):
    """A problem with the command's input; the message is shown as is."""


def run_ladder(args: argparse.Namespace) -> int:
    from analyzer.cli import check_filter_args, check_where_args, pick_engine

    err = Styled()  # standard error
    if (args.capture is None) == (args.set_files is None):  # argparse's message and status 2
        args.usage_error("give one CAPTURE (a file or a directory), or --set FILE ...")
    given = [args.capture] if args.capture is not None else args.set_files
    if (not check_filter_args(args, given, err) or not check_where_args(args, err)
            or not pick_engine(args, err)):
        return EXIT_BAD_INPUT
    try:
        _as_set(args)
        _check_output(args)
        wanted = _wanted(args.conn)
        conns = _select(args, wanted)
        from analyzer.ladder import build  # matplotlib-free, but not needed by the other commands

        ladders = [build(c, args.time, args.absolute, args.all_segments) for c in conns]
        _emit(args, ladders)
    except (CaptureError, LadderError) as problem:
        err.line((f"synfin: {problem}", "red"))
        return EXIT_BAD_INPUT
    except _Nothing as nothing:
        err.line(f"synfin: {nothing}")
        return EXIT_NOTHING
    except OSError as problem:
        err.line((f"synfin: cannot write {problem.filename or ''}: {problem.strerror or problem}", "red"))
        return EXIT_BAD_INPUT
    return 0


class _Nothing(Exception):
    """The capture holds no TCP connection."""


def _as_set(args: argparse.Namespace) -> None:
    """A directory or --set as the rotated set it is (rotated.py); a set with a gzip file in it goes through
    the reference pipeline (the engine cannot chain it)."""
    from analyzer.rotated import from_directory, from_files

    if args.set_files is not None:
        args.capture = from_files(args.set_files)
    elif isinstance(args.capture, Path) and args.capture.is_dir():
        args.capture = from_directory(args.capture)
    if isinstance(args.capture, CaptureSet) and args.compiled and not engine.chainable(args.capture):
        args.compiled = False


def _name(capture: str | Path | CaptureSet) -> str:
    return capture.name if isinstance(capture, CaptureSet) else capture_name(capture)


def _check_output(args: argparse.Namespace) -> None:
    out = args.output
    if out is not None and not (args.text or args.mermaid) and out.suffix.lower() not in PICTURE_SUFFIXES:
        raise LadderError(f"cannot draw to {str(out)!r}: the name must end in .png, .svg or .pdf "
                          "(or use --text / --mermaid)")


def _wanted(ids: list[str]) -> set[int] | None:
    """The connection ids asked for; None for all."""
    if not ids or "all" in ids:
        return None
    try:
        return {int(value) for value in ids}
    except ValueError:
        bad = next(value for value in ids if not value.lstrip("-").isdigit())
        raise LadderError(f"--conn takes connection ids (numbers) or 'all', not {bad!r}") from None


def _select(args: argparse.Namespace, wanted: set[int] | None) -> list[Connection]:
    """The connections to draw, with their segments: found by the compiled engine when they are a few
    (ladder_source.py), else by the reference pipeline over the whole capture. With --where, a file is read
    once first for the ids it matches (where.matching_ids); standard input or a pipe, read only once, goes
    through the reference pipeline, each connection tested as it finishes."""
    where = args.where_filter
    if where is not None and not _rereadable(args.capture):
        return _select_reference(args, wanted, where.matches)
    matched = None if where is None else set(matching_ids(args.capture, where, timeouts=_timeouts(args),
                                                          bpf=args.bpf))
    if args.compiled and (wanted is not None or matched is not None or _default_pictures(args)):
        return _select_compiled(args, wanted, matched)
    return _select_reference(args, wanted, None if matched is None else (lambda conn: conn.id in matched))


def _rereadable(path: str | Path | CaptureSet) -> bool:
    if isinstance(path, CaptureSet):
        return True
    try:
        return not is_stdin(path) and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # the reading that follows says what is wrong


def _default_pictures(args: argparse.Namespace) -> bool:
    """No --conn, and one picture file per connection: at most MAX_DEFAULT_FILES of them."""
    return not args.conn and not (args.text or args.mermaid) and not _is_pdf(args.output)


def _select_compiled(args: argparse.Namespace, wanted: set[int] | None,
                     matched: set[int] | None) -> list[Connection]:
    """The wanted connections (or, for the default pictures, the first MAX_DEFAULT_FILES and one more, to
    tell that there are too many), among those --where `matched` if given, from the engine; reading stops
    once the wanted ones have finished."""
    from analyzer.ladder_source import find

    if matched is not None and wanted is None:
        if not matched:
            raise _Nothing(_no_match(args, None))
        if _default_pictures(args) and len(matched) > MAX_DEFAULT_FILES:
            raise LadderError(_too_many(args, matched, ()))
        wanted = matched
    ids = sorted(wanted) if wanted is not None else list(range(MAX_DEFAULT_FILES + 1))
    found = find(args.capture, ids, _timeouts(args), args.bpf, stop_early=wanted is not None)
    if found.count == 0:
        raise _Nothing(f"{_name(args.capture)}: no TCP connections to draw")
    seen = range(found.count)  # ids are dense: unless reading stopped early, these are all of them
    missing = sorted(wanted - {c.id for c in found.connections}) if wanted is not None else []
    if missing:  # never finished, so reading went on to the end: `seen` is every connection
        raise LadderError(_no_such(args, missing, seen))
    kept = [c for c in found.connections if matched is None or c.id in matched]
    if matched is not None and not kept:
        raise _Nothing(_no_match(args, wanted))
    if wanted is None and found.count > MAX_DEFAULT_FILES:
        raise LadderError(_too_many(args, range(found.count), seen))
    return kept


def _timeouts(args: argparse.Namespace) -> Timeouts:
    return Timeouts(msl=args.msl, idle=args.idle_timeout, handshake=args.handshake_timeout)


def _no_such(args: argparse.Namespace, missing: list[int], seen: Iterable[int]) -> str:
    return (f"{_name(args.capture)}: no connection{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(str, missing))}; the connections there are {id_ranges(seen)}")


def _no_match(args: argparse.Namespace, wanted: set[int] | None) -> str:
    among = f" among connections {id_ranges(wanted)}" if wanted is not None else ""
    return f"{_name(args.capture)}: no connection{among} matches --where {args.where_filter.text}"


def _too_many(args: argparse.Namespace, kept: Iterable[int], seen: Iterable[int]) -> str:
    """Too many pictures: `kept` the connections to draw (all of `seen`, or those --where matched)."""
    kept = sorted(kept)
    which = (f"{len(kept)} connections matching --where ({id_ranges(kept)})" if args.where_filter is not None
             else f"{len(kept)} connections ({id_ranges(seen)})")
    return (f"{_name(args.capture)} has {which}: choose some "
            "with --conn ID ..., or draw them all with --conn all or -o FILE.pdf")


def _select_reference(args: argparse.Namespace, wanted: set[int] | None,
                      where: Callable[[Connection], bool] | None = None) -> list[Connection]:
    """Analyze the whole capture with the reference pipeline, keeping the segments of the wanted connections
    (that `where` matches) only."""
    seen: list[int] = []
    kept: list[Connection] = []
    for conn in analyze(args.capture, msl=args.msl, idle_timeout=args.idle_timeout,
                        handshake_timeout=args.handshake_timeout, keep_segments=True, bpf=args.bpf):
        seen.append(conn.id)
        if (wanted is None or conn.id in wanted) and (where is None or where(conn)):
            kept.append(conn)
        else:
            conn.notes = None  # let the segments go
    if not seen:
        raise _Nothing(f"{_name(args.capture)}: no TCP connections to draw")
    missing = sorted(wanted - set(seen)) if wanted is not None else []
    if missing:
        raise LadderError(_no_such(args, missing, seen))
    if where is not None and not kept:
        raise _Nothing(_no_match(args, wanted))
    if _default_pictures(args) and len(kept) > MAX_DEFAULT_FILES:
        raise LadderError(_too_many(args, [c.id for c in kept], seen))
    return sorted(kept, key=lambda c: c.id)


def _is_pdf(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() == ".pdf"


def id_ranges(ids: Iterable[int]) -> str:
    """'0-3, 7, 9-10' for [0, 1, 2, 3, 7, 9, 10]."""
    spans: list[list[int]] = []
    for value in sorted(set(ids)):
        if spans and value == spans[-1][1] + 1:
            spans[-1][1] = value
        else:
            spans.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _emit(args: argparse.Namespace, ladders: list[Ladder]) -> None:
    if args.text or args.mermaid:
        from analyzer.ladder_text import mermaid, text

        render = mermaid if args.mermaid else text
        body = "\n".join(render(ladder) for ladder in ladders)
        if args.output is None:
            sys.stdout.write(body)
        else:
            args.output.write_text(body, encoding="utf-8")
        return
    from analyzer.ladder_plot import save, save_all

    if args.output is not None:
        written = save_all(ladders, args.output)
    else:
        stem = capture_stem(args.capture)
        written = [save(ladder, Path(f"{stem}-{ladder.conn_id}.png")) for ladder in ladders]
    for path in written:
        print(path)


def capture_stem(path: str | Path | CaptureSet) -> str:
    """'busy' for busy.pcap, busy.pcapng and busy.pcap.gz; 'stdin' for standard input ("-"); a rotated set's
    directory name, or its first file's stem."""
    if isinstance(path, CaptureSet):
        directory = Path(path.name)
        return directory.name if directory.is_dir() else capture_stem(path.files[0])
    if is_stdin(path):
        return "stdin"
    name = Path(path).name
    name = name[:-3] if name.lower().endswith(".gz") else name
    return Path(name).stem or "ladder"

"""Run `synfin analyze` in-process with each engine, and say precisely where two runs differ.

`run_cli` calls `analyzer.cli.main` with standard output and standard error
redirected into memory (standard output keeps a binary `buffer`, as a real
stream has, so the compiled engine writes through the same path it uses on a
terminal or a pipe). An exception that escapes `main` (a traceback, for a
user) is caught and becomes the run's status, so it shows up as a difference
instead of stopping the comparison.

`difference` turns two runs into a message that names the first line that
differs, and for JSON Lines and CSV the fields of that line that differ, with
both values.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from analyzer.cli import main

ENGINES = ("reference", "compiled")


@dataclass(frozen=True)
class Outcome:
    """Everything a run of the command line shows: its status and its three outputs."""

    status: int | str  # the exit status, or "raised <type>: <message>" when main() raised
    stdout: bytes
    stderr: str
    output: bytes | None  # the -o file, when one was asked for

    def parts(self) -> dict[str, object]:
        return {"status": self.status, "stdout": self.stdout, "stderr": self.stderr, "output": self.output}


class _Terminal(io.TextIOWrapper):
    """Standard output that says it is a terminal (the table is coloured, as on a real one)."""

    def isatty(self) -> bool:
        return True


def run_cli(args: list[str], output: Path | None = None, tty: bool = False) -> Outcome:
    """`synfin ARGS [-o OUTPUT]` in this process; the outputs as bytes and text."""
    stdout = (_Terminal if tty else io.TextIOWrapper)(io.BytesIO(), encoding="utf-8")
    stderr = io.StringIO()
    argv = [*args, "-o", str(output)] if output is not None else list(args)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status: int | str = main(argv)
        except SystemExit as stop:  # argparse
            status = f"exit {stop.code}"
        except Exception as err:
            status = f"raised {type(err).__name__}: {err}"
    stdout.flush()
    written = output.read_bytes() if output is not None and output.exists() else None
    return Outcome(status, stdout.buffer.getvalue(), stderr.getvalue(), written)  # type: ignore[attr-defined]


def run_engines(captures: list[Path], fmt: str, options: list[str], workdir: Path,
                to_file: bool = True) -> dict[str, Outcome]:
    """`synfin analyze -f FMT OPTIONS CAPTURES` with each engine (outputs to files in `workdir`)."""
    outcomes = {}
    for engine in ENGINES:
        target = workdir / f"out-{engine}.{fmt}" if to_file else None
        if target is not None:
            target.unlink(missing_ok=True)
        args = ["analyze", "--engine", engine, "-f", fmt, *options, *map(str, captures)]
        outcomes[engine] = run_cli(args, target)
    return outcomes


def difference(ref: Outcome, comp: Outcome, fmt: str) -> str | None:
    """None when the two runs are identical; otherwise what differs first, field by field."""
    found = []
    for part, want in ref.parts().items():
        got = comp.parts()[part]
        if want == got:
            continue
        if isinstance(want, bytes) and isinstance(got, bytes):
            left, right = want.decode("utf-8", "replace"), got.decode("utf-8", "replace")
            found.append(f"{part}: {text_difference(left, right, fmt)}")
        elif isinstance(want, str) and isinstance(got, str):
            found.append(f"{part}: {text_difference(want, got, 'text')}")
        else:
            found.append(f"{part}: reference {want!r:.300}, compiled {got!r:.300}")
    return "\n".join(found) or None


def text_difference(want: str, got: str, fmt: str) -> str:
    """The first differing line of two outputs, and for json/csv the differing fields."""
    want_lines, got_lines = want.splitlines(keepends=True), got.splitlines(keepends=True)
    for index, (a, b) in enumerate(zip(want_lines, got_lines, strict=False)):
        if a != b:
            fields = _fields(a, b, fmt, want_lines[0])
            return f"line {index + 1} differs{fields}\n  reference: {a!r}\n  compiled:  {b!r}"
    if len(want_lines) != len(got_lines):
        longer, name = (want_lines, "reference") if len(want_lines) > len(got_lines) else (got_lines, "compiled")
        shorter = min(len(want_lines), len(got_lines))
        return (f"reference has {len(want_lines)} lines, compiled {len(got_lines)}; "
                f"{name} goes on with line {shorter + 1}: {longer[shorter]!r}")
    return "differ only in line endings:\n" + "".join(difflib.unified_diff(want_lines, got_lines, n=0))[:2000]


def _fields(a: str, b: str, fmt: str, header: str) -> str:
    try:
        if fmt == "json":
            left, right = json.loads(a), json.loads(b)
        elif fmt == "csv":
            names = next(csv.reader([header]))
            left = dict(zip(names, next(csv.reader([a])), strict=False))
            right = dict(zip(names, next(csv.reader([b])), strict=False))
        else:
            return ""
    except (ValueError, StopIteration):
        return ""
    keys = [k for k in dict.fromkeys([*left, *right]) if left.get(k, "<missing>") != right.get(k, "<missing>")]
    where = f" (connection id {left.get('id')})" if "id" in left else ""
    return where + ": " + "; ".join(f"{k}: reference {left.get(k, '<missing>')!r}, compiled "
                                    f"{right.get(k, '<missing>')!r}" for k in keys)


def first_file_difference(want: Path, got: Path, fmt: str = "json") -> str | None:
    """Compare two (large) files line by line without reading them whole; None when identical."""
    with open(want, "rb") as left, open(got, "rb") as right:
        number = 0
        for number, (a, b) in enumerate(zip(left, right, strict=False), start=1):
            if a != b:
                return f"line {number}: " + text_difference(a.decode(), b.decode(), fmt)
        rest_left, rest_right = left.readline(), right.readline()
        if rest_left or rest_right:
            return (f"after line {number}: reference goes on with {rest_left[:300]!r}, "
                    f"compiled with {rest_right[:300]!r}")
    return None

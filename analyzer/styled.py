"""Lines of styled text for the command line: through rich on a terminal, as plain text elsewhere.

A line is a few pieces, each plain text or (text, rich style). On a terminal
(or when the environment asks rich for colour: FORCE_COLOR, TTY_COMPATIBLE)
the line goes through rich's Console, styled; anywhere else it is written as
it stands, which is exactly what rich would write there (no styles, no
wrapping). rich is imported only on the first styled line: importing it
costs about 50 ms, a twentieth of analysing a 300 MB capture, and a script
that runs `synfin analyze -f json` has no terminal to style for.

Pieces are text, never rich markup, so a capture named `[x].pcap` or
`:smile:.pcap` prints as it is named.
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Piece = str | tuple[str, str]  # text, or (text, rich style)


def is_tty(stream: IO[str]) -> bool:
    """Whether `stream` is a terminal (False for a stream without isatty, or a closed one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def wants_styles(stream: IO[str]) -> bool:
    """Whether rich could style output to `stream` (its own test, less the cases that only turn styles off)."""
    return "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ or is_tty(stream)


def console_for(stream: IO[str] | None, **options: object) -> Console:
    """rich's Console on `stream` (None: standard error, looked up when written to), highlight off,
    soft wrap on, and a closed pipe raised as BrokenPipeError (rich would exit 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    target = {"stderr": True} if stream is None else {"file": stream}
    return _Console(**target, **{"highlight": False, "soft_wrap": True, **options})  # type: ignore[arg-type]


class Styled:
    """Where lines go: a stream (None: standard error), or an existing rich Console."""

    def __init__(self, stream: IO[str] | None = None, console: Console | None = None) -> None:
        self._stream = stream
        self._console = console

    @property
    def stream(self) -> IO[str]:
        return sys.stderr if self._stream is None else self._stream

    @property
    def is_terminal(self) -> bool:
        """rich's answer, asked only when it could be yes."""
        if self._console is None and not wants_styles(self.stream):
            return False
        return self.console.is_terminal

    @property
    def console(self) -> Console:
        """The rich Console behind this output (made, and rich imported, on first use)."""
        if self._console is None:
            self._console = console_for(self._stream)
        return self._console

    def line(self, *pieces: Piece) -> None:
        if self._console is None and not wants_styles(self.stream):
            self.stream.write("".join(p if isinstance(p, str) else p[0] for p in pieces) + "\n")
            return
        from rich.text import Text

        self.console.print(Text.assemble(*pieces))

"""A `Ladder` as text: a box-drawing ladder for the terminal, and a Mermaid sequence diagram.

Both walk `Ladder.items()`, the same top-to-bottom order the picture has, so
a ticket, a lecture note and a PNG of the same connection tell the same
story. A terminal cannot slant an arrow, so each segment is one horizontal
line; a state change sits on the line of the segment that caused it (the
sender's, on the sending line) or on a line of its own just below (the
receiver's, where the arrow arrives), as in the picture.

    frame  time (s)                   client                               server
                              10.77.0.1:58296                       10.77.0.2:9000
    #1     0.000000      SYN_SENT ─┤── SYN  seq 0 ─────────────────────────▶│
                                   │                                        ├─ SYN_RCVD
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from analyzer.ladder import Arrow, Block, Gap, Ladder, StateMark, Timer

LINE = {"": "─", "retransmission": "╌", "keepalive": "┈"}
MIN_INNER = 44


@dataclass
class _Line:
    """One line of the terminal ladder."""

    y: float
    frame: str = ""
    time: str = ""
    client: str = ""  # state written left of the client's line
    server: str = ""
    inner: str = ""  # between the lines, already padded to the inner width
    rail: str = "│"  # the lifeline character ("┆" across a cut pause)
    tick_client: bool = False  # the state changes here: a tick joins name and line
    tick_server: bool = False


def state_text(mark: StateMark) -> str:
    return f"{mark.state} ({mark.detail})" if mark.detail else mark.state


def text(ladder: Ladder) -> str:
    """The ladder drawn with box-drawing characters, one segment per line."""
    inner = max([len(a.label) + 8 for a in ladder.arrows] + [len(b.text) + 8 for b in ladder.blocks]
                + [len(ladder.client) // 2 + len(ladder.server) // 2 + 4, MIN_INNER])
    lines = _lines(ladder, inner)
    left = max([len(line.client) for line in lines] + [6]) + 2
    frame_w = max([len(line.frame) for line in lines] + [5])
    time_w = max([len(line.time) for line in lines] + [8])
    base = " " * (frame_w + 2 + time_w + 2)
    head = base + " " * left
    out = [ladder.title, ladder.subtitle, ""]
    out.append(f"{'frame':<{frame_w}}  {'time (s)':>{time_w}}  " + _over_rails("client", "server", left, inner))
    out.append(base + _over_rails(ladder.client, ladder.server, left, inner))
    out.append(head + "│" + " " * inner + "│")
    for line in lines:
        client = f"{line.client} ─┤" if line.tick_client else f"{line.client}  {line.rail}"
        server = f"├─ {line.server}" if line.tick_server else f"{line.rail}  {line.server}"
        out.append(f"{line.frame:<{frame_w}}  {line.time:>{time_w}}  {client:>{left + 1}}"
                   f"{line.inner or ' ' * inner}{server}".rstrip())
    out.append(head + "│" + " " * inner + "│")
    out += ["", *_notes(ladder)]
    return "\n".join(out) + "\n"


def _over_rails(a: str, b: str, left: int, inner: int) -> str:
    """`a` centred over the client's line (column `left`), `b` over the server's."""
    out = list(" " * (left + inner + 2 + len(b)))
    for col, name in ((left, a), (left + inner + 1, b)):
        start = max(0, col - len(name) // 2)
        out[start:start + len(name)] = name
    return "".join(out).rstrip()


def _lines(ladder: Ladder, inner: int) -> list[_Line]:
    lines: dict[float, _Line] = {}
    for item in ladder.items():
        _add(lines, ladder, item, inner)
    return [lines[y] for y in sorted(lines)]


def _line_at(lines: dict[float, _Line], y: float) -> _Line:
    key = round(y, 6)
    if key not in lines:
        lines[key] = _Line(key)
    return lines[key]


def _add(lines: dict[float, _Line], ladder: Ladder, item: object, inner: int) -> None:
    if isinstance(item, Arrow):
        line = _line_at(lines, item.y_send)
        line.frame, line.time = f"#{item.frame}", f"{item.ts - ladder.start:.6f}"
        line.inner = arrow_line(item, inner)
    elif isinstance(item, Block):
        line = _line_at(lines, item.y_top)
        line.frame, line.time = f"#{item.first_frame}–{item.last_frame}", f"{item.ts - ladder.start:.6f}"
        line.inner = _centred(item.text, inner, "░")
        _line_at(lines, item.y_top + 0.5).inner = _centred(item.detail, inner, " ")
    elif isinstance(item, Gap):
        line = _line_at(lines, item.y)
        line.inner, line.rail = _centred(item.text, inner, " "), "┆"
    elif isinstance(item, Timer):
        line = _line_at(lines, item.y)
        line.time = f"{item.ts - ladder.start:.6f}"
        note = " 2·MSL timer fires "
        line.inner = note.ljust(inner) if item.client else note.rjust(inner)
    elif isinstance(item, StateMark):
        _add_state(lines, item)


def _add_state(lines: dict[float, _Line], mark: StateMark) -> None:
    y = mark.y
    while True:  # two changes at one point (CLOSING, then TIME_WAIT): one line each
        line = _line_at(lines, y)
        taken = line.client if mark.client else line.server
        if not taken:
            break
        y += 0.01
    if mark.client:
        line.client, line.tick_client = state_text(mark), True
    else:
        line.server, line.tick_server = state_text(mark), True


def arrow_line(arrow: Arrow, inner: int) -> str:
    """'── SYN  seq 0 ────▶' or '◀──── SYN+ACK  seq 0  ack 1 ──', `inner` wide."""
    dash = LINE.get(arrow.kind, "─")
    body = f" {arrow.label} "
    fill = dash * max(2, inner - len(body) - 3)
    if arrow.from_client:
        return f"{dash * 2}{body}{fill}▶"
    return f"◀{fill}{body}{dash * 2}"


def _centred(words: str, width: int, pad: str) -> str:
    words = f" {words} "
    left = (width - len(words)) // 2
    return pad * left + words + pad * (width - len(words) - left)


def _notes(ladder: Ladder) -> list[str]:
    out = []
    if ladder.time_mode == "proportional" and ladder.gaps:
        out.append("┆ ≈ : a pause cut out of the picture")
    kinds = {a.kind for a in ladder.arrows}
    if "retransmission" in kinds:
        out.append("╌╌ : retransmission")
    if "keepalive" in kinds:
        out.append("┈┈ : keep-alive probe")
    out += [f"anomaly: {a}" for a in ladder.anomalies]
    return out


# -- Mermaid --------------------------------------------------------------


def _mermaid_safe(words: str) -> str:
    """Mermaid ends a statement at ';' and reads '#' as an entity: keep them out."""
    return words.replace(";", ",").replace("#", "no. ")


def mermaid(ladder: Ladder) -> str:
    """A Mermaid `sequenceDiagram`: participants are the two endpoints, notes the states."""
    out = ["sequenceDiagram", f"    %% {_mermaid_safe(ladder.title)}",
           f"    participant C as client {ladder.client}",
           f"    participant S as server {ladder.server}",
           f"    Note over C,S: {_mermaid_safe(ladder.subtitle)}"]
    out += [f"    {line}" for line in mermaid_lines(ladder.items(), ladder)]
    return "\n".join(out) + "\n"


def mermaid_lines(items: Iterable[object], ladder: Ladder) -> list[str]:
    lines = []
    for item in items:
        if isinstance(item, Arrow):
            src, dst = ("C", "S") if item.from_client else ("S", "C")
            lines.append(f"{src}{_mermaid_arrow(item)}{dst}: {_mermaid_safe(item.label)} (frame {item.frame})")
        elif isinstance(item, StateMark):
            lines.append(f"Note {'left of C' if item.client else 'right of S'}: {state_text(item)}")
        elif isinstance(item, Block):
            lines.append(f"Note over C,S: {item.text} ({item.detail})")
        elif isinstance(item, Gap):
            lines.append(f"Note over C,S: {item.text}")
        elif isinstance(item, Timer):
            lines.append(f"Note {'left of C' if item.client else 'right of S'}: 2·MSL timer fires")
    return lines


def _mermaid_arrow(arrow: Arrow) -> str:
    """Solid ->> for a segment, dotted -->> for a retransmission, --) a keep-alive, -x a RST."""
    dotted = arrow.kind != ""
    if "RST" in arrow.flags.split("+"):
        return "--x" if dotted else "-x"
    if arrow.kind == "keepalive":
        return "--)"
    return "-->>" if dotted else "->>"

"""Drawing a `Ladder` with matplotlib: PNG, SVG or PDF, chosen by the file's extension.

The picture follows the textbook ladder (Stevens, *TCP/IP Illustrated*):
client line on the left, server line on the right, each headed with its
address:port; time runs down; each segment is a slanted arrow labelled with
its flags and numbers; each endpoint's states are written outside its line,
with a light band beside the line for as long as the state lasted. A column
on the far left gives the frame number and the time since the first segment.

Everything is measured in inches: one axes fills the figure, x and y are in
inches from the top-left corner, and a row of the layout is `PITCH` inches.
Widths are measured with the Agg renderer, so columns are as wide as their
longest text and no two labels overlap (the tests check that on every
sample). No pyplot, no GUI: a `Figure` is built and saved directly, which
also works inside a notebook whatever its backend.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle

from analyzer.ladder import SLANT, Arrow, Block, Ladder, StateMark, Timer

FORMATS = ("png", "svg", "pdf")
PITCH = 0.42  # inches per row
MARGIN = 0.3
TOP = 1.75  # inches from the top of the figure to row 0
LABEL_PT, SMALL_PT, STATE_PT, HEADER_PT, TITLE_PT = 9.0, 8.0, 9.0, 10.0, 11.5
BAND = 0.10  # width of a state band, inches
DPI = 110

INK = "#222222"
MUTED = "#6b6b6b"
FLAG_COLORS = (("RST", "#b3261e"), ("SYN", "#1b4f9c"), ("FIN", "#a14d00"))
BAND_COLORS = {
    "SYN_SENT": "#d6e4f5", "SYN_RCVD": "#d6e4f5", "ESTABLISHED": "#d9eed2",
    "FIN_WAIT_1": "#fbe3c4", "FIN_WAIT_2": "#fbe3c4", "CLOSING": "#fbe3c4",
    "CLOSE_WAIT": "#f6d5dd", "LAST_ACK": "#f6d5dd", "TIME_WAIT": "#e4dcf3",
}
STATE_COLORS = {
    "SYN_SENT": "#1b4f9c", "SYN_RCVD": "#1b4f9c", "ESTABLISHED": "#2d6a1f",
    "FIN_WAIT_1": "#8a4300", "FIN_WAIT_2": "#8a4300", "CLOSING": "#8a4300",
    "CLOSE_WAIT": "#9c2149", "LAST_ACK": "#9c2149", "TIME_WAIT": "#4f3a8c",
}


@lru_cache(maxsize=4096)
def text_width(text: str, size: float, weight: str = "normal") -> float:
    """Width of `text` in inches, as matplotlib will draw it."""
    renderer = _measurer()
    width, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=size, weight=weight),
                                                         ismath=False)
    return float(width) / 72.0


@lru_cache(maxsize=1)
def _measurer() -> RendererAgg:
    return RendererAgg(10, 10, 72)


class _Frame:
    """The horizontal layout: columns and the two lifelines, in inches."""

    def __init__(self, ladder: Ladder) -> None:
        self.frame_w = max([text_width(_frame_text(item), SMALL_PT) for item in _rows(ladder)] + [0.4])
        self.time_w = max([text_width(_time_text(ladder, ts), SMALL_PT) for ts in _times(ladder)] + [0.6])
        left = [_mark_width(m) for m in ladder.states if m.client]
        right = [_mark_width(m) for m in ladder.states if not m.client]
        self.client_x = MARGIN + self.frame_w + 0.15 + self.time_w + 0.25 + max([*left, 0.5]) + 0.25 + BAND
        inner = [text_width(a.label, LABEL_PT) for a in ladder.arrows]
        inner += [text_width(b.text, LABEL_PT, "bold") for b in ladder.blocks]
        header = (text_width(ladder.client, LABEL_PT) + text_width(ladder.server, LABEL_PT)) / 2 + 0.4
        self.span = max([w * 1.2 + 0.7 for w in inner] + [header, 3.6])
        self.server_x = self.client_x + self.span
        self.width = self.server_x + BAND + 0.25 + max([*right, 0.5]) + MARGIN
        self.mid = (self.client_x + self.server_x) / 2

    def x(self, client: bool) -> float:
        return self.client_x if client else self.server_x


def _mark_width(mark: StateMark) -> float:
    return max(text_width(mark.state, STATE_PT, "bold"), text_width(mark.detail, SMALL_PT))


def _rows(ladder: Ladder) -> list[Arrow | Block]:
    return [*ladder.arrows, *ladder.blocks]


def _times(ladder: Ladder) -> list[float]:
    return [a.ts for a in ladder.arrows] + [b.ts for b in ladder.blocks] + [t.ts for t in ladder.timers]


def _frame_text(item: Arrow | Block) -> str:
    if isinstance(item, Block):
        return f"#{item.first_frame}–{item.last_frame}"
    return f"#{item.frame}"


def _time_text(ladder: Ladder, ts: float) -> str:
    return f"{ts - ladder.start:.6f}"


def row_y(y: float) -> float:
    return TOP + y * PITCH


def figure(ladder: Ladder) -> Figure:
    """The whole diagram as a matplotlib Figure (not attached to pyplot)."""
    frame = _Frame(ladder)
    footer = _footer(ladder)
    footer_top = row_y(ladder.height) + 0.7 * PITCH
    height = footer_top + 0.2 * len(footer) + 0.15
    width = max([frame.width, text_width(ladder.title, TITLE_PT, "bold") + 2 * MARGIN,
                 text_width(ladder.subtitle, LABEL_PT) + 2 * MARGIN]
                + [text_width(line, SMALL_PT) + 2 * MARGIN for line in footer])
    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    _heading(ax, ladder, frame)
    _lifelines(ax, ladder, frame)
    for mark in ladder.states:
        _state(ax, mark, frame)
    for arrow in ladder.arrows:
        _arrow(ax, ladder, arrow, frame)
    for block in ladder.blocks:
        _block(ax, ladder, block, frame)
    for index, gap in enumerate(ladder.gaps):
        _text(ax, frame.mid, row_y(gap.y), gap.text, f"gap-{index}", size=LABEL_PT, color=MUTED,
              style="italic", ha="center", va="center")
    for timer in ladder.timers:
        _timer(ax, ladder, timer, frame)
    for index, line in enumerate(footer):
        _text(ax, MARGIN, footer_top + 0.2 * index, line, f"footer-{index}",
              size=SMALL_PT, color=MUTED, va="top")
    return fig


def _text(ax: Axes, x: float, y: float, text: str, gid: str, **style: object) -> None:
    artist = ax.text(x, y, text, **style)  # type: ignore[arg-type]
    artist.set_gid(gid)


def _heading(ax: Axes, ladder: Ladder, frame: _Frame) -> None:
    _text(ax, MARGIN, 0.3, ladder.title, "title", size=TITLE_PT, weight="bold", color=INK, va="center")
    _text(ax, MARGIN, 0.58, ladder.subtitle, "subtitle", size=LABEL_PT, color=INK, va="center")
    for client, name in ((True, ladder.client), (False, ladder.server)):
        x = frame.x(client)
        role = "client" if client else "server"
        _text(ax, x, 1.0, role, f"head-{role}", size=HEADER_PT, weight="bold", color=INK,
              ha="center", va="center")
        _text(ax, x, 1.2, name, f"addr-{role}", size=LABEL_PT, color=INK, ha="center", va="center")
    _text(ax, MARGIN, 1.2, "frame", "head-frame", size=SMALL_PT, color=MUTED, va="center")
    _text(ax, MARGIN + frame.frame_w + 0.15 + frame.time_w, 1.2, "time (s)", "head-time", size=SMALL_PT,
          color=MUTED, ha="right", va="center")


def _lifelines(ax: Axes, ladder: Ladder, frame: _Frame) -> None:
    top, bottom = 1.38, row_y(ladder.height)
    cuts = [(row_y(g.y) - 0.35 * PITCH, row_y(g.y) + 0.35 * PITCH) for g in ladder.gaps]
    for client in (True, False):
        x = frame.x(client)
        start = top
        for cut_top, cut_bottom in cuts:
            ax.plot([x, x], [start, cut_top], color=INK, lw=1.6, solid_capstyle="butt")
            for y in (cut_top, cut_bottom):
                ax.plot([x - 0.07, x + 0.07], [y + 0.03, y - 0.03], color=INK, lw=1.0)
            start = cut_bottom
        ax.plot([x, x], [start, bottom], color=INK, lw=1.6, solid_capstyle="butt")


def _state(ax: Axes, mark: StateMark, frame: _Frame) -> None:
    x = frame.x(mark.client)
    y0, y1 = row_y(mark.y), row_y(mark.y_end)
    color = BAND_COLORS.get(mark.state)
    band_x = x - BAND if mark.client else x
    if color and y1 > y0:
        ax.add_patch(Rectangle((band_x, y0), BAND, y1 - y0, facecolor=color, edgecolor="none", zorder=1))
        if mark.open_ended and mark.state == "TIME_WAIT":
            ax.plot([band_x + BAND / 2] * 2, [y1, y1 + 0.5 * PITCH], color=color, lw=3, ls=(0, (1, 1)))
    sign = -1 if mark.client else 1
    ax.plot([x, x + sign * (BAND + 0.12)], [y0, y0], color=STATE_COLORS.get(mark.state, MUTED), lw=1.0)
    text_x = x + sign * (BAND + 0.17)
    ha = "right" if mark.client else "left"
    side = "client" if mark.client else "server"
    gid = f"state-{side}-{mark.frame if mark.frame is not None else 'timer'}-{mark.state}"
    text_y = row_y(mark.text_y)
    _text(ax, text_x, text_y, mark.state, gid, size=STATE_PT, weight="bold",
          color=STATE_COLORS.get(mark.state, MUTED), ha=ha, va="center")
    if mark.detail:
        _text(ax, text_x, text_y + 0.19, mark.detail, gid + "-detail", size=SMALL_PT, color=MUTED,
              ha=ha, va="center")


def _arrow_color(arrow: Arrow) -> str:
    names = arrow.flags.split("+")
    return next((color for flag, color in FLAG_COLORS if flag in names), INK)


def _arrow(ax: Axes, ladder: Ladder, arrow: Arrow, frame: _Frame) -> None:
    x0, x1 = frame.x(arrow.from_client), frame.x(not arrow.from_client)
    y0, y1 = row_y(arrow.y_send), row_y(arrow.y_recv)
    color = MUTED if arrow.kind == "keepalive" else _arrow_color(arrow)
    style = {"retransmission": (0, (5, 3)), "keepalive": (0, (1.5, 2))}.get(arrow.kind, "solid")
    ax.plot([x0, x1], [y0, y1], color=color, lw=1.3, ls=style, zorder=3)
    ax.annotate("", xy=(x1, y1), xytext=(x1 - 0.02 * (x1 - x0), y1 - 0.02 * (y1 - y0)), zorder=3,
                arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.3, "mutation_scale": 11,
                            "shrinkA": 0, "shrinkB": 0})
    label_w = text_width(arrow.label, LABEL_PT)
    slope = abs(y1 - y0) / frame.span
    lift = (label_w / 2) * slope + 0.07
    y_mid = row_y(arrow.y_send + SLANT / 2)
    _text(ax, frame.mid, y_mid - lift, arrow.label, f"arrow-{arrow.frame}", size=LABEL_PT, color=color,
          ha="center", va="bottom", zorder=4,
          bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.92, "pad": 0.6})
    _left_column(ax, ladder, frame, f"#{arrow.frame}", arrow.ts, y0, f"frame-{arrow.frame}")


def _left_column(ax: Axes, ladder: Ladder, frame: _Frame, label: str, ts: float, y: float, gid: str) -> None:
    if label:
        _text(ax, MARGIN, y, label, gid, size=SMALL_PT, color=MUTED, va="center")
    _text(ax, MARGIN + frame.frame_w + 0.15 + frame.time_w, y, _time_text(ladder, ts), gid + "-time",
          size=SMALL_PT, color=MUTED, ha="right", va="center")


def _block(ax: Axes, ladder: Ladder, block: Block, frame: _Frame) -> None:
    top, bottom = row_y(block.y_top - 0.3), row_y(block.y_bottom)
    left, right = frame.client_x + 0.12, frame.server_x - 0.12
    ax.add_patch(Rectangle((left, top), right - left, bottom - top, facecolor="#f4f4f4",
                           edgecolor="#b0b0b0", hatch="////", lw=0.8, zorder=2))
    middle = (top + bottom) / 2
    box = {"facecolor": "white", "edgecolor": "none", "pad": 1.5}
    _text(ax, frame.mid, middle - 0.1, block.text, f"block-{block.first_frame}", size=LABEL_PT,
          weight="bold", color=INK, ha="center", va="center", bbox=box, zorder=4)
    _text(ax, frame.mid, middle + 0.13, block.detail, f"block-{block.first_frame}-detail", size=SMALL_PT,
          color=MUTED, ha="center", va="center", bbox=box, zorder=4)
    _left_column(ax, ladder, frame, f"#{block.first_frame}–{block.last_frame}", block.ts, row_y(block.y_top),
                 f"frame-{block.first_frame}")


def _timer(ax: Axes, ladder: Ladder, timer: Timer, frame: _Frame) -> None:
    x = frame.x(timer.client)
    sign = 1 if timer.client else -1
    _text(ax, x + sign * 0.12, row_y(timer.y), "2·MSL timer fires", f"timer-{timer.ts}", size=SMALL_PT,
          color=MUTED, style="italic", ha="left" if timer.client else "right", va="center")
    _left_column(ax, ladder, frame, "", timer.ts, row_y(timer.y), f"timer-{timer.ts}-column")


def _footer(ladder: Ladder) -> list[str]:
    lines = []
    if ladder.time_mode == "proportional":
        lines.append("time runs down, spacing grows with the pause between segments; pauses ≥ 1 s are cut (≈)")
    else:
        lines.append("time runs down, one row per segment")
    kinds = {a.kind for a in ladder.arrows}
    legend = [text for kind, text in (("retransmission", "dashed: retransmission"),
                                      ("keepalive", "dotted: keep-alive probe")) if kind in kinds]
    numbers = "absolute sequence numbers" if ladder.absolute else "sequence numbers relative to each ISN"
    lines.append(" · ".join([numbers, *legend]))
    lines += [f"anomaly: {text}" for text in ladder.anomalies[:5]]
    if len(ladder.anomalies) > 5:
        lines.append(f"… and {len(ladder.anomalies) - 5} more anomalies")
    return lines


# -- files ----------------------------------------------------------------


def _format(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw to {path.name!r}: the name must end in .png, .svg or .pdf")
    return fmt


def save(ladder: Ladder, path: Path) -> Path:
    """Write one diagram; the format follows the extension (.png, .svg, .pdf)."""
    fmt = _format(path)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "synfin"}):
        figure(ladder).savefig(path, format=fmt, dpi=DPI, metadata=_metadata(fmt))
    return path


def to_bytes(ladder: Ladder, fmt: str = "png") -> bytes:
    """The diagram as PNG/SVG/PDF bytes (for notebooks and tests)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "synfin"}):
        figure(ladder).savefig(buffer, format=fmt, dpi=DPI, metadata=_metadata(fmt))
    return buffer.getvalue()


def save_all(ladders: Sequence[Ladder], path: Path) -> list[Path]:
    """One file for one ladder; several: one PDF with a page each, or NAME-ID.EXT files."""
    fmt = _format(path)
    if len(ladders) == 1:
        return [save(ladders[0], path)]
    if fmt == "pdf":
        return [_save_pdf(ladders, path)]
    return [save(ladder, path.with_name(f"{path.stem}-{ladder.conn_id}{path.suffix}")) for ladder in ladders]


def _save_pdf(ladders: Iterable[Ladder], path: Path) -> Path:
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata=_metadata("pdf")) as pdf:
        for ladder in ladders:
            pdf.savefig(figure(ladder))
    return path


def _metadata(fmt: str) -> dict[str, object]:
    """No dates: the same capture gives the same file (for committed pictures)."""
    if fmt == "svg":
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None, "ModDate": None}
    return {}

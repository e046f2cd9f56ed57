"""The census of states over time as a picture: stacked areas, a row per endpoint, a column per side.

The first row is the whole capture, then the busiest server endpoints (most
connections) up to MAX_PANELS; the left column counts the server side's
sockets (what `ss` on the server would show), the right one the clients'.
The x axis is seconds since the first sample; the counts are timeline.Census's
sample points (its bins), so the picture costs the same for any capture size.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

from analyzer.timeline import SIDES, STATES, TOTAL, Census

MAX_PANELS = 6
DPI = 100
COLORS = {"SYN_SENT": "#9ecae1", "SYN_RCVD": "#6baed6", "ESTABLISHED": "#31a354", "FIN_WAIT_1": "#fdae6b",
          "FIN_WAIT_2": "#fd8d3c", "CLOSE_WAIT": "#de2d26", "CLOSING": "#bcbddc", "LAST_ACK": "#807dba",
          "TIME_WAIT": "#636363"}


def busiest(census: Census, connections: dict[str, int], limit: int = MAX_PANELS - 1) -> list[str]:
    """The endpoints with most connections, most first (ties by name)."""
    return sorted(census.endpoints(), key=lambda name: (-connections.get(name, 0), name))[:limit]


def figure(census: Census, endpoints: list[str]) -> Figure:
    rows = [TOTAL, *endpoints]
    fig = Figure(figsize=(11, 2.2 * len(rows) + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False, sharex=True)
    start = None
    for row, name in enumerate(rows):
        for col, side in enumerate(SIDES):
            times, counts = census.series(name, side)
            start = times[0] if start is None and times else start
            ax = axes[row][col]
            shown = [state for state in STATES if state in counts and max(counts[state]) > 0]
            if shown and start is not None:
                ax.stackplot([t - start for t in times], [counts[s] for s in shown], labels=shown,
                             colors=[COLORS[s] for s in shown], step="post")
            ax.set_title(f"{'all endpoints' if name == TOTAL else name}: {side} side", fontsize=9, loc="left")
            ax.set_ylabel("connections", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the capture's first transition", fontsize=8)
    handles = [matplotlib.patches.Patch(color=COLORS[s], label=s) for s in STATES]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(STATES), fontsize=7, frameon=False)
    return fig


def to_png(census: Census, endpoints: list[str]) -> bytes:
    buffer = io.BytesIO()
    figure(census, endpoints).savefig(buffer, format="png", dpi=DPI, metadata={"Software": "synfin"})
    return buffer.getvalue()

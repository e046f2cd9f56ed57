"""A ladder for every capture in samples/, checked for content, not just for a file.

For each sample (new ones are picked up by the glob) and each of its
connections (one per kind for captures with many):

* the SVG, rendered with text kept as text, holds every arrow label, top to
  bottom in capture order, between the two lifelines; every state of both
  histories, in order, left of the client's line or right of the server's,
  at or below the row of the frame that is its evidence; the labels in the
  subtitle; every segment is either an arrow or inside a collapsed block;
* no two text boxes overlap, no arrow label crosses a lifeline, nothing
  falls off the figure, no font is below 8 pt (both time scales);
* the terminal text shows the same arrows and states in the same order;
* the Mermaid diagram has the two participants and one arrow per drawn
  segment, in the same order.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.transforms import Bbox

import analyzer
from analyzer.connection import Connection
from analyzer.decode import ACK, FIN, PSH, RST, SYN
from analyzer.ladder import Ladder, build
from analyzer.ladder_plot import figure, to_bytes
from analyzer.ladder_text import mermaid, text

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPTURES = sorted(p for p in SAMPLES.glob("*") if p.suffix in (".pcap", ".pcapng"))
SVG = "{http://www.w3.org/2000/svg}"
PER_CAPTURE = 8  # connections drawn per capture at most (one of each kind)


@cache
def connections(capture: Path) -> tuple[Connection, ...]:
    """The connections worth drawing: all of a small capture, one of each kind of a big one."""
    conns = list(analyzer.analyze(capture, keep_segments=True))
    if len(conns) <= PER_CAPTURE:
        return tuple(conns)
    kinds: dict[tuple, Connection] = {}
    for conn in conns:
        labels = conn.labels
        kind = (labels["open"], labels["close"], labels["half_close"], labels["reset_by"], conn.server.port)
        kinds.setdefault(kind, conn)
    return tuple(list(kinds.values())[:PER_CAPTURE])


def ids(capture: Path) -> str:
    return capture.name


needs_samples = pytest.mark.skipif(not CAPTURES, reason="no captures in samples/ yet")


def svg_texts(svg: bytes) -> dict[str, tuple[str, float, float]]:
    """gid -> (text, x, y) of every labelled text in the SVG."""
    root = ET.fromstring(svg)
    found = {}
    for group in root.iter(f"{SVG}g"):
        gid = group.get("id", "")
        node = group.find(f"{SVG}text")
        if node is not None and gid:
            found[gid] = ("".join(node.itertext()), float(node.get("x", "0")), float(node.get("y", "0")))
    return found


def flag_words(flags: int) -> str:
    """Written independently of analyzer.ladder: the order a teacher reads them."""
    names = [name for bit, name in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"))
             if flags & bit]
    return "+".join(names)


@needs_samples
@pytest.mark.parametrize("capture", CAPTURES, ids=ids)
def test_svg_shows_the_analyzers_story(capture: Path) -> None:
    for conn in connections(capture):
        ladder = build(conn)
        texts = svg_texts(to_bytes(ladder, "svg"))
        client_x, server_x = texts["head-client"][1], texts["head-server"][1]
        assert client_x < server_x
        assert texts["addr-client"][0] == ladder.client and texts["addr-server"][0] == ladder.server
        _check_arrows(conn, ladder, texts, client_x, server_x)
        _check_states(conn, texts, client_x, server_x)
        subtitle = texts["subtitle"][0]
        assert f"open: {conn.labels['open']}" in subtitle and f"close: {conn.labels['close']}" in subtitle
        for index, gap in enumerate(ladder.gaps):
            assert texts[f"gap-{index}"][0] == gap.text and gap.text.startswith("≈ ")


def _check_arrows(conn: Connection, ladder: Ladder, texts: dict, client_x: float, server_x: float) -> None:
    notes = {n.frame: n for n in conn.notes or []}
    ys = []
    for arrow in ladder.arrows:
        label, x, y = texts[f"arrow-{arrow.frame}"]
        assert label == arrow.label
        assert client_x < x < server_x
        note = notes[arrow.frame]
        assert label.startswith(flag_words(note.flags) + "  seq ")
        if note.payload_len:
            assert f"len {note.payload_len}" in label
        if note.kind == "retransmission":
            assert label.endswith("[retransmission]")
        if note.kind == "keepalive":
            assert label.endswith("[keep-alive]")
        ys.append(y)
    assert ys == sorted(ys) and len(set(ys)) == len(ys), "arrow labels out of order"
    assert [a.frame for a in ladder.arrows] == sorted(a.frame for a in ladder.arrows)
    shown = {a.frame for a in ladder.arrows}
    for block in ladder.blocks:
        assert "segments" in texts[f"block-{block.first_frame}"][0]
        shown |= set(range(block.first_frame, block.last_frame + 1))
    assert shown == set(notes), "a segment is neither drawn nor in a block"
    for side, ep in (("client", conn.client), ("server", conn.server)):
        # relative to its own ISN (which may be inferred: issue 13; a forged RST, ignored, is not in its
        # sequence space)
        first = next((a for a in ladder.arrows if a.from_client == (side == "client") and a.kind != "ignored"), None)
        if ep.isn is not None and first is not None and notes[first.frame].flags & SYN:
            assert " seq 0" in first.label


def _check_states(conn: Connection, texts: dict, client_x: float, server_x: float) -> None:
    for side, ep in (("client", conn.client), ("server", conn.server)):
        ys = []
        for t in ep.history:
            gid = f"state-{side}-{t.frame if t.frame is not None else 'timer'}-{t.state}"
            name, x, y = texts[gid]
            assert name == str(t.state)
            assert (x < client_x) if side == "client" else (x > server_x), f"{gid} on the wrong side"
            if t.frame is not None and f"frame-{t.frame}" in texts:
                assert y >= texts[f"frame-{t.frame}"][2] - 0.5, f"{gid} above its evidence"
            ys.append(y)
        assert ys == sorted(ys), f"{side} states out of order"
        states = [g for g in texts if g.startswith(f"state-{side}-") and not g.endswith("-detail")]
        assert len(states) == len(ep.history)
        for t in ep.history:
            if str(t.state) == "TIME_WAIT":
                detail = texts[f"state-{side}-{t.frame}-TIME_WAIT-detail"][0]
                assert detail == f"2·MSL = {2 * conn.timeouts.msl:.0f} s"


def text_boxes(fig) -> list[tuple[object, Bbox]]:
    """Every visible, non-empty text of the figure with its box in pixels, as drawn by Agg."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    artists = [t for t in fig.axes[0].texts if t.get_visible() and t.get_text()]
    return [(t, t.get_window_extent(renderer)) for t in artists]


def overlaps(boxes: list[tuple[object, Bbox]]) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes overlap by more than half a pixel each way."""
    shrunk = [(t, Bbox.from_extents(b.x0 + 0.5, b.y0 + 0.5, b.x1 - 0.5, b.y1 - 0.5)) for t, b in boxes]
    return [(a.get_gid(), b.get_gid()) for i, (a, box_a) in enumerate(shrunk)  # type: ignore[attr-defined]
            for b, box_b in shrunk[i + 1:] if box_a.overlaps(box_b)]


def test_the_overlap_check_sees_an_overlap() -> None:
    from tests.wire import Wire, handshake

    w = Wire()
    handshake(w)
    fig = figure(build(w.one(keep_segments=True)))
    assert overlaps(text_boxes(fig)) == []
    label = next(t for t in fig.axes[0].texts if t.get_gid() == "arrow-2")
    fig.axes[0].text(*label.get_position(), "an intruder", gid="intruder")
    assert ("arrow-2", "intruder") in overlaps(text_boxes(fig))


@needs_samples
@pytest.mark.parametrize("time", ["proportional", "sequential"])
@pytest.mark.parametrize("capture", CAPTURES, ids=ids)
def test_no_text_overlaps_or_falls_off(capture: Path, time: str) -> None:
    for conn in connections(capture):
        fig = figure(build(conn, time))
        boxes = text_boxes(fig)
        page = fig.bbox
        for artist, box in boxes:
            assert artist.get_fontsize() >= 8  # type: ignore[attr-defined]
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, \
                f"{artist.get_gid()} falls off the figure"  # type: ignore[attr-defined]
        assert overlaps(boxes) == [], f"{capture.name} connection {conn.id}"
        by_gid = {t.get_gid(): b for t, b in boxes}  # type: ignore[attr-defined]
        left = (by_gid["head-client"].x0 + by_gid["head-client"].x1) / 2
        right = (by_gid["head-server"].x0 + by_gid["head-server"].x1) / 2
        for gid, box in by_gid.items():
            if gid.startswith("arrow-"):
                assert left < box.x0 and box.x1 < right, f"{gid} crosses a lifeline"


LINE_ARROW = re.compile(r"^(#\d+)\s+\S+\s.*?[│┤][─╌┈]{2}\s(.+?)\s[─╌┈]+▶[│├]"
                        r"|^(#\d+)\s+\S+\s.*?[│┤]◀[─╌┈]+\s(.+?)\s[─╌┈]{2}[│├]")


@needs_samples
@pytest.mark.parametrize("capture", CAPTURES, ids=ids)
def test_text_has_the_same_story_in_the_same_order(capture: Path) -> None:
    for conn in connections(capture):
        ladder = build(conn)
        lines = text(ladder).splitlines()
        arrows = []
        for line in lines:
            found = LINE_ARROW.search(line)
            if found:
                frame, label = (found.group(1), found.group(2)) if found.group(1) else (found.group(3),
                                                                                         found.group(4))
                arrows.append((int(frame[1:]), label))
        assert arrows == [(a.frame, a.label) for a in ladder.arrows]
        client = [m.group(1) for line in lines if (m := CLIENT_STATE.search(line))]
        server = [line.split("├─ ")[1].split()[0] for line in lines if "├─ " in line]
        assert client == [str(t.state) for t in conn.client.history]
        assert server == [str(t.state) for t in conn.server.history]
        for block in ladder.blocks:
            assert any(block.text in line for line in lines)


CLIENT_STATE = re.compile(r"([A-Z_12]+)(?: \([^)]*\))? ─┤")
MERMAID_ARROW = re.compile(r"^    ([CS])(->>|-->>|--\)|-x|--x)([CS]): (.+) \(frame (\d+)\)$")


@needs_samples
@pytest.mark.parametrize("capture", CAPTURES, ids=ids)
def test_mermaid_is_a_sequence_diagram_of_the_segments(capture: Path) -> None:
    for conn in connections(capture):
        ladder = build(conn)
        lines = mermaid(ladder).splitlines()
        assert lines[0] == "sequenceDiagram"
        participants = [line.split() for line in lines if line.strip().startswith("participant")]
        assert [p[1] for p in participants] == ["C", "S"]
        assert lines[2].endswith(ladder.client) and lines[3].endswith(ladder.server)
        arrows = [MERMAID_ARROW.match(line) for line in lines]
        drawn = [m for m in arrows if m]
        assert len(drawn) == len(ladder.arrows)
        for match, arrow in zip(drawn, ladder.arrows, strict=True):
            src, dst = ("C", "S") if arrow.from_client else ("S", "C")
            assert (match.group(1), match.group(3)) == (src, dst)
            assert match.group(4) == arrow.label and int(match.group(5)) == arrow.frame
        for line in lines[1:]:
            assert ";" not in line and "#" not in line
            assert line.startswith(("    %%", "    participant ", "    Note ")) or MERMAID_ARROW.match(line), line
        notes_c = [line.split(": ", 1)[1] for line in lines if line.startswith("    Note left of C: ")]
        assert [n.split()[0] for n in notes_c if n != "2·MSL timer fires"] == \
            [str(t.state) for t in conn.client.history]

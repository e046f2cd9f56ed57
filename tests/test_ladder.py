"""The ladder layout model, on connections built segment by segment (tests/wire.py).

What is checked: the arrow labels (flags, relative and absolute numbers,
retransmission and keep-alive marks), where each state name sits (at the
arrow of the frame the analyzer names as evidence, on the sender's or the
receiver's end), crossing SYNs/FINs, cut pauses in proportional time and
none in sequential time, collapsed data runs, and the 2·MSL timer row.
"""

import itertools

import pytest

from analyzer.connection import Timeouts
from analyzer.ladder import (
    COLLAPSE_MIN,
    KEEP,
    MARK_ROWS,
    SLANT,
    Arrow,
    Block,
    Gap,
    StateMark,
    build,
    human_bytes,
    seconds,
)
from tests.wire import Wire, handshake


def four_way(w: Wire) -> None:
    handshake(w)
    w.c("PA", data=10)
    w.s("A")
    w.c("FA")
    w.s("A")
    w.s("FA")
    w.c("A")


def ladder_of(w: Wire, **kw):
    timeouts = kw.pop("timeouts", None)
    return build(w.one(timeouts, keep_segments=True), **kw)


def marks(ladder, client: bool) -> list[tuple[str, int | None]]:
    return [(m.state, m.frame) for m in ladder.states if m.client == client]


def test_labels_flags_relative_numbers_and_frames():
    w = Wire()
    four_way(w)
    ladder = ladder_of(w)
    assert [a.label for a in ladder.arrows] == [
        "SYN  seq 0",
        "SYN+ACK  seq 0  ack 1",
        "ACK  seq 1  ack 1",
        "PSH+ACK  seq 1:11  ack 1  len 10",
        "ACK  seq 1  ack 11",
        "FIN+ACK  seq 11  ack 1",
        "ACK  seq 1  ack 12",
        "FIN+ACK  seq 1  ack 12",
        "ACK  seq 12  ack 2",
    ]
    assert [a.frame for a in ladder.arrows] == list(range(1, 10))
    assert [a.from_client for a in ladder.arrows] == [True, False, True, True, False, True, False, False, True]
    assert ladder.subtitle == "open: handshake · close: four-way · active closer: client"
    assert ladder.client == "10.0.0.1:40000" and ladder.server == "10.0.0.2:80"


def test_absolute_numbers():
    w = Wire(isn_c=4294967290, isn_s=7)
    handshake(w)
    ladder = ladder_of(w, absolute=True)
    assert [a.label for a in ladder.arrows] == [
        "SYN  seq 4294967290", "SYN+ACK  seq 7  ack 4294967291", "ACK  seq 4294967291  ack 8"]


def test_relative_numbers_wrap_around():
    w = Wire(isn_c=4294967295)
    handshake(w)
    w.c("PA", data=5)
    assert ladder_of(w).arrows[-1].label == "PSH+ACK  seq 1:6  ack 1  len 5"


def test_states_sit_at_their_evidence_sender_or_receiver_end():
    w = Wire()
    four_way(w)
    ladder = ladder_of(w)
    arrow = {a.frame: a for a in ladder.arrows}
    assert marks(ladder, True) == [("SYN_SENT", 1), ("ESTABLISHED", 2), ("FIN_WAIT_1", 6),
                                   ("FIN_WAIT_2", 7), ("TIME_WAIT", 8)]
    assert marks(ladder, False) == [("SYN_RCVD", 1), ("ESTABLISHED", 3), ("CLOSE_WAIT", 6),
                                    ("LAST_ACK", 8), ("CLOSED", 9)]
    for mark in ladder.states:
        a = arrow[mark.frame]
        expected = a.y_send if a.from_client == mark.client else a.y_recv
        assert mark.y == pytest.approx(expected), mark
    time_wait = next(m for m in ladder.states if m.state == "TIME_WAIT")
    assert time_wait.detail == "2·MSL = 60 s" and time_wait.open_ended
    assert all(m.detail == "" for m in ladder.states if m.state != "TIME_WAIT")


def test_state_bands_run_until_the_next_state():
    w = Wire()
    four_way(w)
    ladder = ladder_of(w)
    for side in (True, False):
        side_marks = [m for m in ladder.states if m.client == side]
        for mark, following in itertools.pairwise(side_marks):
            assert mark.y_end == following.y and not mark.open_ended
        assert side_marks[-1].y_end == ladder.height or side_marks[-1].y_end <= ladder.height
        assert side_marks[-1].open_ended


def test_state_names_never_crowd_each_other():
    w = Wire()
    handshake(w)
    w.c("FA")
    w.s("FA", ack=1)  # the FINs cross: CLOSING on both sides, then TIME_WAIT
    w.c("A")
    w.s("A")
    ladder = ladder_of(w)
    for side in (True, False):
        side_marks = [m for m in ladder.states if m.client == side]
        for a, b in itertools.pairwise(side_marks):
            assert b.text_y >= a.text_y + MARK_ROWS - 1e-9
            assert b.text_y >= b.y


def test_crossing_fins_are_drawn_crossing():
    w = Wire()
    handshake(w)
    w.c("FA")
    w.s("FA", ack=1)  # sent before the client's FIN arrived: does not acknowledge it
    w.c("A")
    w.s("A")
    ladder = ladder_of(w)
    assert ladder.subtitle.startswith("open: handshake · close: simultaneous")
    fin_c, fin_s = ladder.arrows[3], ladder.arrows[4]
    assert fin_c.crossing and not fin_s.crossing
    assert fin_c.y_recv == pytest.approx(fin_s.y_send + SLANT)  # arrives after the server sent its FIN
    assert fin_s.y_recv == pytest.approx(fin_s.y_send + SLANT)
    assert ("CLOSING", 6) in marks(ladder, False) and ("CLOSING", 5) in marks(ladder, True)


def test_plain_arrows_slant_down_one_way():
    w = Wire()
    four_way(w)
    for arrow in ladder_of(w).arrows:
        assert arrow.y_recv == pytest.approx(arrow.y_send + SLANT) and not arrow.crossing


def test_proportional_time_cuts_long_pauses_and_marks_them():
    w = Wire()
    handshake(w)
    w.wait(3.2)
    w.c("FA")
    w.s("FA")
    w.c("A")
    ladder = ladder_of(w)
    assert [g.text for g in ladder.gaps] == ["≈ 3.2 s"]
    gap = ladder.gaps[0]
    assert ladder.arrows[2].y_send < gap.y < ladder.arrows[3].y_send
    assert gap.seconds == pytest.approx(3.21)


def test_proportional_spacing_grows_with_the_pause():
    w = Wire(dt=0.0001)
    handshake(w)
    w.wait(0.3)
    w.c("FA")
    w.s("A")
    ys = [a.y_send for a in ladder_of(w).arrows]
    steps = [b - a for a, b in itertools.pairwise(ys)]
    assert steps[0] == pytest.approx(1.0, abs=0.01)  # microseconds: one row
    assert steps[2] > 2.5  # 300 ms: visibly further down
    assert not ladder_of(w).gaps


def test_sequential_time_is_one_row_per_segment_and_cuts_nothing():
    w = Wire()
    handshake(w)
    w.wait(10)
    w.c("FA")
    w.s("FA")
    w.c("A")
    ladder = ladder_of(w, time="sequential")
    assert [a.y_send for a in ladder.arrows] == [0, 1, 2, 3, 4, 5]
    assert ladder.gaps == []


def bulk(w: Wire, pairs: int) -> None:
    handshake(w)
    for _ in range(pairs):
        w.c("PA", data=1460)
        w.s("A")
    w.c("FA")
    w.s("FA")
    w.c("A")


def test_long_data_runs_collapse_into_one_block():
    w = Wire()
    bulk(w, 400)
    ladder = ladder_of(w)
    assert len(ladder.blocks) == 1
    block = ladder.blocks[0]
    run = 800  # frames 4-803; the handshake's ACK is evidence (server ESTABLISHED): not in the run
    collapsed = run - 2 * KEEP
    assert block.segments == collapsed
    assert block.text == f"… {collapsed:,} segments, {human_bytes(block.payload_bytes)} …"
    assert block.first_frame == 4 + KEEP and block.last_frame == block.first_frame + collapsed - 1
    assert len(ladder.arrows) == len(w.segments) - collapsed
    drawn = [a.frame for a in ladder.arrows]
    assert block.first_frame - 1 in drawn and block.last_frame + 1 in drawn
    assert all(not block.first_frame <= f <= block.last_frame for f in drawn)
    before, after = block.first_frame - 1, block.last_frame + 1
    y = {a.frame: a.y_send for a in ladder.arrows}
    assert y[before] < block.y_top < block.y_bottom < y[after]


def test_all_segments_turns_collapsing_off_and_short_runs_never_collapse():
    w = Wire()
    bulk(w, 400)
    ladder = ladder_of(w, all_segments=True)
    assert ladder.blocks == [] and len(ladder.arrows) == len(w.segments)
    short = Wire()
    bulk(short, (COLLAPSE_MIN - 1) // 2)
    assert ladder_of(short).blocks == []


def test_megabytes_are_counted_in_the_block():
    w = Wire()
    bulk(w, 1200)
    block = ladder_of(w).blocks[0]
    assert "MB" in block.text and block.text.startswith("… 2,39")


def test_retransmissions_and_keepalives_are_flagged():
    w = Wire()
    w.c("S")
    w.c("S", seq=0, at=101.0)
    w.s("SA")
    w.c("A")
    w.wait(75)
    w.c("A", seq=0)  # a keep-alive probe: one below snd_nxt, after 75 s of quiet
    w.s("A")
    ladder = ladder_of(w)
    kinds = [(a.kind, a.label) for a in ladder.arrows]
    assert kinds[1] == ("retransmission", "SYN  seq 0  [retransmission]")
    assert kinds[4] == ("keepalive", "ACK  seq 0  ack 1  [keep-alive]")
    assert [a.kind for a in ladder.arrows].count("") == 4


def test_refused_has_no_server_states():
    w = Wire()
    w.c("S")
    w.s("RA", ack=1)
    ladder = ladder_of(w)
    assert [a.label for a in ladder.arrows] == ["SYN  seq 0", "RST+ACK  seq 0  ack 1"]
    assert marks(ladder, False) == []
    assert marks(ladder, True) == [("SYN_SENT", 1), ("CLOSED", 2)]
    assert "reset by server in CLOSED" in ladder.subtitle


def test_midstream_starts_established_at_the_top():
    w = Wire()
    w.c("PA", data=100)
    w.s("A")
    ladder = ladder_of(w)
    assert [(m.state, m.y) for m in ladder.states] == [("ESTABLISHED", 0.0), ("ESTABLISHED", 0.0)]
    assert ladder.arrows[0].label == "PSH+ACK  seq 0:100  ack 0  len 100"


def test_the_2msl_timer_gets_its_own_row():
    w = Wire()
    four_way(w)
    w.wait(3.0)
    w.s("A")  # a late stray segment: TIME_WAIT (2·MSL = 2 s) has ended before it
    ladder = ladder_of(w, timeouts=Timeouts(msl=1.0))
    closed = [m for m in ladder.states if m.client and m.frame is None]
    assert [(m.state) for m in closed] == ["CLOSED"]
    assert len(ladder.timers) == 1 and ladder.timers[0].client
    timer = ladder.timers[0]
    assert closed[0].y == timer.y
    ys = {a.frame: a.y_send for a in ladder.arrows}
    assert ys[9] < timer.y < ys[10]
    time_wait = next(m for m in ladder.states if m.state == "TIME_WAIT")
    assert time_wait.detail == "2·MSL = 2 s" and time_wait.y_end == timer.y and not time_wait.open_ended
    assert [g.text for g in ladder.gaps] == ["≈ 2.0 s", "≈ 1.0 s"]  # up to the timer, then to frame 10


def test_items_are_in_reading_order():
    w = Wire()
    four_way(w)
    items = ladder_of(w).items()
    assert isinstance(items[0], Arrow) and items[0].frame == 1
    assert isinstance(items[1], StateMark) and items[1].state == "SYN_SENT"
    tops = [i.y_send if isinstance(i, Arrow) else i.y_top if isinstance(i, Block) else i.y for i in items]
    assert tops == sorted(tops)
    assert not any(isinstance(i, Gap) for i in items)


def test_needs_the_segments():
    w = Wire()
    handshake(w)
    with pytest.raises(ValueError, match="keep_segments"):
        build(w.one())


@pytest.mark.parametrize(("value", "text"), [
    (3.21, "3.2 s"), (1.0, "1 s"), (42.4, "42 s"), (60.0, "60 s"), (150, "2.5 min"), (0.25, "250 ms"),
    (9000, "2.5 h"),
])
def test_seconds(value, text):
    assert seconds(value) == text


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1_600_000, "1.6 MB"), (3_200_000_000, "3.2 GB"),
])
def test_human_bytes(size, text):
    assert human_bytes(size) == text

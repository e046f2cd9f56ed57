"""Connections built from segments: every label, and the state paths behind them.

Frame numbers in the expected paths are worked out by hand from the delivery
rules in analyzer/connection.py: a sender changes state at its own frame, a
receiver at the frame it received (or at the frame that proves receipt when
segments crossed).
"""

from dataclasses import replace

from analyzer.connection import Timeouts
from tests.wire import Wire, handshake, path


class TestOpen:
    def test_three_way_handshake(self):
        w = Wire()
        handshake(w)
        conn = w.one()
        assert conn.labels["open"] == "handshake"
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@2"]
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3"]
        assert conn.labels["close"] == "open"
        assert not conn.roles_inferred

    def test_handshake_ack_carrying_data(self):
        w = Wire()
        w.c("S"), w.s("SA"), w.c("PA", data=20)
        conn = w.one()
        assert conn.labels["open"] == "handshake"
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3"]

    def test_refused(self):
        w = Wire()
        w.c("S"), w.s("RA")
        conn = w.one()
        assert conn.labels["open"] == "refused"
        assert conn.labels["close"] == "none"
        assert path(conn, "client") == ["SYN_SENT@1", "CLOSED@2"]
        assert path(conn, "server") == []  # no listener: the server never left CLOSED
        assert (conn.labels["reset_by"], conn.labels["reset_state"]) == ("server", "CLOSED")

    def test_unanswered_with_retries(self):
        w = Wire()
        w.c("S"), w.c("S", seq=0, at=101.0), w.c("S", seq=0, at=103.0)
        conn = w.one()
        assert conn.labels["open"] == "unanswered"
        assert conn.retransmits["syn"] == 2
        assert path(conn, "client") == ["SYN_SENT@1"]
        assert path(conn, "server") == []
        assert conn.client.state.name == "SYN_SENT"

    def test_incomplete_silence(self):
        w = Wire()
        w.c("S"), w.s("SA"), w.s("SA", seq=0), w.s("SA", seq=0)
        conn = w.one()
        assert conn.labels["open"] == "incomplete"
        assert conn.labels["close"] == "none"
        assert conn.retransmits["synack"] == 2
        assert path(conn, "server") == ["SYN_RCVD@1"]
        assert path(conn, "client") == ["SYN_SENT@1"]  # it never showed it got the SYN-ACK

    def test_incomplete_rst_from_client(self):
        w = Wire()
        w.c("S"), w.s("SA"), w.c("R", seq=1)
        conn = w.one()
        assert conn.labels["open"] == "incomplete"
        assert path(conn, "client") == ["SYN_SENT@1", "CLOSED@3"]
        assert path(conn, "server") == ["SYN_RCVD@1", "LISTEN@3"]  # note 1: back to LISTEN
        assert (conn.labels["reset_by"], conn.labels["reset_state"]) == ("client", "SYN_SENT")

    def test_simultaneous_open_syns_cross(self):
        w = Wire(client="10.0.0.1:5000", server="10.0.0.2:6000")
        w.c("S"), w.s("S")                  # both bare SYNs, in flight at once
        w.c("SA", seq=0), w.s("SA", seq=0)  # each answers the other's SYN
        w.c("A")
        conn = w.one()
        assert conn.labels["open"] == "simultaneous-open"
        assert conn.retransmits == {"syn": 0, "synack": 0, "fin": 0}
        # client: its SYN (1), the server's SYN received (2), its SYN,ACK acked (4)
        assert path(conn, "client") == ["SYN_SENT@1", "SYN_RCVD@2", "ESTABLISHED@4"]
        # server: had sent its SYN (2) before the client's SYN arrived; its SYN,ACK (4)
        # proves it got that SYN; the client's SYN,ACK reaches it after 4, proven by 5
        assert path(conn, "server") == ["SYN_SENT@2", "SYN_RCVD@4", "ESTABLISHED@5"]

    def test_partial_infers_roles_from_ports(self):
        w = Wire(client="10.0.0.2:80", server="10.0.0.1:51000")  # first packet from the server
        w.c("PA", data=100), w.s("A")
        conn = w.one()
        assert conn.labels["open"] == "partial"
        assert conn.roles_inferred
        assert conn.client.port == 51000
        assert path(conn, "client") == ["ESTABLISHED@1"]

    def test_syn_data_fast_open(self):
        w = Wire()
        w.c("S", data=30), w.s("SA"), w.c("A")
        conn = w.one()
        assert conn.syn_data
        assert conn.labels["open"] == "handshake"


class TestClose:
    def test_four_way_client_first(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        conn = w.one()
        assert conn.labels["close"] == "four-way"
        assert conn.labels["active_closer"] == "client"
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@2", "FIN_WAIT_1@4",
                                        "FIN_WAIT_2@5", "TIME_WAIT@6"]
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3", "CLOSE_WAIT@4",
                                        "LAST_ACK@6", "CLOSED@7"]

    def test_four_way_server_first_leaves_time_wait_on_the_server(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=50), w.s("PA", data=500), w.s("FA"), w.c("A"), w.c("FA"), w.s("A")
        conn = w.one()
        assert conn.labels["close"] == "four-way"
        assert conn.labels["active_closer"] == "server"
        assert conn.server.state.name == "TIME_WAIT"
        assert conn.client.state.name == "CLOSED"

    def test_three_way_fin_carries_the_ack(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("FA"), w.c("A")
        conn = w.one()
        assert conn.labels["close"] == "three-way"
        # note 2: FIN_WAIT_1 straight to TIME_WAIT on a FIN that acks our FIN
        assert path(conn, "client")[-2:] == ["FIN_WAIT_1@4", "TIME_WAIT@5"]
        assert path(conn, "server")[-3:] == ["CLOSE_WAIT@4", "LAST_ACK@5", "CLOSED@6"]

    def test_simultaneous_close_fins_cross(self):
        w = Wire()
        handshake(w)
        w.c("FA")                # 4: client FIN
        w.s("FA", ack=1)         # 5: server FIN, sent before the client's FIN arrived
        w.c("A")                 # 6: client acks the server's FIN
        w.s("A")                 # 7: server acks the client's FIN
        conn = w.one()
        assert conn.labels["close"] == "simultaneous"
        assert conn.labels["active_closer"] == "both"
        assert path(conn, "client")[-3:] == ["FIN_WAIT_1@4", "CLOSING@5", "TIME_WAIT@7"]
        assert path(conn, "server")[-3:] == ["FIN_WAIT_1@5", "CLOSING@6", "TIME_WAIT@6"]

    def test_half_close_data_after_fin(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("PA", data=100), w.c("A"), w.s("PA", data=100), w.c("A")
        w.s("FA"), w.c("A")
        conn = w.one()
        assert conn.labels["half_close"] is True
        assert conn.labels["close"] == "four-way"

    def test_no_half_close_without_data_after_fin(self):
        w = Wire()
        handshake(w)
        w.s("PA", data=100), w.c("A"), w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        assert w.one().labels["half_close"] is False

    def test_left_in_close_wait(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A")
        conn = w.one()
        assert conn.labels["close"] == "half-closed"
        assert conn.server.state.name == "CLOSE_WAIT"
        assert conn.client.state.name == "FIN_WAIT_2"

    def test_open_at_the_end(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=10), w.s("A")
        assert w.one().labels["close"] == "open"

    def test_reset_by_client_while_established(self):
        w = Wire()
        handshake(w)
        w.c("RA")
        conn = w.one()
        assert conn.labels["close"] == "reset"
        assert (conn.labels["reset_by"], conn.labels["reset_state"]) == ("client", "ESTABLISHED")
        assert path(conn, "server")[-1] == "CLOSED@4"

    def test_reset_after_close_from_fin_wait_2(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("PA", data=100), w.c("R", seq=2)
        conn = w.one()
        assert conn.labels["close"] == "reset"
        assert (conn.labels["reset_by"], conn.labels["reset_state"]) == ("client", "FIN_WAIT_2")
        assert conn.labels["active_closer"] == "client"

    def test_late_rst_after_an_orderly_close_is_not_an_abort(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A"), w.c("R", seq=2)
        assert w.one().labels["close"] == "four-way"

    def test_never_established(self):
        w = Wire()
        w.c("S"), w.s("RA")
        assert w.one().labels["close"] == "none"

    def test_fin_retransmission_counted_not_an_event(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.c("FA", seq=1), w.s("A"), w.s("FA"), w.c("A")
        conn = w.one()
        assert conn.retransmits["fin"] == 1
        assert conn.labels["close"] == "four-way"
        assert not conn.anomalies

    def test_close_from_syn_rcvd(self):
        w = Wire()
        w.c("S"), w.s("SA")
        w.s("FA")                 # 3: server closes before the handshake's ACK arrives
        w.c("A", ack=1)           # 4: client acks the SYN-ACK only
        w.c("A")                  # 5: client acks the FIN
        w.c("FA"), w.s("A")       # 6, 7
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1", "FIN_WAIT_1@3", "FIN_WAIT_2@5", "TIME_WAIT@6"]
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@2", "CLOSE_WAIT@5",
                                        "LAST_ACK@6", "CLOSED@7"]
        assert conn.labels["open"] == "handshake"
        assert conn.labels["close"] == "four-way"
        assert not conn.anomalies


class TestTime:
    def test_time_wait_ends_after_two_msl_when_the_capture_reaches_it(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        other = Wire(client="10.0.0.9:1234", t0=w.t + 61)
        other.c("S")
        w.segments += [_renumber(seg, len(w.segments) + 1) for seg in other.segments]
        conns = w.analyze(Timeouts(msl=30))
        first = conns[0]
        assert path(first, "client")[-2:] == ["TIME_WAIT@6", "CLOSED@-"]
        assert first.client.history[-1].ts == first.client.history[-2].ts + 60

    def test_time_wait_stays_when_the_capture_ends_first(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        assert w.one().client.state.name == "TIME_WAIT"

    def test_keepalive_probes_are_counted(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=10), w.s("A")
        for _ in range(3):
            w.wait(5)
            w.c("A", seq=10)   # one byte below snd_nxt (ISN + 1 + 10)
            w.s("A")
        conn = w.one()
        assert conn.keepalives == 3
        assert conn.client.payload_bytes == 10


class TestPortReuse:
    def test_new_isn_on_the_same_four_tuple_splits(self):
        w = Wire()
        handshake(w)
        w.s("FA"), w.c("A"), w.c("FA"), w.s("A")
        w.isn["c"], w.nxt["c"] = 900_000, 900_000
        w.isn["s"], w.nxt["s"] = 700_000, 700_000
        handshake(w)
        conns = w.analyze()
        assert [c.labels["open"] for c in conns] == ["handshake", "handshake"]
        assert conns[1].first_frame == 8

    def test_reuse_ends_the_servers_time_wait_at_the_new_syn(self):
        """RFC 6191 / Linux tcp_timewait_state_process: the SYN that reuses the 4-tuple deletes the TIME_WAIT
        socket, so the old server goes TIME_WAIT -> CLOSED at that SYN (frame 8), not at 2*MSL."""
        w = Wire()
        handshake(w)
        w.s("FA"), w.c("A"), w.c("FA"), w.s("A")   # 4-7: the server closes first, TIME_WAIT at 6
        w.isn["c"], w.nxt["c"] = 900_000, 900_000
        w.isn["s"], w.nxt["s"] = 700_000, 700_000
        syn = w.c("S")
        old, new = w.analyze()
        assert path(old, "server")[-2:] == ["TIME_WAIT@6", "CLOSED@8"]
        assert old.server.history[-1].ts == syn.ts and old.finished_at == syn.ts
        assert path(old, "client")[-1] == "CLOSED@7"
        assert path(new, "client") == ["SYN_SENT@8"]

    def test_reuse_ends_the_clients_time_wait_when_it_sends_the_syn(self):
        """tcp_tw_reuse: the client in TIME_WAIT opens again from the same port; its TIME_WAIT ends at its SYN."""
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A")   # the client closes first: TIME_WAIT at 6
        w.isn["c"], w.nxt["c"] = 900_000, 900_000
        w.c("S")
        old, _ = w.analyze()
        assert path(old, "client")[-2:] == ["TIME_WAIT@6", "CLOSED@8"]
        assert old.client.state.name == "CLOSED"

    def test_reuse_after_a_fin_still_pending_closes_what_it_brought_to_time_wait(self):
        """The client's FIN (6) is never ACKed in the capture: finishing delivers it (server TIME_WAIT at 6),
        and only then does the reusing SYN (7) end that TIME_WAIT."""
        w = Wire()
        handshake(w)
        w.s("FA"), w.c("A"), w.c("FA")
        w.isn["c"], w.nxt["c"] = 900_000, 900_000
        w.c("S")
        old, _ = w.analyze()
        assert path(old, "server")[-2:] == ["TIME_WAIT@6", "CLOSED@7"]

    def test_reuse_after_two_msl_adds_nothing(self):
        """TIME_WAIT already over by the timer (frame null): the later SYN is simply a new connection."""
        w = Wire()
        handshake(w)
        w.s("FA"), w.c("A"), w.c("FA"), w.s("A")
        w.wait(61)
        w.isn["c"], w.nxt["c"] = 900_000, 900_000
        w.c("S")
        old, _ = w.analyze(Timeouts(msl=30))
        assert path(old, "server")[-2:] == ["TIME_WAIT@6", "CLOSED@-"]

    def test_reuse_leaves_other_states_alone(self):
        """Only TIME_WAIT ends at the reusing SYN: a server left in CLOSE_WAIT keeps it (nothing proves more)."""
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A")                         # server CLOSE_WAIT at 4, client FIN_WAIT_2 at 5
        w.isn["c"], w.nxt["c"] = 900_000, 900_000
        w.c("S")
        old, _ = w.analyze()
        assert old.server.state.name == "CLOSE_WAIT" and old.client.state.name == "FIN_WAIT_2"

    def test_retransmitted_syn_does_not_split(self):
        w = Wire()
        w.c("S"), w.c("S", seq=0), w.s("SA"), w.c("A")
        assert len(w.analyze()) == 1

    def test_syn_flood_is_forgotten_after_the_handshake_timeout(self):
        from analyzer.tracker import Tracker

        tracker = Tracker(Timeouts(handshake=40))
        peak = 0
        for i in range(5000):  # 10 SYNs a second for 500 s, never answered
            w = Wire(client=f"10.1.{i // 250}.{i % 250}:40000", t0=100 + i / 10)
            seg = w.c("S")
            tracker.add(seg)
            peak = max(peak, len(tracker.open))
        assert peak <= 40 * 10 + 1
        assert len(tracker.flush()) <= 401


def _renumber(seg, frame):
    seg.frame = frame
    return seg


class TestMemory:
    def test_finished_connections_are_retired_as_packet_time_passes(self):
        """A long capture of short connections: the table holds only the last 2·MSL of them."""
        from analyzer.tracker import Tracker

        tracker = Tracker(Timeouts(msl=30))
        peak, finished = 0, 0
        for i in range(3000):  # one connection a second for 50 minutes
            w = Wire(client=f"10.2.{i // 250}.{i % 250}:40000", t0=1000 + i, dt=0.001)
            handshake(w)
            w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
            for seg in w.segments:
                finished += len(tracker.add(seg))
            peak = max(peak, len(tracker.open))
        assert peak <= 2 * 30 + 5 + 2  # TIME_WAIT (60 s) plus the close linger (5 s)
        assert finished + len(tracker.flush()) == 3000

    def test_time_going_backwards_a_little_is_harmless(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A", at=w.t - 0.0004), w.s("FA"), w.c("A")
        conn = w.one()
        assert conn.labels["close"] == "four-way" and not conn.anomalies


    def test_finished_connections_are_freed_not_held_by_old_timers(self):
        """A long-lived connection that closes moves its wake-up earlier (idle timeout -> 2·MSL);
        the superseded timer must not keep the finished connection in memory."""
        import gc
        import weakref

        from analyzer.tracker import Tracker

        segments = []
        for i in range(1500):  # one new connection a second, each open for 50 s, then closed
            w = Wire(client=f"10.3.{i // 250}.{i % 250}:40000", t0=1000 + i, dt=0.001)
            handshake(w)
            w.wait(50)
            w.c("PA", data=10), w.s("A"), w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
            segments += w.segments
        segments.sort(key=lambda seg: seg.ts)
        for frame, seg in enumerate(segments, start=1):
            seg.frame = frame
        tracker = Tracker(Timeouts(msl=30, idle=900))
        finished = []
        for seg in segments:
            finished += [weakref.ref(c) for c in tracker.add(seg)]
        gc.collect()
        assert len(finished) > 1300
        alive = sum(ref() is not None for ref in finished)
        assert alive <= len(tracker.open) + 64  # bounded by the open table, not by the capture
        assert len(tracker._heap) <= 2 * len(tracker.open) + 64

class TestRetransmissionDating:
    def test_a_lost_syn_dates_the_server_at_the_copy_it_answered(self):
        w = Wire()
        w.c("S"), w.c("S", seq=0, at=101.0), w.s("SA"), w.c("A")
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@2", "ESTABLISHED@4"]
        assert conn.retransmits["syn"] == 1

    def test_a_lost_fin_dates_close_wait_at_the_retransmission(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.c("FA", seq=1), w.s("A"), w.s("FA"), w.c("A")
        conn = w.one()
        assert path(conn, "server")[2] == "CLOSE_WAIT@5"
        assert path(conn, "client")[2:] == ["FIN_WAIT_1@4", "FIN_WAIT_2@6", "TIME_WAIT@7"]


class TestRstAcceptability:
    """RFC 9293 §3.10.7.3/§3.10.7.4 with RFC 5961 as Linux applies it: a RST the receiver would not accept
    is an anomaly (a possible blind reset), and neither end moves (connection.py, "RSTs that are not
    acceptable")."""

    BLIND = "is not acceptable: ignored (a possible blind reset, RFC 5961)"

    def test_injected_rst_before_the_synack_leaves_both_ends_alone(self):
        w = Wire()
        w.c("S")
        w.s("RA", seq=0, ack=0)           # 2: ack = the client's ISN, not ISN + 1
        w.s("SA", seq=0), w.c("A")        # 3, 4: the real handshake goes on
        w.c("FA"), w.s("FA"), w.c("A")    # 5-7
        conn = w.one()
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@3", "FIN_WAIT_1@5", "TIME_WAIT@6"]
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@4", "CLOSE_WAIT@5", "LAST_ACK@6", "CLOSED@7"]
        assert (conn.labels["reset_by"], conn.labels["reset_state"]) == (None, None)
        assert conn.labels["open"] == "handshake" and conn.labels["close"] == "three-way"
        assert [(a.frame, a.what) for a in conn.anomalies] == [(2, f"RST to the client in SYN_SENT {self.BLIND}")]

    def test_rst_acking_the_syn_refuses(self):
        w = Wire()
        w.c("S"), w.s("RA", seq=0)        # ack = ISN + 1: acceptable
        conn = w.one()
        assert conn.labels["open"] == "refused" and not conn.anomalies

    def test_rst_without_ack_in_syn_sent_is_ignored(self):
        w = Wire()
        w.c("S"), w.s("R", seq=0)
        conn = w.one()
        assert conn.labels["open"] == "unanswered"
        assert path(conn, "client") == ["SYN_SENT@1"] and path(conn, "server") == []
        assert conn.anomalies[0].frame == 2

    def test_out_of_window_rst_in_established_is_ignored(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=100), w.s("A")     # 4, 5: the server's RCV.NXT is ISN + 101
        w.c("R", seq=70_000)              # 6: far past anything the client sent
        conn = w.one()
        assert conn.client.state.name == "ESTABLISHED" and conn.server.state.name == "ESTABLISHED"
        assert conn.labels["close"] == "open" and conn.labels["reset_by"] is None
        assert [a.frame for a in conn.anomalies] == [6]

    def test_rst_below_what_the_receiver_acknowledged_is_ignored(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=100), w.s("A")
        w.c("R", seq=50)                  # inside the data already acknowledged: RCV.NXT is past it
        assert w.one().labels["close"] == "open"

    def test_rst_between_the_last_ack_and_snd_nxt_is_taken(self):
        """Data in flight (not yet acknowledged): RCV.NXT may be anywhere from the last ACK to SND.NXT."""
        w = Wire()
        handshake(w)
        w.c("PA", data=100), w.s("A", ack=1), w.c("R", seq=51)
        conn = w.one()
        assert conn.labels["close"] == "reset" and conn.labels["reset_by"] == "client"
        assert path(conn, "server")[-1] == "CLOSED@6"

    def test_rst_at_rcv_nxt_minus_one_only_after_the_peers_fin(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.c("R", seq=1)    # the server is in CLOSE_WAIT: seq = its RCV.NXT - 1
        assert w.one().labels["reset_by"] == "client"
        w = Wire()
        handshake(w)
        w.c("PA", data=10), w.s("A"), w.c("R", seq=10)   # ESTABLISHED: RCV.NXT - 1 is not enough
        conn = w.one()
        assert conn.labels["reset_by"] is None and len(conn.anomalies) == 1

    def test_midstream_rst_without_evidence_is_taken(self):
        """A capture that starts mid-connection with the RST: nothing says what RCV.NXT is."""
        w = Wire()
        w.c("RA")
        conn = w.one()
        assert conn.labels["reset_by"] == "client" and not conn.anomalies


class TestAnomalyBound:
    """Anomalies: the first ANOMALY_EXAMPLES of each kind listed with frames, every one counted by kind."""

    BLIND = "RST to the client in ESTABLISHED is not acceptable: ignored (a possible blind reset, RFC 5961)"

    @staticmethod
    def reset_storm(segments: int) -> Wire:
        """A handshake, then `segments` RSTs far out of the client's window (a blind-reset flood): every one is
        an anomaly. (One-sided flows, the issue's example, no longer make one per packet: what the visible side
        acknowledges now advances the unseen side, test_what_an_observer_infers.)"""
        w = Wire()
        handshake(w)
        for i in range(segments):
            w.s("R", seq=10_000_000 + i)
        return w

    def test_a_reset_storm_keeps_five_and_counts_all(self):
        conn = self.reset_storm(3000).one()
        assert [a.frame for a in conn.anomalies] == [4, 5, 6, 7, 8]
        assert conn.anomaly_counts == {self.BLIND: 3000}

    def test_the_list_does_not_grow_with_the_flow(self):
        short, long = self.reset_storm(10).one(), self.reset_storm(20_000).one()
        assert short.anomalies == long.anomalies
        assert sum(long.anomaly_counts.values()) == 20_000

    def test_each_kind_keeps_its_own_first_five(self):
        w = Wire()
        handshake(w)
        for i in range(8):
            w.s("R", seq=10_000_000 + i)      # 4-11: out-of-window RSTs to the client
            w.c("R", seq=20_000_000 + i)      # and to the server
        conn = w.one()
        to_client = "RST to the client in ESTABLISHED is not acceptable: ignored (a possible blind reset, RFC 5961)"
        to_server = "RST to the server in ESTABLISHED is not acceptable: ignored (a possible blind reset, RFC 5961)"
        assert conn.anomaly_counts == {to_client: 8, to_server: 8}
        assert [(a.frame, a.what == to_client) for a in conn.anomalies] == \
            [(f, f % 2 == 0) for f in range(4, 14)]   # five of each, interleaved as they came


class TestThirdAckIgnored:
    """Listen-queue overflow: a SYN-ACK resent after the client's ACK of it proves the ACK did not take; the
    server is back in SYN_RCVD until it proves it is synchronized (connection.py, "A third ACK that did not
    take")."""

    WHY = "server resent its SYN-ACK after the ACK of it: third ACK ignored (accept queue full?)"

    @staticmethod
    def overflow(w: Wire) -> None:
        handshake(w)                       # 1-3: the third ACK (3) is dropped by a full accept queue
        w.c("PA", data=100)                # 4: dropped too
        w.c("PA", data=100, seq=1)         # 5: the client resends it (RTO)
        w.s("SA", seq=0)                   # 6: the server resends its SYN-ACK: it is still in SYN_RCVD
        w.c("A")                           # 7: the client ACKs again (dropped: the queue is still full)
        w.c("PA", data=100, seq=1)         # 8: resent again: this copy gets through
        w.s("A")                           # 9: the server ACKs the data: it is ESTABLISHED

    def test_server_established_at_the_copy_it_answers(self):
        w = Wire()
        self.overflow(w)
        w.c("FA"), w.s("FA"), w.c("A")     # 10-12
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@8", "CLOSE_WAIT@10", "LAST_ACK@11",
                                        "CLOSED@12"]
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@2", "FIN_WAIT_1@10", "TIME_WAIT@11"]
        assert [(a.frame, a.what) for a in conn.anomalies] == [(6, self.WHY)]
        assert conn.retransmits["synack"] == 1
        assert conn.labels["open"] == "handshake" and conn.labels["close"] == "three-way"

    def test_capture_ends_while_waiting_takes_the_last_ack(self):
        w = Wire()
        handshake(w)
        w.s("SA", seq=0), w.c("A"), w.c("PA", data=10, seq=1)   # 4-6: no word from the server after
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@6"]

    def test_nothing_after_the_resent_synack_leaves_syn_rcvd(self):
        w = Wire()
        handshake(w)
        w.s("SA", seq=0)
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1"] and conn.server.state.name == "SYN_RCVD"

    def test_a_second_resend_restarts_the_wait(self):
        w = Wire()
        handshake(w)
        w.s("SA", seq=0), w.c("A")         # 4, 5: dropped again
        w.s("SA", seq=0), w.c("A")         # 6, 7: this one takes
        w.s("PA", data=10)                 # 8: the server sends: proof
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@7"]
        assert len(conn.anomalies) == 1 and conn.retransmits["synack"] == 2

    def test_server_that_already_sent_is_not_revised(self):
        """A server that sent data after ESTABLISHED was established: a later SYN-ACK copy changes nothing."""
        w = Wire()
        handshake(w)
        w.s("PA", data=10), w.s("SA", seq=0)
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3"] and not conn.anomalies

    def test_synack_resent_before_any_ack_is_a_plain_retransmission(self):
        w = Wire()
        w.c("S"), w.s("SA"), w.s("SA", seq=0), w.c("A")
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@4"] and not conn.anomalies

    def test_synack_crossing_the_ack_proves_nothing(self):
        """rst_injected's shape: the SYN-ACK resent in answer to a duplicate SYN, seen sooner after the ACK
        than the server's round trip (SYN -> SYN-ACK, 90 ms): it was sent before the ACK arrived."""
        w = Wire()
        w.c("S", at=100.0), w.c("S", seq=0, at=100.01)
        w.s("SA", at=100.10), w.c("A", at=100.1001)
        w.s("SA", seq=0, at=100.12)        # 20 ms after the ACK < 90 ms
        conn = w.one()
        assert path(conn, "server") == ["SYN_RCVD@2", "ESTABLISHED@4"] and not conn.anomalies


class TestWhatAnObserverInfers:
    """Issue 13: captures that miss what the endpoints did (module docstring of connection.py)."""

    def test_a_capture_starting_at_the_synack_takes_the_isn_as_ack_minus_one(self):
        w = Wire()
        w.c("S")
        w.segments.clear()                  # the SYN was before the capture
        w.s("SA"), w.c("A")
        conn = w.one()
        assert conn.client.isn == 1000      # the SYN-ACK's ack - 1
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@1"]
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@2"]
        assert conn.labels["open"] == "partial" and conn.labels["close"] == "open"

    def test_a_capture_starting_at_the_synack_labels_the_close(self):
        w = Wire()
        w.c("S")
        w.segments.clear()
        w.s("SA"), w.c("A"), w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        conn = w.one()
        assert conn.labels["close"] == "four-way"
        assert [a.what for a in conn.anomalies] == ["capture starts after the SYN"]

    def test_a_synack_captured_before_its_syn_is_one_connection(self):
        w = Wire()
        syn, synack = w.c("S"), w.s("SA")
        w.segments[:] = [replace(synack, frame=1), replace(syn, frame=2, ts=synack.ts + 0.0003)]
        w.c("A")
        conn = w.one()
        assert conn.labels["open"] == "handshake"
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@1"]
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3"]
        assert [(a.frame, a.what) for a in conn.anomalies] == [(2, "SYN captured after its SYN,ACK")]
        assert conn.retransmits["syn"] == 0 and conn.client.packets == 2

    def test_a_client_that_acknowledges_in_syn_sent_got_the_servers_synack(self):
        w = Wire()
        w.c("S"), w.s("SA")
        w.c("A")
        w.segments.pop(1)                   # the server's direction is not captured: frames 1 and 3
        conn = w.one()
        assert conn.unseen == "server"
        assert conn.server.isn == 5000 and conn.server.packets == 0
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@3"]
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3"]
        assert conn.labels["open"] == "handshake" and conn.anomalies == []

    def test_a_server_that_sends_on_from_syn_rcvd_got_the_clients_ack(self):
        w = Wire()
        w.c("S")
        w.segments.clear()
        w.s("SA"), w.c("PA", data=10), w.s("A")
        w.segments.pop(1)                   # only the server's direction: frames 1 and 3
        conn = w.one()
        assert conn.unseen == "client"
        assert path(conn, "server") == ["SYN_RCVD@1", "ESTABLISHED@3"]
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@1"]
        assert conn.labels["open"] == "handshake"

    def test_an_ack_moving_by_one_after_our_own_fin_is_the_peers_fin(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        w.segments[:] = [s for s in w.segments if s.sport == 40000]   # frames 1, 3, 4 (FIN), 7 (ack + 1)
        conn = w.one()
        assert conn.unseen == "server"
        assert path(conn, "client")[-3:] == ["FIN_WAIT_1@4", "FIN_WAIT_2@7", "TIME_WAIT@7"]
        assert path(conn, "server")[-3:] == ["CLOSE_WAIT@4", "LAST_ACK@7", "CLOSED@7"]
        assert (conn.labels["close"], conn.labels["active_closer"]) == ("four-way", "client")

    def test_an_ack_moving_by_one_before_our_own_fin_is_the_peers_fin(self):
        w = Wire()
        handshake(w)
        w.s("FA"), w.c("A"), w.c("FA"), w.s("A")
        w.segments[:] = [s for s in w.segments if s.sport == 40000]   # S 1, A 3, A 5 (ack + 1), FA 6
        conn = w.one()
        assert path(conn, "client")[-2:] == ["CLOSE_WAIT@5", "LAST_ACK@6"]
        assert path(conn, "server")[-3:] == ["FIN_WAIT_1@5", "FIN_WAIT_2@5", "TIME_WAIT@6"]
        assert (conn.labels["close"], conn.labels["active_closer"]) == ("four-way", "server")

    def test_one_byte_acknowledged_without_a_fin_of_our_own_is_not_taken_for_a_fin(self):
        w = Wire()
        handshake(w)
        w.s("PA", data=1), w.c("A")
        w.segments[:] = [s for s in w.segments if s.sport == 40000]
        conn = w.one()
        assert conn.server.fin_seq is None and conn.server.state.name == "ESTABLISHED"
        assert conn.labels["close"] == "open"

    def test_a_capture_that_sees_both_sides_infers_nothing(self):
        w = Wire()
        handshake(w)
        w.c("FA"), w.s("A"), w.s("FA"), w.c("A")
        assert w.one().unseen is None

    def test_a_fin_sent_in_syn_sent_is_queued_and_the_later_fin_is_the_fin(self):
        w = Wire()
        w.c("S"), w.c("F"), w.s("SA", ack=1), w.c("FA", seq=1), w.s("A"), w.s("FA"), w.c("A")
        conn = w.one()
        assert [(a.frame, a.what) for a in conn.anomalies] == [(2, "client sent FIN in SYN_SENT")]
        assert path(conn, "client") == ["SYN_SENT@1", "ESTABLISHED@3", "FIN_WAIT_1@4", "FIN_WAIT_2@5",
                                        "TIME_WAIT@6"]
        assert conn.retransmits["fin"] == 0 and conn.labels["close"] == "four-way"

    def test_an_ack_reordered_after_the_fin_is_not_a_keepalive(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=10), w.s("A")
        ack, fin = w.c("A"), w.c("FA")
        w.segments[-2:] = [replace(fin, frame=ack.frame, ts=ack.ts), replace(ack, frame=fin.frame, ts=fin.ts)]
        conn = w.one()
        assert conn.keepalives == 0

    def test_a_probe_without_idleness_is_not_a_keepalive(self):
        w = Wire()
        handshake(w)
        w.c("PA", data=10), w.s("A")
        w.c("A", seq=10)                    # snd_nxt - 1, but 10 ms after the data
        assert w.one().keepalives == 0

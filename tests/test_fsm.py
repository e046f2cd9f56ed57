"""The transition table against RFC 9293 Figure 5, state by state.

Each test puts one endpoint in a state and feeds it one event, as smoltcp's
socket tests do. The expectations are written from the figure and its notes
(§3.3.2) and from the segment processing rules (§3.10.7), not from the table.
"""

import pytest

from analyzer.fsm import FIN_SENT, SYNCHRONIZED, TRANSITIONS, Event, State, receive_events, send_events, step

S, E = State, Event


def go(state: State, event: Event, passive: bool = True) -> State | None:
    return step(state, event, passive=passive)


class TestClosed:
    def test_active_open_sends_syn(self):
        assert go(S.CLOSED, E.SND_SYN) is S.SYN_SENT

    def test_syn_to_a_closed_port_is_answered_by_rst_and_changes_nothing(self):
        assert go(S.CLOSED, E.RCV_SYN) is S.CLOSED
        assert go(S.CLOSED, E.SND_RST) is S.CLOSED

    def test_data_from_a_closed_endpoint_is_not_allowed(self):
        assert go(S.CLOSED, E.SND_ACK) is None
        assert go(S.CLOSED, E.RCV_FIN) is None


class TestListen:
    def test_rcv_syn_goes_to_syn_rcvd(self):
        assert go(S.LISTEN, E.RCV_SYN) is S.SYN_RCVD

    def test_send_turns_listen_into_active_open(self):
        assert go(S.LISTEN, E.SND_SYN) is S.SYN_SENT

    def test_listen_sends_no_data(self):
        assert go(S.LISTEN, E.SND_ACK) is None


class TestSynSent:
    def test_rcv_syn_ack_establishes(self):
        assert go(S.SYN_SENT, E.RCV_SYNACK) is S.ESTABLISHED

    def test_rcv_bare_syn_is_simultaneous_open(self):
        assert go(S.SYN_SENT, E.RCV_SYN) is S.SYN_RCVD

    def test_rcv_rst_is_refused(self):
        assert go(S.SYN_SENT, E.RCV_RST) is S.CLOSED

    def test_send_rst_closes(self):
        assert go(S.SYN_SENT, E.SND_RST) is S.CLOSED

    def test_no_fin_before_the_handshake(self):
        assert go(S.SYN_SENT, E.SND_FIN) is None
        assert go(S.SYN_SENT, E.SND_ACK) is None


class TestSynRcvd:
    def test_ack_of_syn_establishes(self):
        assert go(S.SYN_RCVD, E.RCV_ACK_OF_SYN) is S.ESTABLISHED

    def test_syn_ack_of_simultaneous_open_establishes(self):
        assert go(S.SYN_RCVD, E.RCV_SYNACK) is S.ESTABLISHED

    def test_sending_the_syn_ack_keeps_the_state(self):
        assert go(S.SYN_RCVD, E.SND_SYNACK) is S.SYN_RCVD

    def test_close_sends_fin(self):
        assert go(S.SYN_RCVD, E.SND_FIN) is S.FIN_WAIT_1

    def test_rst_returns_a_passive_open_to_listen(self):  # note 1
        assert go(S.SYN_RCVD, E.RCV_RST, passive=True) is S.LISTEN

    def test_rst_closes_an_active_open(self):  # note 1, §3.10.7.4 second
        assert go(S.SYN_RCVD, E.RCV_RST, passive=False) is S.CLOSED

    def test_fin_goes_to_close_wait(self):  # §3.10.7.4 eighth
        assert go(S.SYN_RCVD, E.RCV_FIN) is S.CLOSE_WAIT

    def test_sending_rst_closes(self):
        assert go(S.SYN_RCVD, E.SND_RST) is S.CLOSED


class TestEstablished:
    def test_close_sends_fin(self):
        assert go(S.ESTABLISHED, E.SND_FIN) is S.FIN_WAIT_1

    def test_rcv_fin_goes_to_close_wait(self):
        assert go(S.ESTABLISHED, E.RCV_FIN) is S.CLOSE_WAIT

    def test_data_keeps_the_state(self):
        assert go(S.ESTABLISHED, E.SND_ACK) is S.ESTABLISHED

    def test_rst_either_way_closes(self):
        assert go(S.ESTABLISHED, E.RCV_RST) is S.CLOSED
        assert go(S.ESTABLISHED, E.SND_RST) is S.CLOSED

    def test_no_syn_once_established(self):
        assert go(S.ESTABLISHED, E.RCV_SYN) is None


class TestFinWait1:
    def test_ack_of_fin_goes_to_fin_wait_2(self):
        assert go(S.FIN_WAIT_1, E.RCV_ACK_OF_FIN) is S.FIN_WAIT_2

    def test_crossing_fin_goes_to_closing(self):
        assert go(S.FIN_WAIT_1, E.RCV_FIN) is S.CLOSING

    def test_fin_that_acks_our_fin_goes_to_time_wait(self):  # note 2
        assert go(S.FIN_WAIT_1, E.RCV_FIN_ACK) is S.TIME_WAIT

    def test_rst_closes(self):
        assert go(S.FIN_WAIT_1, E.RCV_RST) is S.CLOSED

    def test_no_second_fin(self):
        assert go(S.FIN_WAIT_1, E.SND_FIN) is None

    def test_late_ack_of_syn_after_closing_from_syn_rcvd(self):  # §3.10.7.4 fifth
        assert go(S.FIN_WAIT_1, E.RCV_ACK_OF_SYN) is S.FIN_WAIT_1


class TestFinWait2:
    def test_fin_goes_to_time_wait(self):
        assert go(S.FIN_WAIT_2, E.RCV_FIN) is S.TIME_WAIT

    def test_still_acks_data(self):
        assert go(S.FIN_WAIT_2, E.SND_ACK) is S.FIN_WAIT_2

    def test_rst_sent_on_data_for_a_closed_socket(self):
        assert go(S.FIN_WAIT_2, E.SND_RST) is S.CLOSED


class TestCloseWait:
    def test_close_sends_fin(self):
        assert go(S.CLOSE_WAIT, E.SND_FIN) is S.LAST_ACK

    def test_can_still_send_data(self):
        assert go(S.CLOSE_WAIT, E.SND_ACK) is S.CLOSE_WAIT

    def test_rst_closes(self):
        assert go(S.CLOSE_WAIT, E.RCV_RST) is S.CLOSED


class TestClosing:
    def test_ack_of_fin_goes_to_time_wait(self):
        assert go(S.CLOSING, E.RCV_ACK_OF_FIN) is S.TIME_WAIT

    def test_rst_closes(self):
        assert go(S.CLOSING, E.RCV_RST) is S.CLOSED


class TestLastAck:
    def test_ack_of_fin_closes(self):
        assert go(S.LAST_ACK, E.RCV_ACK_OF_FIN) is S.CLOSED

    def test_rst_closes(self):
        assert go(S.LAST_ACK, E.RCV_RST) is S.CLOSED


class TestTimeWait:
    def test_two_msl_closes(self):
        assert go(S.TIME_WAIT, E.TIMEOUT_2MSL) is S.CLOSED

    def test_acks_a_retransmitted_fin(self):
        assert go(S.TIME_WAIT, E.SND_ACK) is S.TIME_WAIT

    def test_rst_closes(self):
        assert go(S.TIME_WAIT, E.RCV_RST) is S.CLOSED

    def test_timer_only_in_time_wait(self):
        assert go(S.ESTABLISHED, E.TIMEOUT_2MSL) is None


FIGURE_5 = {
    (S.CLOSED, E.SND_SYN): S.SYN_SENT, (S.LISTEN, E.SND_SYN): S.SYN_SENT,
    (S.LISTEN, E.RCV_SYN): S.SYN_RCVD, (S.SYN_SENT, E.RCV_SYN): S.SYN_RCVD,
    (S.SYN_SENT, E.RCV_SYNACK): S.ESTABLISHED, (S.SYN_RCVD, E.RCV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RCVD, E.SND_FIN): S.FIN_WAIT_1, (S.ESTABLISHED, E.SND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.RCV_FIN): S.CLOSE_WAIT, (S.FIN_WAIT_1, E.RCV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RCV_FIN): S.CLOSING, (S.FIN_WAIT_2, E.RCV_FIN): S.TIME_WAIT,
    (S.CLOSE_WAIT, E.SND_FIN): S.LAST_ACK, (S.CLOSING, E.RCV_ACK_OF_FIN): S.TIME_WAIT,
    (S.LAST_ACK, E.RCV_ACK_OF_FIN): S.CLOSED, (S.TIME_WAIT, E.TIMEOUT_2MSL): S.CLOSED,
    (S.FIN_WAIT_1, E.RCV_FIN_ACK): S.TIME_WAIT, (S.SYN_RCVD, E.RCV_RST): S.LISTEN,
}


@pytest.mark.parametrize(("arrow", "target"), FIGURE_5.items(), ids=lambda x: str(x))
def test_every_arrow_of_figure_5_is_in_the_table(arrow, target):
    assert TRANSITIONS[arrow] is target


def test_every_state_is_reachable_from_closed():
    reached, frontier = {S.CLOSED}, [S.CLOSED]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)


@pytest.mark.parametrize("state", sorted(SYNCHRONIZED, key=str))
def test_rst_received_in_any_synchronized_state_closes(state):  # note 3
    assert go(state, E.RCV_RST) is S.CLOSED


@pytest.mark.parametrize("state", list(State))
def test_rst_can_be_sent_from_any_state(state):  # note 3 (CLOSED, as Linux does)
    assert go(state, E.SND_RST) is S.CLOSED


def test_fin_sent_states_are_those_after_snd_fin():
    after_fin = {target for (_, event), target in TRANSITIONS.items() if event is E.SND_FIN}
    assert after_fin <= FIN_SENT


class TestSegmentToEvents:
    def test_send_flags(self):
        assert send_events(syn=True, ack=False, fin=False, rst=False) == (E.SND_SYN,)
        assert send_events(syn=True, ack=True, fin=False, rst=False) == (E.SND_SYNACK,)
        assert send_events(syn=False, ack=True, fin=True, rst=False) == (E.SND_FIN,)
        assert send_events(syn=False, ack=True, fin=True, rst=True) == (E.SND_RST,)
        assert send_events(syn=False, ack=True, fin=False, rst=False) == (E.SND_ACK,)

    def test_rst_is_checked_first(self):  # §3.10.7.4 first/second
        assert receive_events(True, True, True, True, True) == (E.RCV_RST,)

    def test_ack_before_fin(self):  # §3.10.7.4 fifth, then eighth
        assert receive_events(False, True, False, True, False) == (E.RCV_ACK_OF_SYN, E.RCV_FIN)

    def test_fin_that_acks_our_fin_is_one_event(self):
        assert receive_events(False, True, False, False, True) == (E.RCV_FIN_ACK,)

    def test_fin_without_ack_of_ours(self):
        assert receive_events(False, True, False, False, False) == (E.RCV_FIN,)

    def test_a_plain_ack_with_nothing_new_is_no_event(self):
        assert receive_events(False, False, False, False, False) == ()

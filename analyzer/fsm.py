"""The TCP endpoint state machine of RFC 9293, as data.

Theory
======

RFC 9293 §3.3.2 draws the life of one TCP endpoint as Figure 5: eleven
states, and arrows labelled "event / action". Every arrow is caused by one of
three things: something the local user does (OPEN, CLOSE), a segment arriving
("rcv SYN"), or a timer ("Timeout=2MSL"). A passive observer on the wire sees
none of the user calls. It sees segments, and a segment is two events at once:
it is *sent* by one endpoint and *received* by the other. So this module
models each endpoint as a machine driven by what it sends and what it
receives, and a connection holds two of them.

User calls leave traces on the wire, which is what makes this work: "CLOSE /
snd FIN" shows up as the FIN the endpoint sends, "active OPEN / snd SYN" as its
bare SYN. Receiving is read the way §3.10.7.4 processes an arriving segment,
in its fixed order: first the RST bit, then the SYN bit, then the ACK field,
then the FIN bit. One segment may therefore carry several events for its
receiver, applied in that order: a FIN+ACK that arrives in SYN-RECEIVED first
acknowledges our SYN (-> ESTABLISHED), then closes (-> CLOSE-WAIT).

The facts that decide a transition are *acknowledgement* facts, not packet
order: "does this segment acknowledge our FIN?" is what separates FIN-WAIT-1
-> CLOSING (the two FINs crossed) from FIN-WAIT-1 -> TIME-WAIT (the peer's FIN
also acknowledges ours: note 2 of Figure 5, §3.10.7.4 "eighth"). Those facts
are computed from sequence numbers, modulo 2**32, by the caller (see
`connection.py`), and arrive here as events such as `RCV_FIN_ACK`.

The transitions
===============

`TRANSITIONS` is Figure 5 written as a table, plus what its notes and §3.10.7
add:

* note 1: SYN-RECEIVED -> LISTEN on a RST only if SYN-RECEIVED was reached
  from LISTEN (a passive open); after a simultaneous open it is CLOSED
  ("connection refused", §3.10.7.4 "second").
* note 2: FIN-WAIT-1 -> TIME-WAIT on a FIN that also acknowledges our FIN.
* note 3: a RST may be sent from any state, and a RST received in any
  synchronized state ends the connection. The note allows the sender of a RST
  to go to TIME-WAIT; Linux and the BSDs delete the TCB at once
  (`tcp_send_active_reset` then `tcp_done`), and nothing on the wire can tell
  the two apart, so the sender of a RST goes to CLOSED here.
* a SYN that reaches a CLOSED endpoint (no listener) is answered by a RST and
  changes nothing (§3.10.7.1): that is how a refused connection looks.

Entries that map a state to itself are allowed events that change nothing
(sending data while ESTABLISHED, a SYN-ACK sent from SYN-RECEIVED). Anything
missing from the table is not allowed: `step` returns `None`, and the caller
records an anomaly instead of raising, since a passive observer sees loss,
reordering and captures that begin in the middle.

`step` is pure: no IO, no clock. Time reaches the machine only as the
`TIMEOUT_2MSL` event, which the caller raises from packet timestamps.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """The eleven states of RFC 9293 §3.3.2, named as netstat prints them."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RCVD = "SYN_RCVD"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"

    def __str__(self) -> str:
        return self.value


class Event(Enum):
    """What happened to one endpoint: a segment it sent or received, or a timer."""

    SND_SYN = "snd SYN"
    SND_SYNACK = "snd SYN,ACK"
    SND_ACK = "snd ACK"  # any segment without SYN, FIN or RST: data, ACK, probe
    SND_FIN = "snd FIN"
    SND_RST = "snd RST"
    RCV_SYN = "rcv SYN"
    RCV_SYNACK = "rcv SYN,ACK"  # a SYN whose ACK covers our SYN
    RCV_ACK_OF_SYN = "rcv ACK of SYN"
    RCV_FIN = "rcv FIN"
    RCV_FIN_ACK = "rcv FIN, ACK of FIN"  # a FIN that also acknowledges our FIN
    RCV_ACK_OF_FIN = "rcv ACK of FIN"
    RCV_RST = "rcv RST"
    TIMEOUT_2MSL = "Timeout=2MSL"

    def __str__(self) -> str:
        return self.value


S = State
E = Event

#: States in which the connection is synchronized (§3.5.2 "SYNCHRONIZED").
SYNCHRONIZED = frozenset({
    S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
    S.CLOSING, S.LAST_ACK, S.TIME_WAIT,
})

#: States in which this endpoint has sent its FIN.
FIN_SENT = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT})

_DRAWN: dict[tuple[State, Event], State] = {
    # Figure 5, arrow by arrow.
    (S.CLOSED, E.SND_SYN): S.SYN_SENT,          # active OPEN / snd SYN
    (S.LISTEN, E.SND_SYN): S.SYN_SENT,          # SEND / snd SYN
    (S.LISTEN, E.RCV_SYN): S.SYN_RCVD,          # rcv SYN / snd SYN,ACK
    (S.SYN_SENT, E.RCV_SYN): S.SYN_RCVD,        # rcv SYN / snd SYN,ACK (simultaneous open)
    (S.SYN_SENT, E.RCV_SYNACK): S.ESTABLISHED,  # rcv SYN,ACK / snd ACK
    (S.SYN_RCVD, E.RCV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RCVD, E.SND_FIN): S.FIN_WAIT_1,      # CLOSE / snd FIN
    (S.ESTABLISHED, E.SND_FIN): S.FIN_WAIT_1,   # CLOSE / snd FIN
    (S.ESTABLISHED, E.RCV_FIN): S.CLOSE_WAIT,   # rcv FIN / snd ACK
    (S.FIN_WAIT_1, E.RCV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RCV_FIN): S.CLOSING,       # rcv FIN / snd ACK (FINs crossed)
    (S.FIN_WAIT_2, E.RCV_FIN): S.TIME_WAIT,     # rcv FIN / snd ACK
    (S.CLOSE_WAIT, E.SND_FIN): S.LAST_ACK,      # CLOSE / snd FIN
    (S.CLOSING, E.RCV_ACK_OF_FIN): S.TIME_WAIT,
    (S.LAST_ACK, E.RCV_ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, E.TIMEOUT_2MSL): S.CLOSED,    # Timeout=2MSL / delete TCB
    # The notes under Figure 5 and §3.10.7.
    (S.FIN_WAIT_1, E.RCV_FIN_ACK): S.TIME_WAIT,  # note 2
    (S.SYN_RCVD, E.RCV_RST): S.LISTEN,           # note 1 (CLOSED after an active open)
    (S.SYN_SENT, E.RCV_RST): S.CLOSED,           # §3.10.7.3: "connection reset"
    (S.SYN_RCVD, E.RCV_SYNACK): S.ESTABLISHED,   # simultaneous open: its SYN,ACK acks ours
    (S.SYN_RCVD, E.RCV_FIN): S.CLOSE_WAIT,       # §3.10.7.4 "eighth"
    (S.CLOSED, E.RCV_SYN): S.CLOSED,             # §3.10.7.1: no listener, answered by RST
}

_RESETS: dict[tuple[State, Event], State] = {
    **{(state, E.SND_RST): S.CLOSED for state in State},  # note 3
    **{(state, E.RCV_RST): S.CLOSED for state in SYNCHRONIZED},  # note 3
}

_QUIET: dict[tuple[State, Event], State] = {
    # Allowed events that leave the state as it is.
    **{(state, E.SND_ACK): state for state in SYNCHRONIZED},
    # The first ACK of our SYN may come after we left SYN-RECEIVED with a FIN
    # (or took the peer's FIN): §3.10.7.4 "fifth" handles it as in ESTABLISHED.
    **{(state, E.RCV_ACK_OF_SYN): state for state in SYNCHRONIZED},
    (S.SYN_RCVD, E.SND_SYNACK): S.SYN_RCVD,
}

#: The whole table: (state, event) -> next state. Missing pairs are not allowed.
TRANSITIONS: dict[tuple[State, Event], State] = {**_QUIET, **_RESETS, **_DRAWN}


def step(state: State, event: Event, *, passive: bool = True) -> State | None:
    """Return the state after `event`, or None when the table does not allow it.

    `passive` tells whether the endpoint reached SYN-RECEIVED from LISTEN
    (note 1 of Figure 5); it matters only for a RST received in SYN-RECEIVED.
    """
    target = TRANSITIONS.get((state, event))
    if target is S.LISTEN and not passive:
        return S.CLOSED
    return target


def send_events(syn: bool, ack: bool, fin: bool, rst: bool) -> tuple[Event, ...]:
    """The events for the endpoint that sends a segment with these flags."""
    if rst:
        return (E.SND_RST,)
    events: list[Event] = []
    if syn:
        events.append(E.SND_SYNACK if ack else E.SND_SYN)
    if fin:
        events.append(E.SND_FIN)
    return tuple(events) or (E.SND_ACK,)


def receive_events(
    syn: bool, fin: bool, rst: bool, acks_our_syn: bool, acks_our_fin: bool,
) -> tuple[Event, ...]:
    """The events, in §3.10.7.4 order, for the endpoint that receives a segment.

    `acks_our_syn` / `acks_our_fin` must be true only the first time the
    receiver's SYN / FIN is acknowledged, so that later ACKs are quiet.
    """
    if rst:
        return (E.RCV_RST,)
    if syn:
        return (E.RCV_SYNACK,) if acks_our_syn else (E.RCV_SYN,)
    events: list[Event] = []
    if acks_our_syn:
        events.append(E.RCV_ACK_OF_SYN)
    if fin and acks_our_fin:
        events.append(E.RCV_FIN_ACK)
    else:
        if acks_our_fin:
            events.append(E.RCV_ACK_OF_FIN)
        if fin:
            events.append(E.RCV_FIN)
    return tuple(events)

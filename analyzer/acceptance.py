"""Which segments an endpoint acts on, as a passive observer can tell it from the capture.

RSTs that are not acceptable
============================

A RST acts only if the receiver accepts it (RFC 9293 §3.10.7.3 in SYN-SENT:
its ACK must acknowledge our SYN; §3.10.7.4 in the other states, tightened
by RFC 5961 §3 as Linux applies it in `tcp_validate_incoming` and
`tcp_timewait_state_process`: its sequence number must be exactly RCV.NXT,
or RCV.NXT - 1 after the peer's FIN; any other RST is dropped or answered by
a challenge ACK). The observer does not see RCV.NXT, but brackets it: no
lower than the highest ACK the receiver has sent (`ack_sent`, else the
sender's ISN + 1), no higher than what the sender has sent (`snd_nxt`, or
that ACK if the capture missed some of it). A RST outside the bracket, or a
RST in SYN-SENT that does not acknowledge the SYN, did nothing to the
receiver, and nothing says its sender sent it: it is what a blind reset
attack (RFC 5961) or an on-path injector looks like. So it is recorded as an
anomaly and otherwise ignored (connection.py, `_rst_ignored`): the sender's
machine does not move, `reset_by`/`reset_state` come from the connection's
real end, and the segment proves nothing about what the sender received. Without evidence
(no sequence number known for the sender, no SYN of the receiver's seen) a
RST is taken as sent.

The same bracket marks data for the ladder: a data segment wholly inside what
its sender had already sent is a retransmission (`note_kind`; only the
ladder shows it: it changes no state and no count).
"""

from __future__ import annotations

from analyzer.decode import ACK, FIN, SYN, Segment
from analyzer.endpoint import MOD, Endpoint, seq_ge, seq_gt
from analyzer.fsm import SYNCHRONIZED, State


def note_kind(seg: Segment, sender: Endpoint, kind: str, ignored: bool) -> str:
    """How the ladder marks a segment: its kind, "ignored" for a RST not acceptable, and "retransmission"
    also for data wholly inside what its sender had already sent (the ladder only: no count, no state)."""
    if ignored:
        return "ignored"
    if (not kind and seg.payload_len and not seg.flags & (SYN | FIN) and sender.snd_nxt is not None
            and seq_ge(sender.snd_nxt, (seg.seq + seg.payload_len) % MOD)):
        return "retransmission"
    return kind


#: States where the peer's FIN is in: RCV.NXT - 1 is acceptable for a RST too (Linux tcp_reset_check).
AFTER_PEER_FIN = frozenset({State.CLOSE_WAIT, State.LAST_ACK, State.CLOSING})


def rst_acceptable_to(receiver: Endpoint, sender: Endpoint, seg: Segment) -> bool:
    """Whether `receiver` would act on the RST `seg` from `sender` (module docstring); True wherever the
    capture holds no evidence against it."""
    state = receiver.state
    if state is State.SYN_SENT:
        return receiver.isn is None or (bool(seg.flags & ACK) and seg.ack == receiver.syn_end)
    if (state not in SYNCHRONIZED and state is not State.SYN_RCVD) or sender.snd_nxt is None:
        return True
    high = sender.snd_nxt
    if receiver.ack_sent is not None and seq_gt(receiver.ack_sent, high):
        high = receiver.ack_sent  # the capture missed some of what the sender sent
    if receiver.ack_sent is not None:
        low = receiver.ack_sent
    elif sender.isn is not None:
        low = sender.syn_end
    else:
        return True
    if state in AFTER_PEER_FIN:
        low = (low - 1) % MOD
    return seq_ge(seg.seq, low) and seq_ge(high, seg.seq)

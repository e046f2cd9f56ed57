"""A TCP connection as seen on the wire: two endpoint machines and the segments between them.

When is a segment received?
===========================

A capture shows when a segment passed the capture point, not when the far
end processed it. Mostly the difference does not matter; it matters exactly
when segments cross in flight (simultaneous open, simultaneous close, a
server closing in SYN-RECEIVED), and there the answer decides the state path.
So the receiving side follows evidence, not packet order:

1. A segment changes its *sender's* state at its own frame.
2. A segment carrying SYN or FIN waits, "unreceived", until the receiver
   proves it has it: the receiver sends a segment whose ACK field covers it,
   or the sender sends a later segment without SYN/FIN (segments from one
   sender arrive in order). A proof is not taken if the receiver's own
   segment could not have been sent after it (a SYN,ACK cannot come from
   ESTABLISHED): that is how crossing SYNs are told apart.
3. Every other segment (ACK, data, RST) is received at once.
4. The receiver's change is recorded at the frame of the segment it
   received, unless the receiver has sent anything since that frame (or
   already changed state at a later one); then at the frame of the proof,
   so every history runs forward in frame order. A SYN never answered is never received: an
   unanswered SYN leaves the far end's history empty.

Retransmitted SYNs and SYN,ACKs are counted and otherwise ignored; a
retransmitted FIN is counted and then read as the ACK it also carries. A
retransmission of a SYN or FIN still unreceived re-dates it: the earlier copy
went unanswered, so the receiver is taken to have got the later one.

What a passive observer infers
==============================

A capture point may miss what the endpoints did: the capture began at the
SYN,ACK, a multi-queue capture put the SYN,ACK before its SYN, or only one
direction passes the capture point (asymmetric routing). What the visible side
acknowledges is evidence of what the other side sent, and it is run through
the machines as an *inferred* segment, dated at the segment that is the
evidence and never counted as a packet (`_feed_inferred`):

* A SYN,ACK without its SYN: the client's ISN is the SYN,ACK's ack - 1
  (`_infer_client_isn`), so the client's ACK is checked as usual. If the SYN
  then shows up (captured after its SYN,ACK), it is counted and changes
  nothing (`_late_syn`): the SYN,ACK has already proved it arrived.
* Nothing of the other side seen (`_infer_unseen`): a client in SYN-SENT
  that acknowledges proves the server's SYN,ACK (ISN = ack - 1); a server in
  SYN-RECEIVED that goes on sending proves the client's ACK of it; and a
  bare segment whose ACK moves by exactly one, from a side that has sent (or
  is sending) its own FIN, proves the other side's FIN (`_infer_fin`; one
  byte of data is acknowledged alike, hence the FIN condition). `unseen`
  names the side whose segments were only inferred.

A FIN sent in SYN-SENT is not the FIN: RFC 9293 has no such FIN (a CLOSE in
SYN-SENT deletes the TCB, §3.10.4; a FIN is sent once the connection is
synchronized), and a peer in SYN-RECEIVED drops a segment without ACK
(§3.10.7.4, "fifth"). It is an anomaly, and the FIN sent again after the
SYN,ACK is the real one. A keep-alive is 0 or 1 byte at snd_nxt - 1, that byte not the sender's
FIN, after at least `KEEPALIVE_IDLE` of quiet from its sender: an ACK
reordered behind the FIN it preceded is not one.

Timing figures
==============

The handshake's three segments are noted as they pass (`_note_handshake`):
the client's bare SYN, the server's SYN,ACK, and the client's first ACK that
covers the server's SYN. A retransmitted SYN is ambiguous (Karn): the figure
takes the *last* SYN sent before the SYN,ACK, the copy the SYN,ACK most
plausibly answers (the one the server's SYN_RCVD is dated by, too), and the
last SYN,ACK before the ACK; `retransmits` says when that choice was made.
`finished_at` is the packet time the tracker finished the connection at: the
timer that ran out, the SYN that reused its 4-tuple, or the capture's last
segment (the flush). Time in each state and the final state's age run to it.

RSTs that are not acceptable
============================

A RST moves its receiver only if the receiver would accept it
(analyzer/acceptance.py: RFC 9293 §3.10.7 with RFC 5961 as Linux applies
it). Any other RST is recorded as an anomaly, a possible blind reset, and
otherwise ignored (`_rst_ignored`): the sender's machine does not move,
`reset_by`/`reset_state` come from the connection's real end, and the
segment proves nothing about what the sender received.

Anomalies
=========

What the state machine or the sequence numbers did not expect is an
anomaly, named by a sentence without numbers (its kind: "client received
ACK of SYN in SYN_SENT"). A one-sided or damaged flow can raise one per
packet, so only the first ANOMALY_EXAMPLES of each kind are kept with their
frame numbers (`anomalies`); `anomaly_counts` counts every one, by kind. The
kinds are the fixed sentences below (roles × events × states at most), so a
connection's anomalies take bounded memory whatever its length.

A third ACK that did not take (listen-queue overflow)
=====================================================

When a listener's accept queue is full, Linux drops the client's third ACK
(tcp_check_req, "listen overflow", with net.ipv4.tcp_abort_on_overflow=0),
keeps the request in SYN_RECV and resends its SYN-ACK; the client, already
ESTABLISHED, resends its data. A passive observer cannot know the ACK was
dropped when it passes: rule 3 (an ACK is received at once) takes the server
to ESTABLISHED there. The evidence comes later: a SYN-ACK resent by a server
that went ESTABLISHED through a client ACK and has sent nothing since, at
least the server's round trip (SYN to SYN-ACK, as measured at the capture
point) after that ACK; one sooner crossed the ACK in flight (the answer to a
duplicate SYN, as in `rst_injected`) and proves nothing. A
SYN-ACK is sent from SYN-RECEIVED only (the same fact that tells crossing
SYNs apart), so that history was wrong, and it is revised rather than kept
with a note (`_synack_resent`): the ESTABLISHED entry goes, the server is
back in SYN_RCVD, and an anomaly says why ("third ACK ignored (accept queue
full?)"). From then on a client ACK of the SYN does not establish it at
once, because the queue may still be full (the ACK just after a resent
SYN-ACK is often dropped too); the server is taken to be ESTABLISHED when it
proves it, by sending anything but a SYN-ACK, dated at the last client
segment acknowledging its SYN before that (the copy it most plausibly
answers: Karn's rule, as for SYNs); another resent SYN-ACK starts the wait
again. At the end of the capture, the last such client segment, if any,
establishes it; none leaves it in SYN_RCVD (`_overflow_established`).

Port reuse out of TIME_WAIT
===========================

A new SYN on the 4-tuple of a connection with an end in TIME_WAIT ends that
TIME_WAIT early: the kernel accepts the SYN only by deleting the old
connection (RFC 6191, RFC 9293 §3.10.7.4's note on TIME-WAIT; Linux
`tcp_timewait_state_process` returns TCP_TW_SYN and the timewait socket is
descheduled; likewise, with tcp_tw_reuse, for the end that sends the SYN).
So `finish` takes the reusing SYN (`reused_by`) and moves every end still in
TIME_WAIT to CLOSED at that SYN's time and frame (`_leave_time_wait`), after
the pending segments are delivered. No Figure 5 event: this is evidence of
what the kernel did, not a table transition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from analyzer.acceptance import note_kind, rst_acceptable_to
from analyzer.decode import ACK, FIN, RST, SYN, Segment
from analyzer.endpoint import MOD, Endpoint, Transition, seq_ge, seq_gt
from analyzer.fsm import SYNCHRONIZED, Event, State, receive_events, send_events, step
from analyzer.labels import label

CLIENT, SERVER = "client", "server"
#: a keep-alive follows at least this much quiet from its sender: Linux probes 1 s or more after
#: the last segment it received, and its ACK of that segment may have left up to 200 ms later
KEEPALIVE_IDLE = 0.5
GONE = frozenset({State.CLOSED, State.LISTEN})
#: Anomalies listed per kind, with their frames; the rest are only counted (module docstring, "Anomalies").
ANOMALY_EXAMPLES = 5
#: States that a RST cuts short: leaving one of them through a RST is an abort.
ABORTABLE = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2,
                       State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK})


@dataclass(slots=True)
class Anomaly:
    """Something the state machine or the sequence numbers did not expect."""

    frame: int
    what: str


@dataclass(slots=True)
class SegmentNote:
    """One segment as the ladder diagram draws it."""

    frame: int
    ts: float
    from_client: bool
    flags: int
    seq: int
    ack: int
    payload_len: int
    kind: str  # "", "retransmission", "keepalive" or "ignored" (a RST not acceptable to its receiver)


@dataclass(slots=True)
class Timeouts:
    """Packet-time limits, in seconds."""

    msl: float = 30.0
    idle: float = 900.0
    handshake: float = 40.0
    close_linger: float = 5.0

    def __post_init__(self) -> None:
        """Each limit a finite number of seconds, 0 or more (a negative MSL would end TIME_WAIT before it began)."""
        for name in ("msl", "idle", "handshake", "close_linger"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more, not {value!r}")

    def limits(self) -> tuple[float, float, float, float]:
        """The four, in the order the compiled engine takes them (module.c's run: msl, idle, handshake, linger)."""
        return (self.msl, self.idle, self.handshake, self.close_linger)


class Connection:
    """Everything known about one connection; fed one segment at a time."""

    __slots__ = (
        "__weakref__", "aborted", "ack_hi", "anomalies", "anomaly_counts", "awaited", "awaiting", "bare_syns",
        "client", "end", "fin_hint", "fin_order", "finished_at", "first_frame", "half_close", "hs_ack_ts", "hs_syn_ts",
        "hs_synack_ts", "id", "ip_version", "isn_inferred", "keepalives", "labels", "last_frame", "last_ts", "notes",
        "reset", "retransmits", "roles_inferred", "scheduled", "second_fin_acks_first", "server", "start",
        "syn_data", "synack_seen", "timeouts", "tunnel", "unseen", "vlan", "vni",
    )

    def __init__(self, conn_id: int, first: Segment, timeouts: Timeouts,
                 keep_segments: bool = False) -> None:
        self.id = conn_id
        self.ip_version = first.ip_version
        self.timeouts = timeouts
        self.vlan, self.vni = first.vlan, first.vni  # part of the key (tracker.py)
        self.tunnel = first.tunnel  # as the first segment came: its encapsulations, outermost first
        client_is_src, self.roles_inferred = _client_is_source(first)
        src, dst = (first.src, first.sport), (first.dst, first.dport)
        (c_addr, c_port), (s_addr, s_port) = (src, dst) if client_is_src else (dst, src)
        self.client, self.server = Endpoint(c_addr, c_port), Endpoint(s_addr, s_port)
        self.first_frame = self.last_frame = first.frame
        self.start = self.end = self.last_ts = first.ts
        self.retransmits = {"syn": 0, "synack": 0, "fin": 0}
        self.keepalives = 0
        self.syn_data = False
        self.bare_syns: set[str] = set()
        self.synack_seen = False
        self.fin_order: list[str] = []
        self.reset: tuple[str, State] | None = None  # first RST: who sent it, in which state
        self.aborted = False  # a RST ended an established or closing connection
        self.second_fin_acks_first = False  # the three-way close: FIN, FIN+ACK, ACK
        self.half_close = False
        self.awaiting: Endpoint | None = None  # a server whose third ACK did not take (module docstring)
        self.awaited: Segment | None = None  # the last client segment since acknowledging its SYN
        self.anomalies: list[Anomaly] = []  # the first ANOMALY_EXAMPLES of each kind (module docstring)
        self.anomaly_counts: dict[str, int] = {}  # every anomaly, by kind (its text), in order of first sight
        self.notes: list[SegmentNote] | None = [] if keep_segments else None
        self.scheduled = float("inf")
        self.labels: dict[str, object] = {}
        # the handshake's SYN, SYN,ACK and ACK times (module docstring, "Timing figures")
        self.hs_syn_ts: float | None = None
        self.hs_synack_ts: float | None = None
        self.hs_ack_ts: float | None = None
        self.finished_at = first.ts
        # the observer's inferences (module docstring, "What a passive observer infers")
        self.unseen: str | None = None  # the side whose segments were only inferred, never seen
        self.isn_inferred = False  # the client's ISN was read off the SYN,ACK (its SYN not seen yet)
        self.ack_hi: int | None = None  # the highest ACK the visible side sent to an unseen peer
        self.fin_hint: Segment | None = None  # its bare segment whose ACK moved by exactly one
        self._begin(first)

    # -- set-up ---------------------------------------------------------

    def _begin(self, first: Segment) -> None:
        """Place both machines where the first segment says the connection is."""
        if first.flags & SYN and not first.flags & ACK:
            return  # a proper start: both CLOSED, the SYN does the rest
        if first.flags & SYN:  # the SYN,ACK without its SYN
            self._note_anomaly(first.frame, "capture starts after the SYN")
            self.client.state = State.SYN_SENT
            self.server.state, self.server.passive = State.SYN_RCVD, True
            self._infer_client_isn(first)
        else:
            self.client.state = self.server.state = State.ESTABLISHED
            self.client.syn_acked = self.server.syn_acked = True
        for side in (self.client, self.server):
            side.history.append(Transition(side.state, first.ts, first.frame))

    def _infer_client_isn(self, synack: Segment) -> None:
        """A SYN,ACK without its SYN: the SYN it acknowledges was the client's ISN = ack - 1."""
        self.client.isn, self.client.syn_end = (synack.ack - 1) % MOD, synack.ack
        self.isn_inferred = True

    # -- the segment path -----------------------------------------------

    def sides(self, seg: Segment) -> tuple[Endpoint, Endpoint, str]:
        if seg.sport == self.client.port and seg.src == self.client.addr:
            return self.client, self.server, CLIENT
        return self.server, self.client, SERVER

    def add(self, seg: Segment) -> None:
        """Take one segment of this connection, in capture order."""
        self.advance(seg.ts)
        sender, receiver, role = self.sides(seg)
        self._touch(seg, sender)
        if self._late_syn(seg, sender, role):
            if self.notes is not None:
                self.notes.append(SegmentNote(seg.frame, seg.ts, role == CLIENT, seg.flags, seg.seq,
                                              seg.ack, seg.payload_len, ""))
            return
        self._infer_unseen(sender, receiver, role, seg)
        kind, flags = self._classify(seg, sender, role)
        ignored = bool(flags & RST) and self._rst_ignored(sender, receiver, seg)
        if self.hs_ack_ts is None:
            self._note_handshake(seg, flags, role)
        if kind != "keepalive" and not ignored:
            sender.payload_bytes += seg.payload_len
        if self.notes is not None:
            self.notes.append(SegmentNote(seg.frame, seg.ts, role == CLIENT, seg.flags, seg.seq,
                                          seg.ack, seg.payload_len,
                                          note_kind(seg, sender, "" if kind == "early-fin" else kind, ignored)))
        if ignored:
            return
        if kind == "retransmission":
            self._redate_unreceived(sender, seg)
            if seg.flags & SYN:
                if seg.flags & ACK:
                    self._synack_resent(sender, role, seg)
                return
        if kind == "early-fin":
            return
        if self.awaiting is sender:  # it proves it is synchronized; a RST (from SYN_RCVD) proves nothing
            if flags & RST:
                self.awaiting = self.awaited = None
            else:
                self._overflow_established(sender)
        if flags != seg.flags:
            seg = replace(seg, flags=flags)
        self._carry(sender, receiver, role, seg, kind)

    def _carry(self, sender: Endpoint, receiver: Endpoint, role: str, seg: Segment, kind: str) -> None:
        """Step the sender, deliver what the segment proves and what it carries (flags as classified)."""
        flags = seg.flags
        if flags & ACK:
            self._take_proven(sender, receiver, seg)
        self._send(sender, role, seg)
        self._track_half_close(sender, receiver, seg, kind)
        sender.note_sent(seg)
        sender.unreceived.append(seg)
        if not flags & (SYN | FIN):
            self._deliver_all(sender, receiver, seg)

    def _note_handshake(self, seg: Segment, flags: int, role: str) -> None:
        """Note the times of the handshake's SYN (the last copy), SYN,ACK (the last) and ACK."""
        if flags & RST:
            return
        if flags & SYN:
            if not flags & ACK:
                if role == CLIENT and self.hs_synack_ts is None:
                    self.hs_syn_ts = seg.ts
            elif role == SERVER and self.hs_syn_ts is not None:
                self.hs_synack_ts = seg.ts
        elif (flags & ACK and role == CLIENT and self.hs_synack_ts is not None
              and seq_ge(seg.ack, self.server.syn_end)):
            self.hs_ack_ts = seg.ts

    def _rst_ignored(self, sender: Endpoint, receiver: Endpoint, seg: Segment) -> bool:
        """Whether the receiver would not accept this RST; if so, note it (module docstring: a possible
        blind reset), and the segment is ignored."""
        if rst_acceptable_to(receiver, sender, seg):
            return False
        role = CLIENT if receiver is self.client else SERVER
        self._note_anomaly(seg.frame, f"RST to the {role} in {receiver.state} is not acceptable: "
                                      "ignored (a possible blind reset, RFC 5961)")
        return True

    def _synack_resent(self, sender: Endpoint, role: str, seg: Segment) -> None:
        """A resent SYN-ACK: if a client ACK had established its (passive) sender, and it has sent nothing
        since, that ACK did not take: back to SYN_RCVD, to wait for proof (module docstring)."""
        if self.awaiting is sender:
            self.awaited = None  # what came before this SYN-ACK did not take either
            return
        history = sender.history
        if not (sender.passive and sender.state is State.ESTABLISHED and len(history) >= 2
                and history[-2].state is State.SYN_RCVD and history[-1].frame is not None
                and sender.last_sent_frame < history[-1].frame
                and self.hs_syn_ts is not None and self.hs_synack_ts is not None
                and seg.ts - history[-1].ts >= self.hs_synack_ts - self.hs_syn_ts):
            return
        history.pop()
        sender.state = State.SYN_RCVD  # syn_acked stays: later ACKs of the SYN change nothing until proof
        self.awaiting, self.awaited = sender, None
        self._note_anomaly(seg.frame, f"{role} resent its SYN-ACK after the ACK of it: third ACK ignored "
                                      "(accept queue full?)")

    def _overflow_established(self, server: Endpoint) -> None:
        """The waiting server proves it is synchronized (or the capture ends): ESTABLISHED at the last client
        segment that acknowledged its SYN since its last resent SYN-ACK, if there was one."""
        if self.awaited is not None:
            server.apply(Event.RCV_ACK_OF_SYN, self.awaited.ts, self.awaited.frame)
        self.awaiting = self.awaited = None

    @staticmethod
    def _redate_unreceived(sender: Endpoint, copy: Segment) -> None:
        """A retransmitted SYN/FIN: the copy still unanswered was lost, the receiver got this one."""
        for index, pending in enumerate(sender.unreceived):
            if pending.seq == copy.seq and pending.flags & (SYN | FIN) == copy.flags & (SYN | FIN):
                sender.unreceived[index] = replace(pending, frame=copy.frame, ts=copy.ts)
                return

    def _touch(self, seg: Segment, sender: Endpoint) -> None:
        sender.packets += 1
        self.last_frame = seg.frame
        self.end = seg.ts
        self.last_ts = max(self.last_ts, seg.ts)

    def _classify(self, seg: Segment, sender: Endpoint, role: str) -> tuple[str, int]:
        """Count retransmissions, keep-alives and SYN facts; return (kind, flags to use)."""
        flags = seg.flags
        if flags & RST:
            return "", flags
        if flags & SYN:
            if sender.isn is not None and seg.seq != sender.isn:
                self._note_anomaly(seg.frame, f"{role} sent a SYN with a second ISN")
                return "", flags & ~SYN
            first_of_kind = sender.isn is None or (flags & ACK and not sender.sent_synack)
            if not first_of_kind:
                self.retransmits["synack" if flags & ACK else "syn"] += 1
                return "retransmission", flags
            if sender.isn is None:
                sender.isn, sender.syn_end = seg.seq, (seg.seq + 1 + seg.payload_len) % MOD
                sender.options = dict(seg.options or {})
            self.syn_data |= seg.payload_len > 0
            if flags & ACK:
                sender.sent_synack = self.synack_seen = True
            else:
                self.bare_syns.add(role)
        if flags & FIN and not flags & SYN and self._early_fin(seg, sender):
            self._forbidden(seg.frame, role, Event.SND_FIN, sender.state)
            return "early-fin", flags
        if flags & FIN:
            fin_seq = (seg.seq + seg.payload_len + (1 if flags & SYN else 0)) % MOD
            if sender.fin_seq is None:
                sender.fin_seq = fin_seq
                self.fin_order.append(role)
                peer = self.server if sender is self.client else self.client
                self.second_fin_acks_first = bool(
                    peer.fin_seq is not None and not peer.fin_acked and flags & ACK
                    and seq_ge(seg.ack, (peer.fin_seq + 1) % MOD))
            else:
                if fin_seq == sender.fin_seq:
                    self.retransmits["fin"] += 1
                else:
                    self._note_anomaly(seg.frame, f"{role} sent a second FIN elsewhere")
                return "retransmission", flags & ~FIN
        elif not flags & SYN and self._is_keepalive(seg, sender):
            self.keepalives += 1
            return "keepalive", flags
        return "", flags

    def _early_fin(self, seg: Segment, sender: Endpoint) -> bool:
        """A FIN sent in SYN-SENT, its own ACK not covering the peer's SYN: not the FIN (RFC 9293 sends
        none from SYN-SENT, §3.10.4, and SYN-RECEIVED drops it without ACK); the one sent later is."""
        if sender.state is not State.SYN_SENT:
            return False
        peer = self.server if sender is self.client else self.client
        return not (seg.flags & ACK and peer.isn is not None and seq_ge(seg.ack, peer.syn_end))

    @staticmethod
    def _is_keepalive(seg: Segment, sender: Endpoint) -> bool:
        """A probe: 0 or 1 byte at snd_nxt - 1 (Wireshark's tcp.analysis.keep_alive), that byte not
        the sender's FIN (an ACK reordered after the FIN sits there too), after KEEPALIVE_IDLE quiet."""
        return (seg.payload_len <= 1 and sender.snd_nxt is not None and sender.state in SYNCHRONIZED
                and seg.seq == (sender.snd_nxt - 1) % MOD and seg.seq != sender.fin_seq
                and seg.ts - sender.last_sent_ts >= KEEPALIVE_IDLE)

    def _send(self, sender: Endpoint, role: str, seg: Segment) -> None:
        before = sender.state
        for event in _sent(seg):
            if not sender.apply(event, seg.ts, seg.frame):
                self._forbidden(seg.frame, role, event, sender.state)
        if seg.flags & RST:
            self.aborted |= before in ABORTABLE
            if self.reset is None:
                self.reset = (role, before)

    def _note_anomaly(self, frame: int, what: str) -> None:
        """Count an anomaly of kind `what`; list it with its frame if it is among the first few of its kind."""
        count = self.anomaly_counts.get(what, 0) + 1
        self.anomaly_counts[what] = count
        if count <= ANOMALY_EXAMPLES:
            self.anomalies.append(Anomaly(frame, what))

    def _drop_anomaly(self, what: str) -> None:
        """Take back every anomaly of kind `what`: later evidence showed it was none."""
        if self.anomaly_counts.pop(what, 0):
            self.anomalies = [a for a in self.anomalies if a.what != what]

    def _forbidden(self, frame: int, role: str, event: Event, state: State) -> None:
        verb = "sent" if event.name.startswith("SND") else "received"
        what = str(event).split(" ", 1)[1]
        self._note_anomaly(frame, f"{role} {verb} {what} in {state}")

    # -- what a passive observer infers (module docstring) ----------------

    def _late_syn(self, seg: Segment, sender: Endpoint, role: str) -> bool:
        """The client's SYN captured after the SYN,ACK that answers it: note it, change nothing.

        The SYN,ACK already put both ends where the SYN takes them (`_begin`), and proved that
        the server got the SYN, so the SYN is only counted (`open` becomes `handshake`).
        """
        if not (self.isn_inferred and role == CLIENT and seg.flags & (SYN | ACK | RST) == SYN
                and seg.seq == sender.isn and CLIENT not in self.bare_syns):
            return False
        self.bare_syns.add(CLIENT)
        sender.options = dict(seg.options or {})
        self.syn_data |= seg.payload_len > 0
        sender.payload_bytes += seg.payload_len
        self._drop_anomaly("capture starts after the SYN")
        self._note_anomaly(seg.frame, "SYN captured after its SYN,ACK")
        return True

    def _infer_unseen(self, sender: Endpoint, peer: Endpoint, role: str, seg: Segment) -> None:
        """Nothing of `peer` was seen: what `seg` acknowledges is evidence of what `peer` sent."""
        if peer.packets or seg.flags & (SYN | RST) or not seg.flags & ACK:
            return
        peer_role = SERVER if role == CLIENT else CLIENT
        if sender.state is State.SYN_SENT and peer.isn is None:
            # the client acknowledges a SYN: the server's SYN,ACK
            self._feed_inferred(sender, peer, peer_role, seg, SYN | ACK, (seg.ack - 1) % MOD, sender.syn_end)
        elif sender.state is State.SYN_RCVD and peer.state is State.SYN_SENT:
            # the server sends as one past SYN-RECEIVED: the client's ACK of its SYN,ACK
            self._feed_inferred(sender, peer, peer_role, seg, ACK, seg.ack, sender.syn_end)
        self._infer_fin(sender, peer, peer_role, seg)

    def _infer_fin(self, sender: Endpoint, peer: Endpoint, peer_role: str, seg: Segment) -> None:
        """The peer's FIN: a bare segment of `sender` moved its ACK by exactly one, and `sender`
        has sent its own FIN by now (one byte of data is acknowledged the same way; a FIN is
        what an endpoint that is closing acknowledges last)."""
        previous = self.ack_hi
        if previous is None or seq_gt(seg.ack, previous):
            self.ack_hi = seg.ack
            moved_one = previous is not None and seg.ack == (previous + 1) % MOD and seg.payload_len == 0
            self.fin_hint = seg if moved_one else None
        hint = self.fin_hint
        if (hint is None or peer.fin_seq is not None or peer.state not in SYNCHRONIZED
                or not (sender.fin_seq is not None or seg.flags & FIN)):
            return
        fin_seq, acked = (hint.ack - 1) % MOD, hint.seq
        if sender.fin_seq is not None and not sender.fin_acked and seq_gt(acked, sender.fin_seq):
            self._feed_inferred(sender, peer, peer_role, hint, ACK, fin_seq, acked)
        self._feed_inferred(sender, peer, peer_role, hint, FIN | ACK, fin_seq, acked)
        if hint is not seg:  # the hint, sent earlier, proves the FIN and acknowledged it
            self._take_proven(sender, peer, hint)
            self._receive(peer, hint, None, hint)

    def _feed_inferred(self, sender: Endpoint, peer: Endpoint, peer_role: str, evidence: Segment,
                       flags: int, seq: int, ack: int) -> None:
        """Run a segment `peer` must have sent, dated at the `evidence` for it, as if captured.

        Not counted (packets, bytes, handshake times, the ladder): only the machines move.
        """
        inferred = replace(evidence, src=evidence.dst, dst=evidence.src, sport=evidence.dport,
                           dport=evidence.sport, seq=seq, ack=ack, flags=flags, payload_len=0, options=None)
        kind, flags = self._classify(inferred, peer, peer_role) if flags & (SYN | FIN) else ("", flags)
        self._carry(peer, sender, peer_role, replace(inferred, flags=flags), kind)
        self.unseen = peer_role

    # -- delivery (see the module docstring) -----------------------------

    def _take_proven(self, sender: Endpoint, peer: Endpoint, seg: Segment) -> None:
        """Deliver to `sender` what the ACK field of its segment `seg` proves it received."""
        while peer.unreceived:
            pending = peer.unreceived[0]
            needed = pending.seq + (pending.seq_len if pending.flags & FIN else 1)
            if not seq_ge(seg.ack, needed % MOD) or not self._could_then_send(sender, pending, seg):
                return
            peer.unreceived.pop(0)
            self._receive(sender, pending, seg, seg)

    def _deliver_all(self, sender: Endpoint, receiver: Endpoint, seg: Segment) -> None:
        """`seg` carries no SYN/FIN: it and everything sent before it reach the receiver now."""
        while sender.unreceived:
            self._receive(receiver, sender.unreceived.pop(0), None, seg)

    def _could_then_send(self, ep: Endpoint, pending: Segment, answer: Segment) -> bool:
        state, events = self._plan(ep, pending, answer)
        for event in events:
            state = step(state, event, passive=ep.passive or state is State.LISTEN) or state
        return all(step(state, event) is not None for event in _sent(answer))

    def _plan(self, ep: Endpoint, seg: Segment, answer: Segment | None) -> tuple[State, tuple[Event, ...]]:
        """The state `ep` starts from and the events it goes through on receiving `seg`."""
        start = ep.state
        if (seg.flags & SYN and start is State.CLOSED and ep.last_sent_frame == 0
                and not (answer is not None and answer.flags & RST)):
            start = State.LISTEN  # it answered with something other than RST: a listener
        if seg.flags & RST and not self._rst_acceptable(ep, seg):
            return start, ()
        acks_syn, acks_fin = ep.acknowledged_by(seg.ack) if seg.flags & ACK else (False, False)
        return start, receive_events(bool(seg.flags & SYN), bool(seg.flags & FIN),
                                     bool(seg.flags & RST), acks_syn, acks_fin)

    @staticmethod
    def _rst_acceptable(ep: Endpoint, seg: Segment) -> bool:
        if ep.state is State.SYN_SENT:  # §3.10.7.3: only if it acknowledges our SYN
            return bool(seg.flags & ACK) and seg.ack == ep.syn_end
        return True

    def _receive(self, ep: Endpoint, seg: Segment, answer: Segment | None, proof: Segment) -> None:
        role = CLIENT if ep is self.client else SERVER
        if self.awaiting is ep and seg.flags & ACK and seq_ge(seg.ack, ep.syn_end):
            self.awaited = seg
        start, events = self._plan(ep, seg, answer)
        if seg.flags & RST and not events:
            self._note_anomaly(seg.frame, f"RST not acceptable to the {role} in {ep.state}")
            return
        ep.state = start
        if seg.flags & ACK:
            acks_syn, acks_fin = ep.acknowledged_by(seg.ack)
            ep.syn_acked |= acks_syn
            ep.fin_acked |= acks_fin
        last = ep.history[-1].frame if ep.history and ep.history[-1].frame is not None else 0
        in_order = seg.frame > ep.last_sent_frame and seg.frame >= last
        frame, ts = (seg.frame, seg.ts) if in_order else (proof.frame, proof.ts)
        self.aborted |= bool(seg.flags & RST) and ep.state in ABORTABLE
        for event in events:
            if not ep.apply(event, ts, frame):
                self._forbidden(seg.frame, role, event, ep.state)
        if ep.state is State.TIME_WAIT and ep.time_wait_until is None:
            ep.time_wait_until = ts + 2 * self.timeouts.msl

    def _track_half_close(self, sender: Endpoint, receiver: Endpoint, seg: Segment, kind: str) -> None:
        """Data sent after the peer's FIN, and then acknowledged by the FIN side."""
        if seg.payload_len and kind == "" and receiver.fin_seq is not None:
            end = (seg.seq + seg.payload_len) % MOD
            if sender.snd_nxt is None or not seq_ge(sender.snd_nxt, end):
                sender.data_after_peer_fin = end
        if (seg.flags & ACK and sender.fin_seq is not None and receiver.data_after_peer_fin is not None
                and seq_ge(seg.ack, receiver.data_after_peer_fin)):
            self.half_close = True

    # -- time and the end -----------------------------------------------

    def advance(self, now: float) -> None:
        """Fire the 2·MSL timers that packet time `now` has passed."""
        for ep in (self.client, self.server):
            until = ep.time_wait_until
            if until is not None and ep.state is State.TIME_WAIT and now >= until:
                ep.apply(Event.TIMEOUT_2MSL, until, None)

    def wake_time(self) -> float:
        """The packet time at which this connection should be looked at again."""
        timers = [ep.time_wait_until for ep in (self.client, self.server)
                  if ep.time_wait_until is not None and ep.state is State.TIME_WAIT]
        if self.client.state in GONE and self.server.state in GONE:
            limit = self.timeouts.close_linger
        elif self.synchronized():
            limit = self.timeouts.idle
        else:
            limit = self.timeouts.handshake
        return min([self.last_ts + limit, *timers])

    def synchronized(self) -> bool:
        """Both SYNs acknowledged (or the capture began after they were)."""
        return self.client.syn_acked and self.server.syn_acked

    def starts_anew(self, seg: Segment) -> bool:
        """Whether a bare SYN on this 4-tuple opens a new connection (port reuse)."""
        if not seg.flags & SYN or seg.flags & (ACK | RST):
            return False
        sender, _, role = self.sides(seg)
        if sender.isn is not None:
            return seg.seq != sender.isn
        # The other end's first SYN while ours waits for an answer: a simultaneous open.
        crossing = role == SERVER and self.client.state is State.SYN_SENT and self.server.last_sent_frame == 0
        return not crossing

    def finish(self, at: float | None = None, reused_by: Segment | None = None) -> None:
        """End of the road: hand over what is still unreceived (never a SYN), then label.

        `at` is the packet time it ends at (the tracker's: a timer, a reused
        4-tuple, the capture's end); the last segment's time if not given.
        `reused_by`: the new SYN that reuses the 4-tuple, if that is what ends it.
        """
        self.finished_at = self.last_ts if at is None else at
        self.advance(self.last_ts)
        for sender, receiver in ((self.client, self.server), (self.server, self.client)):
            while sender.unreceived:
                seg = sender.unreceived.pop(0)
                if not seg.flags & SYN:
                    self._receive(receiver, seg, None, self._last_frame_proof(seg))
        if self.awaiting is not None:
            self._overflow_established(self.awaiting)
        if reused_by is not None:
            self._leave_time_wait(reused_by)
        self.labels = label(self)

    def _leave_time_wait(self, syn: Segment) -> None:
        """A new SYN on this 4-tuple: an end still in TIME_WAIT is CLOSED from it (module docstring)."""
        for ep in (self.client, self.server):
            if ep.state is State.TIME_WAIT:
                ep.state = State.CLOSED
                ep.history.append(Transition(State.CLOSED, syn.ts, syn.frame))

    def _last_frame_proof(self, seg: Segment) -> Segment:
        return replace(seg, frame=self.last_frame, ts=self.end)


def _sent(seg: Segment) -> tuple[Event, ...]:
    """The events of sending `seg`, for its sender."""
    flags = seg.flags
    return send_events(bool(flags & SYN), bool(flags & ACK), bool(flags & FIN), bool(flags & RST))


def _client_is_source(first: Segment) -> tuple[bool, bool]:
    """Who is the client: (the first segment's sender is, roles were guessed from ports)."""
    if first.flags & SYN:
        return not first.flags & ACK, False
    src, dst = first.sport, first.dport
    if src == dst:
        return True, True
    if (src >= 32768) != (dst >= 32768):
        return src >= 32768, True
    if (src < 1024) != (dst < 1024):
        return dst < 1024, True
    return src > dst, True

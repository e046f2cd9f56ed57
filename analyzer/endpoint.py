"""One side of a connection: its state machine, its sequence space, its counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzer.decode import ACK, Segment
from analyzer.fsm import Event, State, step

MOD = 1 << 32
HALF = 1 << 31


def seq_ge(a: int, b: int) -> bool:
    """a >= b in sequence-number arithmetic (RFC 9293 §3.4: modulo 2**32)."""
    return (a - b) % MOD < HALF


def seq_gt(a: int, b: int) -> bool:
    return a != b and seq_ge(a, b)


@dataclass(slots=True)
class Transition:
    """An endpoint entered `state` at time `ts`, evidenced by `frame` (None: a timer)."""

    state: State
    ts: float
    frame: int | None


@dataclass(slots=True)
class Endpoint:
    """An endpoint's machine, what it has sent, and what the peer has acknowledged."""

    addr: bytes
    port: int
    state: State = State.CLOSED
    passive: bool = False  # reached SYN_RCVD from LISTEN (note 1 of Figure 5)
    history: list[Transition] = field(default_factory=list)
    isn: int | None = None  # sequence number of its SYN
    sent_synack: bool = False
    syn_end: int = 0  # first sequence number after its SYN (and any SYN data)
    fin_seq: int | None = None  # sequence number its FIN occupies
    snd_nxt: int | None = None  # highest sequence number sent, plus one
    ack_sent: int | None = None  # highest ACK field sent: its rcv.nxt was at least this
    syn_acked: bool = False
    fin_acked: bool = False
    last_sent_frame: int = 0
    time_wait_until: float | None = None
    packets: int = 0
    payload_bytes: int = 0
    options: dict[str, int | bool] = field(default_factory=dict)
    unreceived: list[Segment] = field(default_factory=list)  # sent, not yet known received (a few)
    data_after_peer_fin: int | None = None  # end of new data sent after the peer's FIN
    last_sent_ts: float = float("-inf")  # when it last sent (a keep-alive follows quiet)

    def apply(self, event: Event, ts: float, frame: int | None) -> bool:
        """Step the machine; record a change of state. False if the table forbids it."""
        target = step(self.state, event, passive=self.passive)
        if target is None:
            return False
        if event is Event.RCV_SYN and self.state is State.LISTEN:
            self.passive = True
        if target is not self.state:
            self.state = target
            self.history.append(Transition(target, ts, frame))
        return True

    def note_sent(self, segment: Segment) -> None:
        """Advance snd_nxt past what `segment` occupies, and ack_sent to its ACK field."""
        end = (segment.seq + segment.seq_len) % MOD
        if self.snd_nxt is None or seq_gt(end, self.snd_nxt):
            self.snd_nxt = end
        if segment.flags & ACK and (self.ack_sent is None or seq_gt(segment.ack, self.ack_sent)):
            self.ack_sent = segment.ack
        self.last_sent_frame = segment.frame
        self.last_sent_ts = segment.ts

    def acknowledged_by(self, ack: int) -> tuple[bool, bool]:
        """Whether `ack` newly acknowledges this endpoint's SYN, and its FIN."""
        syn = self.isn is not None and not self.syn_acked and seq_ge(ack, self.syn_end)
        fin = self.fin_seq is not None and not self.fin_acked and seq_gt(ack, self.fin_seq)
        return syn, fin

"""How a finished connection opened and closed, in the project's fixed vocabulary.

Labels are read off the finished record (the two state histories and the
facts `Connection` noted on the way); nothing here looks at packets again.

open
    ``handshake``          SYN, SYN-ACK, ACK: both SYNs acknowledged.
    ``simultaneous-open``  both ends sent a bare SYN (RFC 9293 §3.5, Figure 8).
    ``refused``            the SYN was answered by a RST (no listener).
    ``unanswered``         no reply to the SYN(s).
    ``incomplete``         a SYN-ACK came, but the client never completed.
    ``partial``            no bare SYN in the capture: it began mid-connection (or at the SYN-ACK).
                           A capture of the server's side only (``unseen`` "client") that shows
                           the SYN-ACK and the handshake completing is a ``handshake``.
close
    ``simultaneous``  both ends went through CLOSING: the FINs crossed.
    ``reset``         a RST ended an established or closing connection.
    ``three-way``     the second FIN also carried the first ACK of the first FIN.
    ``four-way``      FIN, a separate ACK, FIN, ACK.
    ``half-closed``   only one side's FIN by the end: the other sits in CLOSE_WAIT.
    ``open``          established, and no FIN or RST by the end.
    ``none``          never established.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analyzer.fsm import State

if TYPE_CHECKING:
    from analyzer.connection import Connection

OPEN_LABELS = ("handshake", "simultaneous-open", "refused", "unanswered", "incomplete", "partial")
CLOSE_LABELS = ("four-way", "three-way", "simultaneous", "reset", "half-closed", "open", "none")


def label(conn: Connection) -> dict[str, object]:
    """The labels of a finished connection, keyed as in the JSON output."""
    simultaneous = all(_went_through(ep.history, State.CLOSING) for ep in (conn.client, conn.server))
    reset_by, reset_state = conn.reset if conn.reset else (None, None)
    return {
        "open": open_label(conn),
        "close": close_label(conn, simultaneous),
        "half_close": conn.half_close,
        "active_closer": "both" if simultaneous else (conn.fin_order[0] if conn.fin_order else None),
        "reset_by": reset_by,
        "reset_state": str(reset_state) if reset_state else None,
    }


def open_label(conn: Connection) -> str:
    if not conn.bare_syns:  # a capture of the server's side only saw the handshake from there
        seen_from_server = conn.unseen == "client" and conn.synack_seen and conn.synchronized()
        return "handshake" if seen_from_server else "partial"
    if len(conn.bare_syns) == 2:
        return "simultaneous-open"
    if conn.synchronized():
        return "handshake"
    if conn.synack_seen:
        return "incomplete"
    if conn.reset is not None and conn.reset[0] == "server":
        return "refused"
    return "unanswered"


def close_label(conn: Connection, simultaneous: bool) -> str:
    if not conn.synchronized():
        return "none"
    if simultaneous:
        return "simultaneous"
    if conn.aborted:
        return "reset"
    if len(conn.fin_order) == 2:
        return "three-way" if conn.second_fin_acks_first else "four-way"
    if len(conn.fin_order) == 1:
        return "half-closed"
    return "open"


def _went_through(history: list, state: State) -> bool:
    return any(t.state is state for t in history)

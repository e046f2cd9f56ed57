"""Crafted captures of one TCP connection inside each encapsulation synfin reads.

Every frame is a packet of pcapwrite.handshake_packets (a handshake and a
four-way close) wrapped in the layers of one case of samples/encapsulations.py;
each case names the tunnel text and VLAN ids the record should show, worked
out by hand from the headers there, not copied from synfin's output.
"""

from __future__ import annotations

from pathlib import Path

from samples.encapsulations import CASES, Case
from tests.pcapwrite import handshake_packets, write_pcap

__all__ = ["CASES", "Case", "write_case"]


def write_case(case: Case, path: Path) -> Path:
    """The case's capture: the seven packets of a handshake and a four-way close, wrapped."""
    packets = handshake_packets(v6=case.v6)
    client = packets[0].src
    frames = [case.wrap(p, p.src == client) for p in packets]
    return write_pcap(path, frames, case.linktype)

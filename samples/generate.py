"""Make small, real TCP packet captures, one per TCP situation.

Run as root::

    python3 samples/generate.py [--out DIR] [--only NAME ...] [--list]

Each scenario builds its own private network out of Linux network namespaces
(see ``netlab.py``)::

    direct:   [client ns] c0 ====veth==== s0 [server ns]
    delayed:  [client ns] c0 ==veth== m0 [middle ns] m1 ==veth== s0 [server ns]

The client is 10.77.0.1 / fd77::1, the server 10.77.0.2 / fd77::2; no other
address is ever used. In the delayed layout a small AF_PACKET forwarder in the
middle namespace (``peer.py forward``) adds 50 ms one-way latency, so that
segments of both sides really cross in flight (simultaneous open and close).
Socket programs (``peer.py sockets``) run inside the namespaces and follow a
short list of steps; the real Linux TCP stack does the rest. ``tcpdump`` (or
``dumpcap``) records inside the client namespace on c0 (or ``-i any``) with
the filter ``tcp``. Two captures (``crafted_*``) are made with scapy because
the kernel will not produce them on demand.

After each capture the generator re-reads the file (``pcapread.py``) and
checks the property the scenario is about; a failed check (usually timing)
is retried up to three times, then the run fails loudly. Namespaces are
removed afterwards, also on errors and signals.

Importable: ``generate(names, out_dir)`` and ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from . import netlab, pcapread
except ImportError:  # run as a script: samples/ is on sys.path
    import netlab  # type: ignore[no-redef]
    import pcapread  # type: ignore[no-redef]

Lab = netlab.Lab
CLIENT4, CLIENT6 = netlab.CLIENT4, netlab.CLIENT6
SERVER4, SERVER6 = netlab.SERVER4, netlab.SERVER6
Steps = list[list[Any]]
Segs = list[pcapread.Segment]
HERE = Path(__file__).resolve().parent
PORT = 9000
ATTEMPTS = 3
DELAY = 0.05  # one-way latency of the delayed layout, seconds


class CheckFailed(AssertionError):
    """A capture does not show what its scenario is about."""


class GenerationError(RuntimeError):
    """A scenario failed all its attempts."""


@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    make: Callable[[Path], list[Path]]
    check: Callable[[list[Path]], None]


REGISTRY: dict[str, Scenario] = {}


def scenario(name: str, check: Callable[[list[Path]], None]) -> Callable[
        [Callable[[Path], list[Path]]], Callable[[Path], list[Path]]]:
    """Register ``make(out_dir) -> [paths]`` under ``name`` with its check."""

    def register(make: Callable[[Path], list[Path]]) -> Callable[[Path], list[Path]]:
        REGISTRY[name] = Scenario(name, (make.__doc__ or "").strip(), make, check)
        return make

    return register


# --------------------------------------------------------------------------
# step lists
# --------------------------------------------------------------------------


def connect(addr: str = SERVER4, port: int = PORT) -> list[Any]:
    return ["connect", addr, port]


def client_request(addr: str = SERVER4) -> Steps:
    """Client: connect, send 100 bytes, read 200 bytes."""
    return [connect(addr), ["send", 100], ["recv", 200]]


SERVER_REPLY: Steps = [["recv", 100], ["send", 200]]
CLIENT_FOURWAY: Steps = [*client_request(), ["close"]]
SERVER_FOURWAY: Steps = [*SERVER_REPLY, ["eof"], ["sleep", 0.3], ["close"]]


# --------------------------------------------------------------------------
# running one client/server exchange under capture
# --------------------------------------------------------------------------


def listener(steps: Steps, addr: str = SERVER4, **kw: Any) -> dict[str, Any]:
    return {"addr": addr, "port": PORT, "steps": steps, **kw}


def exchange(path: Path, server_steps: Steps | None, client_steps: Steps, *,
             delay: float | None = None, prepare: Callable[[Lab], None] | None = None,
             listen: dict[str, Any] | None = None,
             capture: dict[str, Any] | None = None,
             wait_server: bool = True) -> list[Path]:
    """One lab: server listens, capture starts, client runs, capture stops."""
    with Lab(delay) as lab:
        if prepare:
            prepare(lab)
        listeners = [] if server_steps is None else [
            listener(server_steps, **(listen or {}))]
        server = lab.peer(lab.server, {"listeners": listeners})
        with lab.capture(path, **(capture or {})):
            lab.peer(lab.client, {"clients": [{"steps": client_steps}]}).finish()
            if wait_server:
                server.finish()
    return [path]


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def expect(cond: object, msg: str, segs: Segs | None = None) -> None:
    if not cond:
        raise CheckFailed(msg + ("\n" + describe(segs) if segs else ""))


def is_client(seg: pcapread.Segment) -> bool:
    return seg.src in (CLIENT4, CLIENT6)


def side(seg: pcapread.Segment) -> str:
    return "c" if is_client(seg) else "s"


def describe(segs: Segs) -> str:
    return " ".join(f"{side(s)}:{s.tag}{'+' + str(s.plen) if s.plen else ''}"
                    for s in segs)


def load(path: Path) -> Segs:
    segs = pcapread.read(path).segments
    expect(segs, f"{path.name}: no TCP segments")
    return segs


def check_handshake(segs: Segs) -> None:
    syn, synack, ack = segs[0], segs[1], segs[2]
    expect(is_client(syn) and syn.tag == "S", "no client SYN first", segs)
    expect(not is_client(synack) and synack.tag == "S.", "no SYN-ACK second", segs)
    expect(synack.ack == syn.seq_end, "SYN-ACK does not ack the SYN", segs)
    expect(is_client(ack) and ack.has_ack and ack.ack == synack.seq_end,
           "no ACK of the SYN-ACK third", segs)


def fins(segs: Segs, who: str) -> Segs:
    return [s for s in segs if s.fin and side(s) == who]


def check_close(segs: Segs, first: str, mode: str = "fourway") -> None:
    """FIN from ``first``, then the other side's ACK/FIN, then the last ACK."""
    other = "s" if first == "c" else "c"
    expect(not any(s.rst for s in segs), "unexpected RST", segs)
    f1s, f2s = fins(segs, first), fins(segs, other)
    expect(len(f1s) == 1 and len(f2s) == 1, "want exactly one FIN per side", segs)
    f1, f2 = f1s[0], f2s[0]
    i1, i2 = segs.index(f1), segs.index(f2)
    expect(i1 < i2, f"first FIN is not from {first}", segs)
    expect(f2.ack == f1.seq_end, "second FIN does not ack the first", segs)
    between = [s for s in segs[i1 + 1:i2] if side(s) == other]
    acked = [s for s in between if s.ack == f1.seq_end]
    if mode == "fourway":
        expect(acked, "no separate ACK of the first FIN (four-way close)", segs)
    else:
        expect(not acked, "first FIN acked separately (want three-way close)", segs)
    expect(any(side(s) == first and s.ack == f2.seq_end for s in segs[i2 + 1:]),
           "second FIN never acked", segs)


def check_data(segs: Segs) -> None:
    expect(any(s.plen for s in segs if is_client(s)), "no client data", segs)
    expect(any(s.plen for s in segs if not is_client(s)), "no server data", segs)


def normal(first: str, mode: str = "fourway") -> Callable[[list[Path]], None]:
    def check(paths: list[Path]) -> None:
        segs = load(paths[0])
        check_handshake(segs)
        check_data(segs)
        check_close(segs, first, mode)

    return check


def resets(segs: Segs, who: str) -> Segs:
    return [s for s in segs if s.rst and side(s) == who]


def reset_by(who: str) -> Callable[[list[Path]], None]:
    def check(paths: list[Path]) -> None:
        segs = load(paths[0])
        check_handshake(segs)
        check_data(segs)
        expect(resets(segs, who), f"no RST from {who}", segs)
        expect(not fins(segs, who), f"FIN from {who} (want RST instead)", segs)

    return check


# --------------------------------------------------------------------------
# 1-3: ordinary closes
# --------------------------------------------------------------------------


@scenario("handshake_fourway_client_close", normal("c"))
def make_fourway_client(out: Path) -> list[Path]:
    """Handshake, 100 B request, 200 B reply, client closes first, server 300 ms
    after EOF: SYN, SYN-ACK, ACK, data, FIN, ACK, FIN, ACK. Also a pcapng copy."""
    path = out / "handshake_fourway_client_close.pcap"
    exchange(path, SERVER_FOURWAY, CLIENT_FOURWAY)
    ng = path.with_suffix(".pcapng")
    netlab.run(["editcap", "-F", "pcapng", str(path), str(ng)])
    return [path, ng]


@scenario("fourway_server_close", normal("s"))
def make_fourway_server(out: Path) -> list[Path]:
    """HTTP/1.0 style: request, reply, server closes first; client closes 300 ms
    after EOF. Server ends in TIME_WAIT."""
    client = [connect(), ["send", 100], ["eof"], ["sleep", 0.3], ["close"]]
    server = [["recv", 100], ["send", 300], ["close"]]
    return exchange(out / "fourway_server_close.pcap", server, client)


@scenario("threeway_close", normal("c", "threeway"))
def make_threeway(out: Path) -> list[Path]:
    """Client closes first, server closes at once on EOF: FIN, FIN+ACK, ACK."""
    server = [*SERVER_REPLY, ["eof"], ["close"]]
    return exchange(out / "threeway_close.pcap", server, CLIENT_FOURWAY)


# --------------------------------------------------------------------------
# 4-5: crossing segments through the 50 ms delay
# --------------------------------------------------------------------------


def check_simultaneous_open(paths: list[Path]) -> None:
    segs = load(paths[0])
    syns = [s for s in segs if s.syn]
    expect(len(syns) >= 4, "want 2 SYNs and 2 SYN-ACKs", segs)
    expect([s.tag for s in syns[:2]] == ["S", "S"], "first two SYNs not bare", segs)
    expect({side(s) for s in syns[:2]} == {"c", "s"}, "bare SYNs not from both",
           segs)
    sas = [s for s in syns if s.tag == "S."]
    expect({side(s) for s in sas} == {"c", "s"}, "no SYN-ACK from both sides", segs)
    expect(all(segs.index(s) > segs.index(syns[1]) for s in sas),
           "a SYN-ACK came before both SYNs (SYNs did not cross)", segs)
    check_data(segs)
    expect(fins(segs, "c") and fins(segs, "s"), "connection not closed", segs)


@scenario("simultaneous_open", check_simultaneous_open)
def make_simultaneous_open(out: Path) -> list[Path]:
    """Both ends bind fixed ports and connect() to each other at the same
    instant across a 50 ms one-way delay: the bare SYNs cross, then SYN-ACKs."""
    path = out / "simultaneous_open.pcap"
    at = time.time() + 1.0
    a = [["socket", "4"], ["reuseaddr"], ["bind", CLIENT4, 40001], ["at", at],
         ["connect", SERVER4, 40002], ["send", 100], ["recv", 100], ["close"]]
    b = [["socket", "4"], ["reuseaddr"], ["bind", SERVER4, 40002], ["at", at],
         ["connect", CLIENT4, 40001], ["recv", 100], ["send", 100], ["eof"],
         ["sleep", 0.3], ["close"]]
    with Lab(DELAY) as lab, lab.capture(path):
        peer_b = lab.peer(lab.server, {"clients": [{"steps": b}]})
        lab.peer(lab.client, {"clients": [{"steps": a}]}).finish()
        peer_b.finish()
    return [path]


def check_simultaneous_close(paths: list[Path]) -> None:
    segs = load(paths[0])
    check_handshake(segs)
    fc, fs = fins(segs, "c"), fins(segs, "s")
    expect(len(fc) == 1 and len(fs) == 1, "want one FIN per side", segs)
    expect(fc[0].ack != fs[0].seq_end, "client FIN acks the server FIN", segs)
    expect(fs[0].ack != fc[0].seq_end, "server FIN acks the client FIN", segs)
    for fin, who in ((fs[0], "c"), (fc[0], "s")):
        expect(any(side(s) == who and s.ack == fin.seq_end and not s.fin
                   for s in segs), f"{who} never acks the crossing FIN", segs)
    expect(not any(s.rst for s in segs), "unexpected RST", segs)


@scenario("simultaneous_close", check_simultaneous_close)
def make_simultaneous_close(out: Path) -> list[Path]:
    """Established connection over a 50 ms one-way delay; both ends
    shutdown(SHUT_WR) at the same wall-clock instant, the FINs cross and both
    ends pass through CLOSING to TIME_WAIT."""
    at = time.time() + 1.5
    tail = [["at", at], ["shutwr"], ["eof"], ["close"]]
    client = [*client_request(), *tail]
    return exchange(out / "simultaneous_close.pcap", [*SERVER_REPLY, *tail], client,
                    delay=DELAY)


# --------------------------------------------------------------------------
# 6-9: handshakes that fail or stumble
# --------------------------------------------------------------------------


DROP_SYN = """table inet synfin {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {port} tcp flags & (syn | ack) == syn {verdict}
  }}
}}
"""
DROP_SYNACK = """table inet synfin {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp flags & (syn | ack) == syn | ack drop
  }
}
"""


def limit_syn_retries(lab: Lab, retries: int) -> None:
    """Client gives up after ``retries`` SYN retransmits (exponential backoff).

    Since Linux 6.5 ``tcp_syn_linear_timeouts`` (default 4) extra linear
    retransmits are added to ``tcp_syn_retries``; set it to 0 where it exists.
    """
    lab.sysctl(lab.client, "net.ipv4.tcp_syn_retries", retries)
    if Path("/proc/sys/net/ipv4/tcp_syn_linear_timeouts").exists():
        lab.sysctl(lab.client, "net.ipv4.tcp_syn_linear_timeouts", 0)


def check_refused(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect([(side(s), s.tag) for s in segs] == [("c", "S"), ("s", "R.")],
           "want SYN then RST+ACK", segs)
    expect(segs[1].ack == segs[0].seq_end, "RST does not ack the SYN", segs)


@scenario("refused", check_refused)
def make_refused(out: Path) -> list[Path]:
    """connect() to a closed port: SYN answered by RST+ACK."""
    return exchange(out / "refused.pcap", None, [connect()])


def check_unanswered(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect(len(segs) == 3 and all(is_client(s) and s.tag == "S" for s in segs),
           "want exactly 3 client SYNs", segs)
    expect(len({s.seq for s in segs}) == 1, "SYN retransmits differ in ISN", segs)


@scenario("unanswered", check_unanswered)
def make_unanswered(out: Path) -> list[Path]:
    """nftables in the server namespace drops SYNs; the client
    (tcp_syn_retries=2, tcp_syn_linear_timeouts=0) sends the SYN 3 times
    (same ISN, at 0, 1 and 3 s) and gives up at ~7 s."""

    def prepare(lab: Lab) -> None:
        lab.nft(lab.server, DROP_SYN.format(port=PORT, verdict="drop"))
        limit_syn_retries(lab, 2)

    return exchange(out / "unanswered.pcap", None, [connect()], prepare=prepare)


def check_syn_lost_once(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect([(side(s), s.tag) for s in segs[:3]] == [("c", "S"), ("c", "S"),
                                                    ("s", "S.")],
           "want SYN, SYN (retransmit), SYN-ACK", segs)
    expect(segs[0].seq == segs[1].seq, "retransmitted SYN has another ISN", segs)
    check_handshake(segs[1:])
    check_data(segs)
    check_close(segs, "c")


@scenario("syn_lost_once", check_syn_lost_once)
def make_syn_lost_once(out: Path) -> list[Path]:
    """The first SYN is dropped in the server namespace (nft quota: only the
    first ~60 bytes of SYNs); the retransmit 1 s later is answered; normal
    exchange and four-way close."""

    def prepare(lab: Lab) -> None:
        lab.nft(lab.server, DROP_SYN.format(port=PORT,
                                            verdict="quota until 100 bytes drop"))

    return exchange(out / "syn_lost_once.pcap", SERVER_FOURWAY, CLIENT_FOURWAY,
                    prepare=prepare)


def check_incomplete(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect(segs[0].tag == "S" and is_client(segs[0]), "no SYN first", segs)
    expect(any(s.tag == "S." for s in segs), "no SYN-ACK seen", segs)
    expect(not any(s.has_ack for s in segs if is_client(s)),
           "the client sent an ACK", segs)
    expect(not any(s.plen for s in segs), "data seen", segs)


@scenario("incomplete_handshake", check_incomplete)
def make_incomplete(out: Path) -> list[Path]:
    """nftables in the client namespace drops incoming SYN-ACKs (after tcpdump
    saw them): SYN, SYN-ACK, retransmits of both, never an ACK from the client
    (client tcp_syn_retries=1, server tcp_synack_retries=2)."""

    def prepare(lab: Lab) -> None:
        lab.nft(lab.client, DROP_SYNACK)
        limit_syn_retries(lab, 1)
        lab.sysctl(lab.server, "net.ipv4.tcp_synack_retries", 2)

    return exchange(out / "incomplete_handshake.pcap", [["close"]], [connect()],
                    prepare=prepare, listen={"accepts": 0, "hold": 8},
                    wait_server=False)


# --------------------------------------------------------------------------
# 10-12: mid-connection capture, half close, CLOSE_WAIT
# --------------------------------------------------------------------------


def check_midstream(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect(not any(s.syn for s in segs), "capture contains a SYN", segs)
    check_data(segs)
    check_close(segs, "c")


@scenario("midstream", check_midstream)
def make_midstream(out: Path) -> list[Path]:
    """tcpdump starts ~0.6 s after the handshake while 100-byte echoes go on
    every 100 ms (15 in all); then a normal four-way close."""
    path = out / "midstream.pcap"
    rounds = 15
    client: Steps = [connect()]
    for _ in range(rounds):
        client += [["send", 100], ["recv", 100], ["sleep", 0.1]]
    server: Steps = [["recv", 100], ["send", 100]] * rounds
    server += [["eof"], ["sleep", 0.3], ["close"]]
    with Lab() as lab:
        srv = lab.peer(lab.server, {"listeners": [listener(server)]})
        cli = lab.peer(lab.client, {"clients": [{"steps": client}]})
        time.sleep(0.3)
        with lab.capture(path):
            cli.finish()
            srv.finish()
    return [path]


def check_half_close(paths: list[Path]) -> None:
    segs = load(paths[0])
    check_handshake(segs)
    fc, fs = fins(segs, "c"), fins(segs, "s")
    expect(len(fc) == 1 and len(fs) == 1, "want one FIN per side", segs)
    i_c, i_s = segs.index(fc[0]), segs.index(fs[0])
    expect(i_c < i_s, "client FIN is not first", segs)
    later = [s for s in segs[i_c + 1:i_s] if not is_client(s) and s.plen]
    expect(len(later) >= 3, "server sent < 3 data segments after the FIN", segs)
    acks = [s for s in segs[i_c + 1:i_s] if is_client(s) and s.ack > fc[0].ack]
    expect(acks, "client did not ACK the data after its FIN", segs)
    check_close(segs, "c")


@scenario("half_close", check_half_close)
def make_half_close(out: Path) -> list[Path]:
    """Client sends a request and shutdown(SHUT_WR); the server keeps sending
    5 x 200 bytes over ~200 ms, which the half-closed client ACKs, then closes."""
    client = [connect(), ["send", 100], ["shutwr"], ["eof"], ["close"]]
    server: Steps = [["recv", 100], ["eof"]]
    for _ in range(5):
        server += [["send", 200], ["sleep", 0.05]]
    server.append(["close"])
    return exchange(out / "half_close.pcap", server, client)


def check_close_wait(paths: list[Path]) -> None:
    segs = load(paths[0])
    check_handshake(segs)
    fc = fins(segs, "c")
    expect(len(fc) == 1, "want one client FIN", segs)
    expect(not fins(segs, "s") and not any(s.rst for s in segs),
           "server closed", segs)
    expect(any(not is_client(s) and s.ack == fc[0].seq_end for s in segs),
           "server did not ACK the FIN", segs)


@scenario("close_wait_left_open", check_close_wait)
def make_close_wait(out: Path) -> list[Path]:
    """Client closes; the server ACKs the FIN but keeps its socket open until
    after the capture stopped (server stays in CLOSE_WAIT)."""
    server = [*SERVER_REPLY, ["eof"], ["sleep", 5], ["close"]]
    return exchange(out / "close_wait_left_open.pcap", server, CLIENT_FOURWAY,
                    wait_server=False)


# --------------------------------------------------------------------------
# 13-16: resets
# --------------------------------------------------------------------------


@scenario("reset_linger_client", reset_by("c"))
def make_reset_linger_client(out: Path) -> list[Path]:
    """Client sets SO_LINGER {1, 0} and closes an established connection:
    RST from the client instead of a FIN."""
    client = [*client_request(), ["linger0"], ["close"]]
    server = [*SERVER_REPLY, ["eof"], ["close"]]
    return exchange(out / "reset_linger_client.pcap", server, client)


@scenario("reset_linger_server", reset_by("s"))
def make_reset_linger_server(out: Path) -> list[Path]:
    """Server sets SO_LINGER {1, 0} and closes after its reply: RST from the
    server."""
    client = [*client_request(), ["eof"], ["close"]]
    server = [*SERVER_REPLY, ["sleep", 0.2], ["linger0"], ["close"]]
    return exchange(out / "reset_linger_server.pcap", server, client)


@scenario("reset_unread_data", reset_by("c"))
def make_reset_unread(out: Path) -> list[Path]:
    """The client close()s while 300 unread bytes from the server sit in its
    receive buffer: Linux sends RST instead of FIN."""
    client = [connect(), ["send", 100], ["sleep", 0.3], ["close"]]
    server = [["recv", 100], ["send", 300], ["eof"], ["close"]]
    return exchange(out / "reset_unread_data.pcap", server, client)


def check_reset_after_close(paths: list[Path]) -> None:
    segs = load(paths[0])
    check_handshake(segs)
    fc = fins(segs, "c")
    expect(len(fc) == 1, "want one client FIN", segs)
    i_f = segs.index(fc[0])
    data = [i for i, s in enumerate(segs) if i > i_f and s.plen and not is_client(s)]
    expect(data, "no server data after the client FIN", segs)
    expect(any(s.rst for s in resets(segs[data[0]:], "c")),
           "the closed client did not answer data with RST", segs)


@scenario("reset_after_close", check_reset_after_close)
def make_reset_after_close(out: Path) -> list[Path]:
    """Client sends a request and close()s (FIN); the server reads EOF and then
    still writes: the orphaned client socket answers the data with RST."""
    client = [connect(), ["send", 100], ["close"]]
    server = [["recv", 100], ["eof"], ["sleep", 0.1], ["send", 100], ["sleep", 0.2],
              ["send", 100], ["close"]]
    return exchange(out / "reset_after_close.pcap", server, client)


# --------------------------------------------------------------------------
# 17-19: keepalive, Fast Open, reuse of a 4-tuple
# --------------------------------------------------------------------------


def keepalive_probes(segs: Segs) -> Segs:
    """Client segments of <= 1 byte whose seq is one below its next seq."""
    probes, nxt = [], None
    for seg in segs:
        if not is_client(seg):
            continue
        if nxt is not None and seg.plen <= 1 and seg.seq == (nxt - 1) & 0xFFFFFFFF:
            probes.append(seg)
        nxt = seg.seq_end if nxt is None else max(nxt, seg.seq_end)
    return probes


def check_keepalive(paths: list[Path]) -> None:
    segs = load(paths[0])
    normal("c")(paths)
    probes = keepalive_probes(segs)
    expect(len(probes) >= 2, f"only {len(probes)} keepalive probes", segs)


@scenario("keepalive", check_keepalive)
def make_keepalive(out: Path) -> list[Path]:
    """SO_KEEPALIVE with TCP_KEEPIDLE=1 s, TCP_KEEPINTVL=1 s on an idle client
    for 2.6 s: 2 keepalive probes (seq = snd_nxt - 1) each ACKed, then a
    four-way close."""
    client = [*client_request(), ["keepalive", 1, 1, 3], ["sleep", 2.6], ["close"]]
    return exchange(out / "keepalive.pcap", SERVER_FOURWAY, client)


def check_fastopen(paths: list[Path]) -> None:
    segs = load(paths[0])
    syns = [s for s in segs if s.tag == "S" and is_client(s) and s.plen]
    expect(syns, "no SYN with payload", segs)
    cookie = [v for k, v in pcapread.tcp_options(syns[0]) if k == 34]
    expect(cookie and cookie[0], "data SYN carries no TFO cookie", segs)
    sa = [s for s in segs if s.tag == "S." and s.dport == syns[0].sport]
    expect(sa and sa[-1].ack == syns[0].seq_end, "SYN-ACK does not ack SYN data",
           segs)


@scenario("fastopen", check_fastopen)
def make_fastopen(out: Path) -> list[Path]:
    """TCP Fast Open (tcp_fastopen=3 both sides): connection 1 asks for and
    gets a cookie, connection 2 sends 50 bytes in its SYN with the cookie."""
    tfo = ["tfo", SERVER4, PORT, 50]
    client = [tfo, ["recv", 50], ["close"], ["sleep", 0.3], tfo, ["recv", 50],
              ["close"]]
    server = [["recv", 50], ["send", 50], ["eof"], ["sleep", 0.2], ["close"]]

    def prepare(lab: Lab) -> None:
        for ns in (lab.client, lab.server):
            lab.sysctl(ns, "net.ipv4.tcp_fastopen", 3)

    return exchange(out / "fastopen.pcap", server, client, prepare=prepare,
                    listen={"accepts": 2, "fastopen": True})


def check_port_reuse(paths: list[Path]) -> None:
    segs = load(paths[0])
    syns = [s for s in segs if s.tag == "S"]
    expect(len(syns) == 2, "want two client SYNs", segs)
    a, b = syns
    expect((a.sport, a.dport) == (b.sport, b.dport), "4-tuples differ", segs)
    expect(a.seq != b.seq, "same ISN twice", segs)
    expect(len([s for s in segs if s.tag == "S."]) == 2, "want two SYN-ACKs", segs)
    expect(len([s for s in segs if s.fin]) == 4, "want four FINs", segs)
    expect(not any(s.rst for s in segs), "unexpected RST", segs)
    i = segs.index(b)
    check_handshake(segs[:3])
    check_handshake(segs[i:])
    check_close(segs[:i], "s")
    check_close(segs[i:], "s")


@scenario("port_reuse", check_port_reuse)
def make_port_reuse(out: Path) -> list[Path]:
    """Two connections on the same 4-tuple (client port 45000 bound twice with
    SO_REUSEADDR). The server closes first each time, so the TIME_WAIT is on
    the server, which accepts the new SYN (higher ISN/timestamp)."""
    one = [["socket", "4"], ["reuseaddr"], ["bind", CLIENT4, 45000], connect(),
           ["send", 100], ["recv", 200], ["eof"], ["sleep", 0.3], ["close"]]
    server = [*SERVER_REPLY, ["close"]]
    return exchange(out / "port_reuse.pcap", server, [*one, ["sleep", 0.3], *one],
                    listen={"accepts": 2})


def check_rst_injected(paths: list[Path]) -> None:
    segs = load(paths[0])
    syn = segs[0]
    expect(is_client(syn) and syn.tag == "S", "no client SYN first", segs)
    forged = [s for s in segs if s.rst and not is_client(s)]
    expect(len(forged) == 2, "want the two forged RSTs", segs)
    first, blind = forged
    expect(first.has_ack and first.ack == syn.seq, "first RST does not ack the bare ISN", segs)
    synacks = [s for s in segs if s.tag == "S."]
    expect(synacks and segs.index(synacks[0]) > segs.index(first), "the RST did not beat the SYN-ACK", segs)
    expect(not any(s.rst for s in segs if is_client(s)), "the client answered with a RST", segs)
    expect(fins(segs, "c") and fins(segs, "s"), "the connection did not close normally", segs)
    data = [s for s in segs if not is_client(s) and s.plen and segs.index(s) < segs.index(blind)]
    expect(data and blind.seq - data[-1].seq_end > 1_000_000, "second RST not far out of window", segs)
    expect(segs.index(blind) < segs.index(fins(segs, "c")[0]), "second RST after the close began", segs)


@scenario("rst_injected", check_rst_injected)
def make_rst_injected(out: Path) -> list[Path]:
    """An on-path injector on the delaying wire (peer.py inject, a raw AF_PACKET socket in the middle
    namespace) forges two RSTs "from the server" into a real connection: at the client's SYN, a RST+ACK
    whose ack is the client's ISN (not ISN + 1), 100 ms before the real SYN-ACK; and, after the server's
    reply, a RST 3,000,000 past the client's window. Linux ignores both (RFC 9293 3.10.7.3; RFC 5961,
    tcp_validate_incoming): the ignored first one makes it resend its SYN at once; the connection goes
    on and closes with a four-way close, the client first."""
    path = out / "rst_injected.pcap"
    client = [*client_request(), ["sleep", 0.4], ["close"]]
    with Lab(DELAY) as lab:
        server = lab.peer(lab.server, {"listeners": [listener(SERVER_FOURWAY)]})
        injector = lab.injector({"port": PORT})
        with lab.capture(path):
            lab.peer(lab.client, {"clients": [{"steps": client}]}).finish()
            server.finish()
            injector.finish()
    return [path]


def check_listen_overflow(paths: list[Path]) -> None:
    segs = load(paths[0])
    ports = sorted({s.sport for s in segs if is_client(s)})
    expect(len(ports) == LISTEN_OVERFLOW_CLIENTS, f"want {LISTEN_OVERFLOW_CLIENTS} clients", segs)
    overflowed = 0
    for port in ports:
        conn = [s for s in segs if port in (s.sport, s.dport)]
        synacks = [i for i, s in enumerate(conn) if s.tag == "S."]
        acked = [i for i, s in enumerate(conn) if is_client(s) and not s.syn and s.has_ack
                 and synacks and s.ack == conn[synacks[0]].seq_end]
        if acked and any(i > acked[0] for i in synacks):
            overflowed += 1  # a SYN-ACK resent after the ACK of it: the ACK was dropped
            data = [s.seq for s in conn if is_client(s) and s.plen]
            expect(len(data) > len(set(data)), f"port {port}: no client data resent", conn)
        expect(fins(conn, "c") and fins(conn, "s"), f"port {port}: not closed", conn)
    expect(overflowed >= 1, "no connection saw its third ACK dropped", segs)


LISTEN_OVERFLOW_CLIENTS = 4


@scenario("listen_overflow", check_listen_overflow)
def make_listen_overflow(out: Path) -> list[Path]:
    """Accept-queue overflow: the server listens with backlog 2 and does not accept() for 2.5 s; over the
    50 ms delay two clients connect at once, then two more 300 ms later, each sending 100 B. Every SYN
    finds room (the accept queue holds 2 when the last two SYNs arrive: full means more than 2), and the
    third ACKs of the first three fill it; the fourth's is dropped (tcp_abort_on_overflow=0: Linux keeps
    the request in SYN_RECV and resends its SYN-ACK, 1 s later and again; tcp_syncookies=0 so no SYN is
    answered with a cookie). That client, ESTABLISHED, resends its data. Once the server accepts, the
    client's ACK of a resent SYN-ACK completes the handshake, and every connection closes normally."""
    first = [connect(), ["send", 100], ["recv", 100], ["close"]]
    second = [["sleep", 0.3], *first]
    server = [["recv", 100], ["send", 100], ["eof"], ["close"]]
    path = out / "listen_overflow.pcap"
    with Lab(DELAY) as lab:
        lab.sysctl(lab.server, "net.ipv4.tcp_abort_on_overflow", 0)
        lab.sysctl(lab.server, "net.ipv4.tcp_syncookies", 0)
        spec = listener(server, backlog=2, accepts=LISTEN_OVERFLOW_CLIENTS, accept_after=2.5)
        peer = lab.peer(lab.server, {"listeners": [spec]})
        with lab.capture(path):
            waves = [{"steps": steps, "count": 2} for steps in (first, second)]
            lab.peer(lab.client, {"clients": waves}).finish()
            peer.finish()
    return [path]


# --------------------------------------------------------------------------
# 20-22: IPv6, -i any, dumpcap
# --------------------------------------------------------------------------


def check_ipv6(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect(all(":" in s.src for s in segs), "non-IPv6 segment", segs)
    normal("c")(paths)


@scenario("ipv6", check_ipv6)
def make_ipv6(out: Path) -> list[Path]:
    """A normal connection fd77::1 -> fd77::2 with a four-way close."""
    client = [*client_request(SERVER6), ["close"]]
    return exchange(out / "ipv6.pcap", SERVER_FOURWAY, client,
                    listen={"addr": SERVER6})


def linktype_is(linktype: int, fmt: str) -> Callable[[list[Path]], None]:
    def check(paths: list[Path]) -> None:
        cap = pcapread.read(paths[0])
        expect(cap.linktype == linktype and cap.fmt == fmt,
               f"{paths[0].name}: link type {cap.linktype} {cap.fmt}")
        normal("c")(paths)

    return check


@scenario("any_interface", linktype_is(pcapread.LINK_SLL2, "pcap"))
def make_any(out: Path) -> list[Path]:
    """A normal connection captured with tcpdump -i any (Linux cooked v2)."""
    return exchange(out / "any_interface.pcap", SERVER_FOURWAY, CLIENT_FOURWAY,
                    capture={"iface": "any", "extra": ["-y", "LINUX_SLL2"]})


@scenario("dumpcap_pcapng", linktype_is(pcapread.LINK_ETHERNET, "pcapng"))
def make_dumpcap(out: Path) -> list[Path]:
    """A normal connection captured with dumpcap (pcapng)."""
    return exchange(out / "dumpcap_pcapng.pcapng", SERVER_FOURWAY, CLIENT_FOURWAY,
                    capture={"tool": "dumpcap"})


# --------------------------------------------------------------------------
# 23: busy
# --------------------------------------------------------------------------

BUSY_KINDS: dict[str, tuple[int, int]] = {  # kind: (server port, connections)
    "client_close": (9101, 100),
    "server_close": (9102, 80),
    "client_reset": (9103, 40),
    "server_reset": (9104, 40),
    "half_close": (9105, 50),
    "refused": (9109, 30),
}


BUSY_HOW = {
    "client_close": "client FIN first, four-way close",
    "server_close": "server FIN first (after its reply), four-way close",
    "client_reset": "client closes with SO_LINGER 0: RST from the client",
    "server_reset": "server closes with SO_LINGER 0: RST from the server",
    "half_close": "client FIN first, then server data, then server FIN",
    "refused": "SYN to a closed port answered by RST+ACK",
}


def busy_steps(kind: str, hold: float) -> tuple[Steps, Steps]:
    """(client steps, server steps) of one busy connection kind."""
    port = BUSY_KINDS[kind][0]
    conn, wait = ["connect", SERVER4, port], ["sleep", round(hold, 3)]
    table: dict[str, tuple[Steps, Steps]] = {
        "client_close": ([conn, ["send", 60], ["recv", 60], wait, ["close"]],
                         [["recv", 60], ["send", 60], ["eof"], ["sleep", 0.2],
                          ["close"]]),
        "server_close": ([conn, wait, ["send", 60], ["eof"], ["sleep", 0.1],
                          ["close"]],
                         [["recv", 60], ["send", 120], ["close"]]),
        "client_reset": ([conn, ["send", 60], ["recv", 60], wait, ["linger0"],
                          ["close"]],
                         [["recv", 60], ["send", 60], ["eof"], ["close"]]),
        "server_reset": ([conn, wait, ["send", 60], ["eof"], ["close"]],
                         [["recv", 60], ["send", 60], ["sleep", 0.05], ["linger0"],
                          ["close"]]),
        "half_close": ([conn, wait, ["send", 60], ["shutwr"], ["eof"], ["close"]],
                       [["recv", 60], ["eof"], ["send", 60], ["sleep", 0.05],
                        ["send", 60], ["close"]]),
        "refused": ([wait, conn], []),
    }
    return table[kind]


def busy_specs() -> tuple[dict[str, Any], dict[str, Any]]:
    """Mixed, shuffled client list and one listener per kind (not refused)."""
    rng = random.Random(77)
    kinds = [k for k, (_, n) in BUSY_KINDS.items() for _ in range(n)]
    rng.shuffle(kinds)
    clients = [{"steps": busy_steps(k, rng.uniform(0.3, 1.5))[0], "stagger": 0.005}
               for k in kinds]
    listeners = [{"addr": SERVER4, "port": port, "accepts": n, "backlog": 512,
                  "steps": busy_steps(k, 0)[1]}
                 for k, (port, n) in BUSY_KINDS.items() if k != "refused"]
    return ({"listeners": listeners, "deadline": 30},
            {"clients": clients, "deadline": 30})


def busy_kind(segs: Segs) -> str:
    """Classify one busy connection by how it ended."""
    syn = segs[0]
    if any(s.tag == "R." and not is_client(s) and s.ack == syn.seq_end
           for s in segs[1:2]):
        return "refused"
    first_rst = next((s for s in segs if s.rst), None)
    first_fin = next((s for s in segs if s.fin), None)
    if first_rst and (first_fin is None or side(first_fin) == side(first_rst)):
        return "client_reset" if is_client(first_rst) else "server_reset"
    if first_fin is None or first_rst:
        return "unclassified"
    if not is_client(first_fin):
        return "server_close"
    after = segs[segs.index(first_fin) + 1:]
    data_after = any(s.plen for s in after if not is_client(s))
    return "half_close" if data_after else "client_close"


def busy_connections(segs: Segs) -> dict[tuple[int, int], Segs]:
    conns: dict[tuple[int, int], Segs] = {}
    for seg in segs:
        key = (seg.sport, seg.dport) if is_client(seg) else (seg.dport, seg.sport)
        conns.setdefault(key, []).append(seg)
    return conns


def check_busy(paths: list[Path]) -> None:
    segs = load(paths[0])
    manifest = json.loads(paths[1].read_text())
    conns = busy_connections(segs)
    expect(len(conns) == manifest["total"], f"{len(conns)} connections")
    seen = Counter(busy_kind(c) for c in conns.values())
    expect(seen == Counter(manifest["kinds"]),
           f"kinds seen {dict(seen)} != made {manifest['kinds']}")
    for (_, port), conn in conns.items():
        kind = busy_kind(conn)
        expect(manifest["ports"][kind] == port, f"{kind} on port {port}", conn)
    expect(paths[0].stat().st_size < 1_500_000, "busy.pcap too large")


@scenario("busy", check_busy)
def make_busy(out: Path) -> list[Path]:
    """340 concurrent connections of mixed kinds (normal closes from both
    sides, resets from both sides, half-closes, refusals) within ~4 s; counts
    per kind in busy.manifest.json."""
    path, manifest = out / "busy.pcap", out / "busy.manifest.json"
    server_spec, client_spec = busy_specs()
    with Lab() as lab:
        server = lab.peer(lab.server, server_spec)
        with lab.capture(path, snaplen=96):
            lab.peer(lab.client, client_spec).finish(timeout=40)
            server.finish(timeout=40)
    manifest.write_text(json.dumps({
        "capture": path.name,
        "client": CLIENT4,
        "server": SERVER4,
        "total": sum(n for _, n in BUSY_KINDS.values()),
        "kinds": {k: n for k, (_, n) in BUSY_KINDS.items()},
        "ports": {k: p for k, (p, _) in BUSY_KINDS.items()},
        "how": BUSY_HOW,
    }, indent=2) + "\n")
    return [path, manifest]


# --------------------------------------------------------------------------
# 24: server_states, checked against `ss` (issue 15)
# --------------------------------------------------------------------------

STATES_KINDS: dict[str, tuple[int, int]] = {  # kind: (server port, connections)
    "slow_accept": (9107, 3),
    "server_close": (9102, 60),
    "close_wait": (9106, 5),
    "client_reset": (9103, 10),
    "server_reset": (9104, 10),
    "refused": (9109, 5),
}
STATES_HOW = {
    "slow_accept": "listen(1) server that accepts only ~1.6 s after the clients start: the third client's SYN "
                   "finds the accept queue full and is dropped; the client resends it (no SYN cookies)",
    "server_close": "server FIN first after its reply: TIME_WAIT on the server, 60 of them",
    "close_wait": "client closes, the server reads the end of file and never closes while captured: CLOSE_WAIT",
    "client_reset": "client closes with SO_LINGER 0: RST from the client",
    "server_reset": "server closes with SO_LINGER 0: RST from the server",
    "refused": "SYN to a closed port answered by RST+ACK",
}
STATES_SNAPSHOTS = (1.3, 2.3, 4.0)  # seconds after the clients start: `ss -tan` in both namespaces


def states_specs() -> tuple[dict[str, Any], dict[str, Any]]:
    """One listener per kind (not refused) and the client groups, the slow-accept ones first, all at once."""
    def port(kind: str) -> int:
        return STATES_KINDS[kind][0]

    request = [["send", 60], ["recv", 60]]
    client = {
        "slow_accept": [connect(SERVER4, port("slow_accept")), ["send", 100], ["recv", 100], ["close"]],
        "server_close": [connect(SERVER4, port("server_close")), ["send", 60], ["recv", 120], ["eof"], ["close"]],
        "close_wait": [connect(SERVER4, port("close_wait")), *request, ["close"]],
        "client_reset": [connect(SERVER4, port("client_reset")), *request, ["linger0"], ["close"]],
        "server_reset": [connect(SERVER4, port("server_reset")), *request, ["eof"], ["close"]],
        "refused": [connect(SERVER4, port("refused"))],
    }
    server = {
        "slow_accept": [["recv", 100], ["send", 100], ["eof"], ["close"]],
        "server_close": [["recv", 60], ["send", 120], ["close"]],
        "close_wait": [["recv", 60], ["send", 60], ["eof"], ["sleep", 12], ["close"]],
        "client_reset": [["recv", 60], ["send", 60], ["eof"], ["close"]],
        "server_reset": [["recv", 60], ["send", 60], ["sleep", 0.05], ["linger0"], ["close"]],
    }
    listeners = [{"addr": SERVER4, "port": port(k), "accepts": n, "backlog": 512, "steps": server[k]}
                 for k, (_, n) in STATES_KINDS.items() if k in server]
    listeners[0].update(backlog=1, accept_after=2.2)  # ~1.6 s after the clients start
    clients = [{"steps": client[k], "count": n, "stagger": 0.0 if k == "slow_accept" else 0.01}
               for k, (_, n) in STATES_KINDS.items()]
    return {"listeners": listeners, "deadline": 40}, {"clients": clients, "deadline": 30}


def ss_snapshot(lab: Lab) -> dict[str, Any]:
    """`ss -tan` in the server's, then the client's namespace, with the wall-clock times around the two."""
    before = time.time()
    server = netlab.run(netlab.in_ns(lab.server, "ss", "-tanH"))
    client = netlab.run(netlab.in_ns(lab.client, "ss", "-tanH"))
    after = time.time()
    keep = lambda text: [" ".join(line.split()[i] for i in (0, 3, 4)) for line in text.splitlines()]  # noqa: E731
    return {"from": round(before, 6), "to": round(after, 6), "server": keep(server), "client": keep(client)}


def check_states(paths: list[Path]) -> None:
    segs = load(paths[0])
    manifest = json.loads(paths[1].read_text())
    conns = busy_connections(segs)
    expect(len(conns) == manifest["total"], f"{len(conns)} connections")
    per_port = Counter(port for _, port in conns)
    expect(per_port == Counter({int(p): n for p, n in manifest["ports_count"].items()}), f"ports {per_port}")
    snapshots = json.loads(paths[2].read_text())["snapshots"]
    expect(len(snapshots) == len(STATES_SNAPSHOTS), "snapshots missing")
    first = snapshots[0]["server"]
    for state, least in (("CLOSE-WAIT", STATES_KINDS["close_wait"][1]), ("TIME-WAIT", STATES_KINDS["server_close"][1])):
        expect(sum(line.startswith(state) for line in first) >= least, f"{state} missing: {first}")
    syns = Counter(s.sport for s in segs if s.tag == "S" and s.dport == STATES_KINDS["slow_accept"][0])
    expect(max(syns.values()) > 1, f"no SYN resent to the slow server: {dict(syns)}")


@scenario("server_states", check_states)
def make_states(out: Path) -> list[Path]:
    """93 connections of six kinds made on purpose for `synfin report`'s findings (server-first closes: a
    TIME_WAIT pile; a CLOSE_WAIT leak; linger-0 resets from both sides; a closed port; a listen(1) server
    that accepts slowly: a dropped third ACK), with `ss -tan` taken in both namespaces at 1.3, 2.3 and 4.0 s
    (server_states.ss.json): the truth the report's census is checked against (tests/test_report_ss.py)."""
    path, manifest, snapshots = (out / "server_states.pcap", out / "server_states.manifest.json",
                                 out / "server_states.ss.json")
    server_spec, client_spec = states_specs()
    taken = []
    with Lab() as lab:
        lab.sysctl(lab.server, "net.ipv4.tcp_abort_on_overflow", 0)
        lab.sysctl(lab.server, "net.ipv4.tcp_syncookies", 0)
        server = lab.peer(lab.server, server_spec)
        with lab.capture(path, snaplen=96):
            start = time.time()
            clients = lab.peer(lab.client, client_spec)
            for at in STATES_SNAPSHOTS:
                time.sleep(max(0.0, start + at - time.time()))
                taken.append({"at": at, **ss_snapshot(lab)})
            clients.finish(timeout=30)
        server.finish(timeout=40)
    manifest.write_text(json.dumps({
        "capture": path.name, "client": CLIENT4, "server": SERVER4,
        "total": sum(n for _, n in STATES_KINDS.values()),
        "kinds": {k: n for k, (_, n) in STATES_KINDS.items()},
        "ports": {k: p for k, (p, _) in STATES_KINDS.items()},
        "ports_count": {str(p): n for p, n in STATES_KINDS.values()},
        "how": STATES_HOW,
    }, indent=2) + "\n")
    snapshots.write_text(json.dumps({
        "what": "`ss -tanH` (state, local, peer) in the server's and the client's namespace during the capture; "
                "from/to: the wall-clock time (the capture's clock) before and after the two",
        "snapshots": taken}, indent=1) + "\n")
    return [path, manifest, snapshots]


# --------------------------------------------------------------------------
# 25-26: VLANs and tunnels (issue 13)
# --------------------------------------------------------------------------
# This kernel has VXLAN and veths, but no 8021q, bridge VLAN filtering, tc
# vlan action, GRE, Geneve, IPIP/SIT, ip6tnl, MPLS or FOU: the VLAN tags are
# pushed by a userspace switch (peer.py trunk) around real kernel traffic, and
# the other encapsulations are crafted (crafted_encapsulations, re-wrapping a
# kernel connection's packets).


def vlan_switch(lab: Lab) -> dict[int, tuple[str, str]]:
    """The lab's client namespace becomes a switch (peer.py trunk): VLANs 10 and 20 each get a client
    and a server host namespace (10.77.0.1 and 10.77.0.2, both times) on access ports, and a trunk
    t0-t1 carries both, tagged. Returns {vid: (client ns, server ns)}."""
    switch, hosts = lab.client, {}
    netlab.run(["ip", "link", "add", "t0", "netns", switch, "type", "veth", "peer", "name", "t1", "netns", switch])
    ports = ["t0", "t1"]
    for vid in (10, 20):
        names = (f"{lab.client}-v{vid}", f"{lab.server}-v{vid}")
        for ns, port, addr4, addr6 in ((names[0], f"p{vid}", CLIENT4, CLIENT6),
                                       (names[1], f"q{vid}", SERVER4, SERVER6)):
            lab.add_ns(ns)
            netlab.run(["ip", "link", "add", port, "netns", switch, "type", "veth", "peer", "name", "h0", "netns", ns])
            netlab.run(netlab.in_ns(ns, "ethtool", "-K", "h0", *netlab.OFFLOADS))
            netlab.run(["ip", "-n", ns, "link", "set", "h0", "up"])
            lab.endpoint(ns, "h0", addr4, addr6)
            ports.append(port)
        hosts[vid] = names
    for port in ports:
        netlab.run(netlab.in_ns(switch, "ethtool", "-K", port, *netlab.OFFLOADS))
        netlab.run(["ip", "-n", switch, "link", "set", port, "promisc", "on", "up"])
    spec = {"trunk": ["t0", "t1"], "clients": {"10": "p10", "20": "p20"}, "servers": {"10": "q10", "20": "q20"},
            "deadline": 60}
    proc = netlab.Proc(netlab.in_ns(switch, sys.executable, str(netlab.PEER), "trunk", json.dumps(spec)),
                       log=lab.tmp / "trunk.log")
    lab.procs.append(proc)
    proc.wait_for("READY", 10)
    return hosts


def check_vlan_reuse(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect({s.vlan for s in segs} == {10, 20}, "want VLANs 10 and 20 only", segs)
    for vid in (10, 20):
        one = [s for s in segs if s.vlan == vid]
        check_handshake(one)
        check_data(one)
        check_close(one, "c")
    tuples = {(s.src, s.sport, s.dst, s.dport) for s in segs if s.tag == "S"}
    expect(len(tuples) == 1, "the two VLANs' SYNs do not share one 4-tuple", segs)


@scenario("vlan_reuse", check_vlan_reuse)
def make_vlan_reuse(out: Path) -> list[Path]:
    """Two VLANs (10, 20) reusing one 4-tuple at the same time: a client and a server in each,
    10.77.0.1:45000 -> 10.77.0.2:9000 both times, switched onto a tagged trunk (peer.py trunk);
    captured on the trunk, where the two connections' segments interleave."""
    path = out / "vlan_reuse.pcap"
    client = [["socket", "4"], ["reuseaddr"], ["bind", CLIENT4, 45000], *CLIENT_FOURWAY]
    with Lab() as lab:
        hosts = vlan_switch(lab)
        servers = [lab.peer(server, {"listeners": [listener(SERVER_FOURWAY)]}) for _, server in hosts.values()]
        with lab.capture(path, ns=lab.client, iface="t0", bpf="vlan and tcp", snaplen=256):
            clients = [lab.peer(c, {"clients": [{"steps": client}]}) for c, _ in hosts.values()]
            for peer in clients + servers:
                peer.finish()
    return [path]


def vxlan_underlay(lab: Lab) -> None:
    """VXLAN 42 on UDP 4789 between 10.76.0.1 and 10.76.0.2 (c0, s0); the usual addresses on vx0."""
    for ns, iface, here, there, addr4, addr6 in ((lab.client, "c0", "10.76.0.1", "10.76.0.2", CLIENT4, CLIENT6),
                                                 (lab.server, "s0", "10.76.0.2", "10.76.0.1", SERVER4, SERVER6)):
        netlab.run(["ip", "-n", ns, "addr", "flush", "dev", iface])
        netlab.run(["ip", "-n", ns, "addr", "add", f"{here}/24", "dev", iface])
        netlab.run(["ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", here, "remote",
                    there, "dstport", "4789", "dev", iface])
        netlab.run(netlab.in_ns(ns, "ethtool", "-K", "vx0", *netlab.OFFLOADS))
        netlab.run(["ip", "-n", ns, "link", "set", "vx0", "up"])
        lab.endpoint(ns, "vx0", addr4, addr6)


@scenario("vxlan", normal("c"))
def make_vxlan(out: Path) -> list[Path]:
    """The normal connection (request, reply, client closes first) inside VXLAN 42 (the kernel's vxlan
    device, UDP 4789), captured on the underlay interface between 10.76.0.1 and 10.76.0.2."""
    return exchange(out / "vxlan.pcap", SERVER_FOURWAY, CLIENT_FOURWAY, prepare=vxlan_underlay,
                    capture={"bpf": "udp port 4789", "snaplen": 256})


# --------------------------------------------------------------------------
# 27-29: what a passive observer infers: partial, reordered, one-sided
# --------------------------------------------------------------------------


def editcap(*args: str) -> None:
    subprocess.run(["editcap", *args], check=True, capture_output=True, timeout=60)


def check_starts_at_synack(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect(segs[0].tag == "S." and not any(s.tag == "S" for s in segs), "want the SYN-ACK first, no SYN", segs)
    check_close(segs, "c")


@scenario("starts_at_synack", check_starts_at_synack)
def make_starts_at_synack(out: Path) -> list[Path]:
    """A kernel handshake, request, reply and four-way close (client first),
    then the capture cut so it starts at the SYN-ACK (editcap drops frame 1,
    the SYN): the packets stay the kernel's."""
    path = out / "starts_at_synack.pcap"
    whole = out / "starts_at_synack.whole.pcap"
    exchange(whole, SERVER_FOURWAY, CLIENT_FOURWAY)
    editcap(str(whole), str(path), "1")
    whole.unlink()
    return [path]


SKEW = 0.0003  # the client->server queue's timestamps run 300 µs late


def check_synack_before_syn(paths: list[Path]) -> None:
    segs = load(paths[0])
    expect(segs[0].tag == "S." and segs[1].tag == "S" and segs[0].ack == segs[1].seq_end,
           "want the SYN-ACK first, then its SYN", segs)
    check_close(segs, "c")


@scenario("synack_before_syn", check_synack_before_syn)
def make_synack_before_syn(out: Path) -> list[Path]:
    """A multi-queue capture: the kernel connection of handshake_fourway_client_close
    captured on c0, each direction on its own queue, the client->server queue's
    clock 300 µs late (editcap -t on that direction, then mergecap by time): the
    SYN-ACK lands ~280 µs before its SYN, and each reply before what it answers."""
    path = out / "synack_before_syn.pcap"
    whole, c2s, s2c = (out / f"synack_before_syn.{part}.pcap" for part in ("whole", "c2s", "s2c"))
    exchange(whole, SERVER_FOURWAY, CLIENT_FOURWAY)
    for part, host in ((c2s, CLIENT4), (s2c, SERVER4)):
        subprocess.run(["tcpdump", "-r", str(whole), "-w", str(part), "src", "host", host],
                       check=True, capture_output=True, timeout=60)
    editcap("-t", str(SKEW), str(c2s), str(c2s) + ".late")
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(path), str(c2s) + ".late", str(s2c)],
                   check=True, capture_output=True, timeout=60)
    for tmp in (whole, c2s, s2c, Path(str(c2s) + ".late")):
        tmp.unlink()
    return [path]


def check_one_sided(paths: list[Path]) -> None:
    for path, who in zip(paths, ("c", "s"), strict=True):
        segs = load(path)
        expect(all(side(s) == who for s in segs), f"{path.name}: want only {who} -> segments", segs)
        expect(len([s for s in segs if s.fin]) == 1, f"{path.name}: want one FIN", segs)


@scenario("one_sided", check_one_sided)
def make_one_sided(out: Path) -> list[Path]:
    """One kernel connection (request, reply, client closes first, server 300 ms
    later) captured twice at once on c0, each capture with a BPF filter for one
    direction only, as asymmetric routing shows it: one_sided_client.pcap has
    only client -> server, one_sided_server.pcap only server -> client."""
    paths = [out / "one_sided_client.pcap", out / "one_sided_server.pcap"]
    with Lab() as lab:
        server = lab.peer(lab.server, {"listeners": [listener(SERVER_FOURWAY)]})
        with lab.capture(paths[0], bpf=f"tcp and src host {CLIENT4}"), \
                lab.capture(paths[1], bpf=f"tcp and src host {SERVER4}"):
            lab.peer(lab.client, {"clients": [{"steps": CLIENT_FOURWAY}]}).finish()
            server.finish()
    return paths


# --------------------------------------------------------------------------
# 30-: crafted with scapy
# --------------------------------------------------------------------------


def crafted() -> Any:
    """The scapy-based module, imported only when a crafted case is made."""
    try:
        from . import crafted as mod
    except ImportError:
        import crafted as mod  # type: ignore[no-redef]
    return mod


def check_crafted(want: list[str]) -> Callable[[list[Path]], None]:
    def check(paths: list[Path]) -> None:
        segs = load(paths[0])
        got = [f"{side(s)}:{s.tag}" for s in segs]
        expect(got == want, f"want {want}", segs)

    return check


@scenario("crafted_rst_answers_synack", check_crafted(["c:S", "s:S.", "c:R"]))
def make_crafted_rst(out: Path) -> list[Path]:
    """Crafted (scapy): SYN, SYN-ACK, then RST from the client with
    seq = the SYN-ACK's ack (as a client that no longer wants the connection)."""
    return [crafted().rst_answers_synack(out / "crafted_rst_answers_synack.pcap")]


@scenario("crafted_synrcvd_fin", check_crafted(
    ["c:S", "s:S.", "s:F.", "c:.", "c:.", "c:F.", "s:."]))
def make_crafted_synrcvd_fin(out: Path) -> list[Path]:
    """Crafted (scapy), seen at the server: SYN, SYN-ACK, the server's FIN+ACK
    before the client's ACK arrives (SYN_RCVD -> FIN_WAIT_1), the client's ACK
    of the SYN-ACK, its ACK of the FIN, its FIN, the server's last ACK."""
    return [crafted().synrcvd_fin(out / "crafted_synrcvd_fin.pcap")]


def check_encapsulations(paths: list[Path]) -> None:
    """Our reader sees none of the wrapped segments (it reads Ethernet, VXLAN and one VLAN tag):
    the check is that every frame is there, 11 per copy."""
    cases = len(crafted().encapsulations_cases())
    expect(pcapread.read(paths[0]).frames == 11 * cases, f"want {11 * cases} frames")


@scenario("crafted_encapsulations", check_encapsulations)
def make_crafted_encapsulations(out: Path) -> list[Path]:
    """Crafted (scapy) from kernel traffic: the connections of handshake_fourway_client_close and ipv6
    re-wrapped once per encapsulation and link type this kernel cannot make (MPLS, PBB, VN-Tag, PPPoE,
    GRE, gretap, ERSPAN II/III, GRE in UDP, Geneve, GTP-U, Teredo, AYIYA, IP in IP, QinQ, PPP, 802.11,
    radiotap, FDDI, NFLOG) and the copy in VXLAN, in one pcapng (an interface per link type)."""
    return [crafted().encapsulations(out / "crafted_encapsulations.pcapng", HERE)]


@scenario("crafted_fin_in_syn_sent", check_crafted(
    ["c:S", "c:F", "s:S.", "c:F.", "s:.", "s:F.", "c:."]))
def make_crafted_fin_in_syn_sent(out: Path) -> list[Path]:
    """Crafted (scapy; a kernel never sends FIN in SYN_SENT): the client's FIN
    (no ACK) before the SYN-ACK, its FIN+ACK again after it, then the server's
    ACK, FIN+ACK and the client's last ACK."""
    return [crafted().fin_in_syn_sent(out / "crafted_fin_in_syn_sent.pcap")]


def check_ack_after_fin(paths: list[Path]) -> None:
    segs = load(paths[0])
    check_handshake(segs)
    fin, ack = segs[6], segs[7]
    expect(is_client(fin) and fin.fin and is_client(ack) and ack.tag == "." and ack.seq == fin.seq
           and ack.ts > fin.ts, "want the client's FIN, then its ACK with the FIN's seq", segs)


@scenario("crafted_ack_after_fin", check_ack_after_fin)
def make_crafted_ack_after_fin(out: Path) -> list[Path]:
    """Crafted from the kernel's handshake_fourway_client_close.pcap by swapping
    frames 7 and 8 (and their times): the client's ACK of the reply now comes
    61 µs after its FIN, as a reordering capture shows it. Not a keep-alive."""
    source = out / "handshake_fourway_client_close.pcap"
    if not source.exists():
        source = HERE / source.name
    return [crafted().swap_frames(source, out / "crafted_ack_after_fin.pcap", 7, 8)]


SCENARIOS: tuple[str, ...] = tuple(REGISTRY)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def run_one(sc: Scenario, out_dir: Path) -> list[Path]:
    """Make and check one scenario, retrying timing failures."""
    last: Exception | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            paths = sc.make(out_dir)
            sc.check(paths)
        except (CheckFailed, netlab.LabError, subprocess.SubprocessError) as exc:
            last = exc
            print(f"  {sc.name}: attempt {attempt} failed: {exc}", file=sys.stderr)
            continue
        return paths
    raise GenerationError(f"{sc.name}: failed {ATTEMPTS} times: {last}")


def generate(names: list[str] | None, out_dir: Path) -> list[Path]:
    """Make the named scenarios (all if None) in ``out_dir``; return the files."""
    if os.geteuid() != 0:
        raise PermissionError("generate.py needs root (namespaces, tcpdump)")
    unknown = sorted(set(names or []) - set(REGISTRY))
    if unknown:
        raise ValueError(f"unknown scenarios: {', '.join(unknown)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    try:
        for name in names or SCENARIOS:
            start = time.monotonic()
            paths = run_one(REGISTRY[name], out_dir)
            for path in paths:
                path.chmod(0o644)  # dumpcap writes 0600
            took = time.monotonic() - start
            print(f"{name}: {', '.join(p.name for p in paths)} ({took:.1f} s)",
                  file=sys.stderr)
            made += paths
    finally:
        netlab.cleanup_all()
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=SCENARIOS,
                        help="make only these scenarios")
    parser.add_argument("--list", action="store_true", help="list scenarios")
    args = parser.parse_args(argv)
    if args.list:
        for name in SCENARIOS:
            print(f"{name:32} {' '.join(REGISTRY[name].doc.split())}")
        return 0
    netlab.install_signal_handlers()
    try:
        generate(args.only, args.out)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; namespaces removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write notebooks/tcp_handshake_and_teardown.ipynb from the cells below.

The notebook is generated so that it can be reviewed as plain Python and
stays clean: no outputs are stored, cell ids are fixed, so regenerating it
gives the same file. Run it after editing a cell:

    python3 notebooks/build_notebook.py

tests/test_notebook.py executes the notebook from a fresh kernel and checks
that the committed file is what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "tcp_handshake_and_teardown.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """\
# How TCP opens and closes a connection — from real captures

This lesson reads real packet captures, made by the Linux kernel's own TCP stack (see
`samples/README.md`), with the `synfin` analyzer. For every connection the analyzer runs two
RFC 9293 state machines, one per endpoint, and the **ladder diagram** draws what it decided:
the client's line on the left, the server's on the right, time running down, one slanted arrow
per segment, and each endpoint's state written beside its line where it changes.

Read each ladder top to bottom. Arrow labels give the flags, the sequence number (relative to
the sender's initial sequence number, so the SYN is `seq 0`), the acknowledgement number and the
payload length; the left column gives the frame number and the time since the first segment.
Long pauses are cut out and marked `≈ 1.0 s`."""),
    ("code", """\
import importlib.util
import os
import sys
from pathlib import Path


def find_samples() -> Path:
    # The sample captures: $SYNFIN_SAMPLES if set, else samples/ in the synfin checkout this notebook
    # runs in (the working directory or a parent), else next to the installed analyzer package.
    if os.environ.get("SYNFIN_SAMPLES"):
        places = [Path(os.environ["SYNFIN_SAMPLES"])]
    else:
        places = [p / "samples" for p in [Path.cwd(), *Path.cwd().parents]]
        spec = importlib.util.find_spec("analyzer")
        if spec is not None and spec.origin is not None:
            places.append(Path(spec.origin).resolve().parent.parent / "samples")
    for place in places:
        if (place / "handshake_fourway_client_close.pcap").exists():
            return place.resolve()
    raise FileNotFoundError(
        "the synfin sample captures (samples/*.pcap) are not in " + ", ".join(map(str, places))
        + ": run this notebook in a synfin checkout, or set SYNFIN_SAMPLES to its samples/ folder")


SAMPLES = find_samples()  # the bundled captures
if (SAMPLES.parent / "analyzer" / "__init__.py").exists():
    sys.path.insert(0, str(SAMPLES.parent))  # the checkout's analyzer, even if another is installed"""),
    ("code", """\
import pandas as pd
from IPython.display import Image, display

import analyzer
from analyzer.ladder import build
from analyzer.ladder_plot import to_bytes
from analyzer.ladder_text import text

pd.set_option("display.width", 200)
pd.set_option("display.max_colwidth", 80)
COLUMNS = ["client", "server", "open", "close", "half_close", "active_closer", "reset_by",
           "reset_state", "states_client", "states_server"]


def load(name, **options):
    \"\"\"Every connection of samples/NAME, with its segments kept for the ladder.\"\"\"
    return list(analyzer.analyze(SAMPLES / name, keep_segments=True, **options))


def table(conns):
    \"\"\"The connection table, as `synfin analyze` prints it.\"\"\"
    return analyzer.to_dataframe(conns)[COLUMNS]


def ladder(conn, **options):
    \"\"\"Draw one connection inline (options: time="sequential", absolute=True, ...).\"\"\"
    display(Image(data=to_bytes(build(conn, **options), "png")))"""),
    ("md", """\
## 1. The three-way handshake, and the seq/ack arithmetic

A client connects: `connect()` sends a **SYN** carrying its *initial sequence number* (ISN) `x`,
chosen fresh for every connection. The listening server answers **SYN+ACK**: its own ISN `y`, and
`ack = x + 1`. The client completes with an **ACK**: `seq = x + 1`, `ack = y + 1`. Three segments,
and both sides know both ISNs.

Why `+ 1`? An acknowledgement number names *the next sequence number the sender expects*, and
**the SYN occupies one sequence number** of its own, so that it can be acknowledged (and
retransmitted) like data. The first data byte therefore has sequence number `x + 1`: relative
numbers start at 0 for the SYN and 1 for the first byte. A segment with `seq a` and `len n`
carries bytes `a … a+n-1` and is acknowledged with `ack a+n`. The **FIN**, too, occupies one
sequence number: after a FIN at `seq f`, the peer acknowledges `f + 1`.

States: the client goes `SYN_SENT` when it sends its SYN and `ESTABLISHED` when the SYN+ACK
arrives; the server (listening, `LISTEN`) goes `SYN_RCVD` on the SYN and `ESTABLISHED` when the
final ACK arrives."""),
    ("code", """\
conns = load("handshake_fourway_client_close.pcap")
table(conns)"""),
    ("code", "ladder(conns[0])"),
    ("md", """\
The same arithmetic on the raw numbers of this capture (the ISNs are random, so they differ each
time the sample is regenerated; the differences do not):"""),
    ("code", """\
conn = conns[0]
syn, synack, ack = conn.notes[:3]
isn_c, isn_s = conn.client.isn, conn.server.isn
print(f"client ISN x = {isn_c}, server ISN y = {isn_s}")
print(f"SYN+ACK: ack = {synack.ack} = x + {synack.ack - isn_c}")
print(f"ACK:     seq = {ack.seq} = x + {ack.seq - isn_c}, ack = {ack.ack} = y + {ack.ack - isn_s}")
fin = next(n for n in conn.notes if n.flags & 0x01 and n.from_client)
answer = next(n for n in conn.notes if n.frame > fin.frame and not n.from_client)
print(f"client FIN at seq x + {fin.seq - isn_c}; the server's next segment acks x + {answer.ack - isn_c}")
assert synack.ack == isn_c + 1 and ack.ack == isn_s + 1 and answer.ack == fin.seq + 1"""),
    ("md", """\
## 2. Why closing takes four segments (or three)

TCP is full duplex, and each direction is closed on its own: a **FIN** says "I will send no
more", nothing about receiving. Above, the client closed first (it is the *active closer*):

1. client `FIN` → client `FIN_WAIT_1`; on receiving it the server goes `CLOSE_WAIT`;
2. the server's kernel **ACKs the FIN at once** → client `FIN_WAIT_2`;
3. the server's *application* reads end-of-file and calls `close()` — some time later (here the
   sample's server sleeps 300 ms: see the space on the server's `CLOSE_WAIT` band) — and only
   then is the server's `FIN` sent → server `LAST_ACK`, client `TIME_WAIT`;
4. client `ACK` → server `CLOSED`.

Four segments, because the ACK of the first FIN (sent by the kernel) and the second FIN (sent
when the application closes) are two separate events. When the application closes *at once*, the
kernel can put both in one segment: **FIN, FIN+ACK, ACK** — a three-way close. The active closer
then goes straight from `FIN_WAIT_1` to `TIME_WAIT`: the FIN it receives also acknowledges its own
(note 2 of RFC 9293's Figure 5), so it never sits in `FIN_WAIT_2`."""),
    ("code", """\
conns = load("threeway_close.pcap")
display(table(conns))
ladder(conns[0])"""),
    ("md", """\
Who closes first decides who ends in `TIME_WAIT`. An HTTP/1.0 style server that closes after its
reply is the active closer, so the `TIME_WAIT` is on the server:"""),
    ("code", """\
conns = load("fourway_server_close.pcap")
display(table(conns))
ladder(conns[0])"""),
    ("md", """\
## 3. Half-close

Because each direction closes separately, a side may close its sending direction and keep
reading: `shutdown(fd, SHUT_WR)`. The client here sends its request, then its FIN, and the server
goes on sending data for a while — the client, in `FIN_WAIT_2`, still receives and acknowledges
it. This is how a client says "that was the whole request" without giving up the answer (think of
`rsh`, or piping a file to a server that replies when it has seen all of it). The analyzer labels a
connection `half_close` when data flowed towards the side that had already sent its FIN and was
acknowledged by it.

The same ladder as text, as `synfin ladder --text` prints it for a ticket or a lecture note:"""),
    ("code", """\
conns = load("half_close.pcap")
display(table(conns))
print(text(build(conns[0], time="sequential")))"""),
    ("md", """\
## 4. Simultaneous open

Two endpoints that each `connect()` to the other's port at the same moment both send a **bare
SYN**; the SYNs cross in flight (the sample puts a 50 ms delay between the ends so that they do).
Each side then receives a SYN while in `SYN_SENT`: it goes `SYN_RCVD` and answers with
**SYN+ACK**; when its own SYN is acknowledged it is `ESTABLISHED`. There is no listener and no
client/server in the usual sense — one connection, opened from both ends (RFC 9293 §3.5,
Figure 8). NAT hole punching relies on it.

In the ladder, the first SYN arrives *after* the second was sent: the arrows cross."""),
    ("code", """\
conns = load("simultaneous_open.pcap")
display(table(conns))
ladder(conns[0])"""),
    ("md", """\
## 5. Simultaneous close, through CLOSING

If both applications close at the same moment, both FINs are in flight at once. Each side sent its
FIN (`FIN_WAIT_1`) and then receives the peer's FIN *before its own FIN has been acknowledged*:
that is the `CLOSING` state, the only way into it. When the ACK of its FIN arrives, each side goes
to `TIME_WAIT`: here **both** ends wait 2·MSL, and the analyzer labels the close `simultaneous`
with active closer `both`."""),
    ("code", """\
conns = load("simultaneous_close.pcap")
display(table(conns))
ladder(conns[0])"""),
    ("md", """\
## 6. RST: reject versus abort

A **RST** says "this connection does not exist (any more)". It is used in two different ways:

* **Reject.** A SYN to a port where nothing listens is answered with **RST+ACK**; its ack
  (`x + 1`) makes it acceptable to the client in `SYN_SENT`, which goes back to `CLOSED` and
  reports *connection refused*. Nothing was ever established: the open label is `refused`, the
  server's machine never changed state.
* **Abort.** A RST on an established connection tears it down at once, with no FIN exchange,
  no `TIME_WAIT`, and data still in flight discarded; the peer's next call fails with *connection
  reset by peer*. Applications cause it with `SO_LINGER {on, 0}` before `close()`, and the kernel
  sends one by itself when an application closes a socket that still holds unread received data
  (RFC 1122 §4.2.2.13), or when data arrives for a socket that has already been closed."""),
    ("code", """\
refused = load("refused.pcap")
display(table(refused))
ladder(refused[0])"""),
    ("code", """\
aborts = {name: load(name)[0] for name in
          ["reset_linger_client.pcap", "reset_unread_data.pcap", "reset_after_close.pcap"]}
display(pd.concat({name: table([conn]) for name, conn in aborts.items()}))
ladder(aborts["reset_unread_data.pcap"])"""),
    ("md", """\
## 7. TIME_WAIT: why the active closer waits 2·MSL

The side that sent the first FIN ends in `TIME_WAIT` and stays there for twice the *maximum
segment lifetime* (MSL) before the connection is really gone. Two reasons (RFC 9293 §3.6):

1. **The last ACK may be lost.** The peer, in `LAST_ACK`, would then retransmit its FIN; an
   endpoint that had already forgotten the connection would answer with a RST, and the peer would
   report an error for a connection that closed cleanly. In `TIME_WAIT` the FIN is simply
   acknowledged again.
2. **Old duplicates must die.** Segments of this connection may still be wandering in the
   network. If a new connection reused the same four-tuple (addresses and ports) at once, a
   delayed old segment could be taken for new data. Waiting 2·MSL lets every such segment expire
   (one MSL for a segment to get there, one for the answer to come back).

RFC 793 suggested an MSL of 2 minutes; Linux uses a fixed 60 s `TIME_WAIT`, which is the
analyzer's default `msl=30`. The wait is the *active closer's*: the side that closes first pays.
Linux also lets a new SYN into a four-tuple that is in `TIME_WAIT` when its sequence numbers (or
timestamps) are newer than the old connection's, which is what happened here: the same client port
connected twice in a row, and the server, the active closer, accepted the second SYN."""),
    ("code", """\
conns = load("port_reuse.pcap")
display(table(conns))
for conn in conns:
    ladder(conn)"""),
    ("md", """\
The analyzer runs the 2·MSL timer on the capture's own clock: a `TIME_WAIT` ends (a transition
to `CLOSED` with no frame: the timer) only when later packets of the capture pass its deadline. No
sample runs for a minute after its close, so shorten the MSL to watch the timer fire:"""),
    ("code", """\
short = load("busy.pcap", msl=0.05)
conn = next(c for c in short if c.client.history and c.client.history[-1].frame is None)
print([(str(t.state), t.frame) for t in conn.client.history])
ladder(conn)"""),
    ("md", """\
## 8. Piles of TIME_WAIT or CLOSE_WAIT on a server

`ss -tan state time-wait` or `netstat -tan` on a busy server often shows thousands of sockets in
one state. What they mean depends on which state:

* **TIME_WAIT piles** are normal for a server that closes first (HTTP/1.0 without keep-alive, or a
  server that hangs up on idle clients). Each costs a little memory and, for *outgoing*
  connections, a local port for 60 s — a problem only at very high connection rates. Remedies:
  let the client close first, reuse connections (keep-alive, pooling); `SO_REUSEADDR` lets a
  restarted server listen again despite old `TIME_WAIT`s.
* **CLOSE_WAIT piles** are a bug. `CLOSE_WAIT` means the peer has closed and *our application has
  not called `close()`*. The kernel cannot leave this state by itself; a socket that stays there
  is a descriptor leak (an error path that forgets to close, a worker blocked forever). Look at the
  process owning them.

Here is a capture of such a server: the client closed, the server acknowledged the FIN and never
closed its socket during the capture."""),
    ("code", """\
conns = load("close_wait_left_open.pcap")
display(table(conns))
ladder(conns[0])"""),
    ("md", """\
And the final states over a busy capture (340 connections of six kinds): who ends where tells
who closed first."""),
    ("code", """\
busy = analyzer.to_dataframe(analyzer.analyze(SAMPLES / "busy.pcap"))  # no segments needed: the compiled engine
seen = busy[["open", "close", "active_closer", "final_client", "final_server"]].astype("string").fillna("-")
pd.crosstab([seen["open"], seen["close"], seen["active_closer"]], [seen["final_client"], seen["final_server"]])"""),
    ("md", """\
## 9. Try it yourself

* `synfin ladder samples/syn_lost_once.pcap`: the first SYN is lost; find the retransmission
  (dashed) and the cut pause of about one second (the initial retransmission timeout).
* `synfin ladder samples/keepalive.pcap --time sequential`: keep-alive probes (dotted) carry
  `seq` one below the next byte — why does the peer answer them?
* `synfin ladder samples/midstream.pcap`: a capture that starts after the handshake. How does the
  analyzer know the states?
* `synfin ladder samples/crafted_synrcvd_fin.pcap --text`: a server that closes in `SYN_RCVD`."""),
    ("code", """\
conns = load("syn_lost_once.pcap")
ladder(conns[0])"""),
]


def build_notebook() -> NotebookNode:
    """The notebook, cells in order, with fixed ids and no outputs."""
    cells = []
    for index, (kind, source) in enumerate(CELLS):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell["id"] = f"cell-{index:02d}"
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })


def main() -> int:
    nb = build_notebook()
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    print(NOTEBOOK)
    return 0


if __name__ == "__main__":
    sys.exit(main())

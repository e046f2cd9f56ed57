"""Cross-checks against the tools users compare us with: tcptrace and tshark.

On every sample: the number of connections equals tcptrace's and tshark's
(both split a reused 4-tuple, as we do), and tcptrace's "(reset)" verdicts
are among ours. Skipped with a reason where a peer is not installed.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import analyzer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPTURES = sorted(p for p in SAMPLES.glob("*") if p.suffix in (".pcap", ".pcapng"))
CONN_LINE = re.compile(r"^\s*\d+: (\S+) - (\S+) \(\w+2\w+\)\s+\d+>\s+\d+<\s*(.*)$")


def tcptrace(path: Path) -> list[tuple[str, str, str]]:
    run = subprocess.run(["tcptrace", "-n", str(path)], capture_output=True, text=True, timeout=60)
    if "did not understand link format" in run.stdout + run.stderr:
        pytest.skip("tcptrace cannot read this link type (it predates Linux cooked v2)")
    run.check_returncode()
    return [m.groups() for line in run.stdout.splitlines() if (m := CONN_LINE.match(line))]


def tshark_conversations(path: Path) -> int:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-q", "-z", "conv,tcp"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return sum(1 for line in out.splitlines() if "<->" in line)


def ours(path: Path) -> list[analyzer.Connection]:
    return list(analyzer.analyze(path))  # Records from the compiled engine (or Connections without it)


def four_tuple(conn: analyzer.Connection) -> frozenset:
    return frozenset({(conn.client.addr, conn.client.port), (conn.server.addr, conn.server.port)})


#: where tcptrace's count is not ours: capture -> (tcptrace's connections, ours), and why
TCPTRACE_DIFFERS = {
    # tcptrace takes the forged RST+ACK (frame 2) as the end of the connection and the resent SYN (frame 3) as
    # the start of another, both "reset"; the client's kernel ignored that RST (its ACK is not ISN + 1) and
    # went on, and so do we: one connection, no reset
    "rst_injected.pcap": (2, 1),
    # tcptrace splits it in two where RFC 9293 sees one: the client's FIN sent in SYN_SENT ends tcptrace's
    # first connection and the SYN-ACK starts a second one ("unidirectional", then "c2d")
    "crafted_fin_in_syn_sent.pcap": (2, 1),
}


@pytest.mark.skipif(not shutil.which("tcptrace"), reason="tcptrace is not installed (apt-get install tcptrace)")
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_connection_count_matches_tcptrace(path):
    if path.suffix == ".pcapng":
        pytest.skip("tcptrace does not read pcapng")
    mine = ours(path)
    if any(c.tunnel for c in mine):
        pytest.skip("tcptrace does not look inside tunnels (tshark does: the next test)")
    theirs = tcptrace(path)
    if path.name in TCPTRACE_DIFFERS:
        assert (len(theirs), len(mine)) == TCPTRACE_DIFFERS[path.name]
        return
    assert len(mine) == len(theirs)
    resets_theirs = sum(1 for *_, verdict in theirs if "reset" in verdict)
    resets_mine = sum(1 for c in mine if c.reset_by is not None)
    assert resets_mine >= resets_theirs


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_connection_count_matches_tshark_conversations(path):
    """tshark, like us, splits a reused 4-tuple into two conversations."""
    mine = ours(path)
    assert len(mine) == tshark_conversations(path)
    if path.name.startswith("port_reuse"):
        assert len({four_tuple(c) for c in mine}) == 1

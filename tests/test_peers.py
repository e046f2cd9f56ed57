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
    return list(analyzer.analyze(path))


def four_tuple(conn: analyzer.Connection) -> frozenset:
    return frozenset({(conn.client.addr, conn.client.port), (conn.server.addr, conn.server.port)})


#: connections tcptrace splits in two where RFC 9293 sees one: the client's FIN sent in SYN_SENT ends
#: tcptrace's first connection and the SYN-ACK starts a second one ("unidirectional", then "c2d")
TCPTRACE_SPLITS = {"crafted_fin_in_syn_sent.pcap": 1}


@pytest.mark.skipif(not shutil.which("tcptrace"), reason="tcptrace is not installed (apt-get install tcptrace)")
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_connection_count_matches_tcptrace(path):
    if path.suffix == ".pcapng":
        pytest.skip("tcptrace does not read pcapng")
    theirs = tcptrace(path)
    mine = ours(path)
    assert len(mine) == len(theirs) - TCPTRACE_SPLITS.get(path.name, 0)
    resets_theirs = sum(1 for *_, verdict in theirs if "reset" in verdict)
    resets_mine = sum(1 for c in mine if c.reset is not None)
    assert resets_mine >= resets_theirs


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_connection_count_matches_tshark_conversations(path):
    """tshark, like us, splits a reused 4-tuple into two conversations."""
    mine = ours(path)
    assert len(mine) == tshark_conversations(path)
    if path.name.startswith("port_reuse"):
        assert len({four_tuple(c) for c in mine}) == 1

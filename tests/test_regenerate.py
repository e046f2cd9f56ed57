"""Make a few scenarios afresh with today's kernel, and check the labels.

The committed samples prove the analyzer against old files; this proves it
against the kernel it runs on. It needs root and network namespaces, and is
skipped with the reason otherwise. The labels (not the frame numbers, which
vary with timing) must equal those of the committed expected outputs.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import analyzer
from tests.netns import namespaces_unavailable

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SCENARIOS = ["threeway_close", "simultaneous_close", "refused", "half_close", "reset_linger_client",
             "fourway_server_close", "rst_injected", "port_reuse", "starts_at_synack"]
LABEL_KEYS = ("open", "close", "half_close", "active_closer", "reset_by", "reset_state")


pytestmark = [pytest.mark.kernel]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    reason = namespaces_unavailable("tcpdump", "nft", "ethtool")
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("regenerated")
    subprocess.run([sys.executable, str(SAMPLES / "generate.py"), "--out", str(out), "--only", *SCENARIOS],
                   check=True, timeout=600, capture_output=True, text=True)
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_fresh_capture_gets_the_committed_labels(fresh, name):
    expected = json.loads((SAMPLES / f"{name}.expected.json").read_text())["connections"]
    conns = [analyzer.record(c) for c in analyzer.analyze(fresh / f"{name}.pcap")]
    assert len(conns) == len(expected)
    for got, want in zip(conns, expected, strict=True):
        assert {k: got[k] for k in LABEL_KEYS} == {k: want[k] for k in LABEL_KEYS}
        assert got["final"] == want["final"]
        assert [s for s, _, _ in got["states"]["client"]] == [s for s, _ in want["states"]["client"]]
        assert [s for s, _, _ in got["states"]["server"]] == [s for s, _ in want["states"]["server"]]

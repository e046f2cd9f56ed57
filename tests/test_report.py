"""`synfin report`: the census of states over time and the findings, on kernel-made samples.

Expected values come from the samples' manifests and hand-checked expected files
(samples/EXPECTED.md), not from the report's output: busy.pcap's manifest says
80 connections to port 9102 closed by the server first (80 TIME_WAIT on the
server side, all within 2*MSL of the capture's end), 100 to 9101 and 50 to 9105
closed by the client first, 40 client and 40 server linger-0 resets (9103,
9104), 30 SYNs to the closed port 9109.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.findings import Limits, Tally, findings
from analyzer.report_cli import build, to_json
from analyzer.timeline import MAX_BINS, TOTAL, Census
from samples import pcapread

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BUSY_SERVER = "10.77.0.2"


def kinds(name: str) -> list[tuple[str, str, int]]:
    report = build([str(SAMPLES / name)])
    return [(f.kind, f.endpoint, f.count) for f in report.findings]


def finding(name: str, kind: str) -> dict:  # type: ignore[type-arg]
    found = [f for f in to_json(build([str(SAMPLES / name)]))["findings"] if f["kind"] == kind]
    assert len(found) == 1, found
    return found[0]


def test_busy_findings_match_the_manifest() -> None:
    manifest = json.loads((SAMPLES / "busy.manifest.json").read_text())
    port = {kind: f"{BUSY_SERVER}:{p}" for kind, p in manifest["ports"].items()}
    count = manifest["kinds"]
    assert sorted(kinds("busy.pcap")) == sorted([
        ("time-wait-pile", port["client_close"], count["client_close"]),
        ("time-wait-pile", port["server_close"], count["server_close"]),
        ("time-wait-pile", port["half_close"], count["half_close"]),
        ("refused", port["refused"], count["refused"]),
        ("aborts", port["client_reset"], count["client_reset"]),
        ("aborts", port["server_reset"], count["server_reset"]),
    ])


def test_time_wait_pile_names_the_side_that_closed_first() -> None:
    report = to_json(build([str(SAMPLES / "busy.pcap")]))
    piles = {f["endpoint"]: f["evidence"] for f in report["findings"] if f["kind"] == "time-wait-pile"}
    server = piles[f"{BUSY_SERVER}:9102"]
    assert server["side"] == "server" and server["peak"] == 80 and server["at_end"] == 80
    assert piles[f"{BUSY_SERVER}:9101"]["side"] == "client"
    # the capture lasts ~3 s, under 2*MSL: every TIME_WAIT is still there when it ends, so the peak is at the end
    capture = pcapread.read(SAMPLES / "busy.pcap")
    last_ts = max(seg.ts for seg in capture.segments)
    assert server["peak_at"] <= last_ts + 1e-6
    assert "tcp_fin_timeout does NOT shorten" in next(
        f["advice"] for f in report["findings"] if f["endpoint"] == f"{BUSY_SERVER}:9102")


def test_busy_census_at_the_end_counts_the_time_wait_left() -> None:
    report = to_json(build([str(SAMPLES / "busy.pcap")]))
    # client-first closes: 100 (client_close) + 50 (half_close); server-first: 80
    assert report["at_end"] == {"server": {"TIME_WAIT": 80}, "client": {"TIME_WAIT": 150}}
    assert report["census"]["server"]["TIME_WAIT"]["peak"] == 80


def test_time_wait_threshold_is_an_option() -> None:
    report = build([str(SAMPLES / "busy.pcap")], min_pile=90)
    assert [f.endpoint for f in report.findings if f.kind == "time-wait-pile"] == [f"{BUSY_SERVER}:9101"]


def test_close_wait_leak_with_its_age() -> None:
    found = finding("close_wait_left_open.pcap", "close-wait-leak")
    assert (found["endpoint"], found["count"], found["evidence"]["side"]) == ("10.77.0.2:9000", 1, "server")
    # EXPECTED: server CLOSE_WAIT at frame 8 (the client's FIN); the capture ends at frame 9
    segs = pcapread.read(SAMPLES / "close_wait_left_open.pcap").segments
    assert found["evidence"]["max_age"] == pytest.approx(segs[8].ts - segs[7].ts, abs=2e-6)
    assert found["examples"] == [{"id": 0, "frame": 8}]


def test_listen_overflow() -> None:
    found = finding("listen_overflow.pcap", "listen-overflow")
    # EXPECTED: 44804's third ACK did not take (SYN-ACK resent at frame 22); the other three completed
    assert found["count"] == 1 and found["evidence"]["clean_handshakes"] == 3
    assert found["evidence"]["synack_retransmits"] == 1
    assert found["examples"] == [{"id": 3, "frame": 22}]
    assert "somaxconn" in found["advice"]


def test_a_lost_syn_alone_is_no_overflow() -> None:
    assert kinds("syn_lost_once.pcap") == []  # no other handshake completed to that endpoint


@pytest.mark.parametrize(("name", "sender", "state"), [
    ("reset_linger_client.pcap", "client", "ESTABLISHED"),
    ("reset_linger_server.pcap", "server", "ESTABLISHED"),
    ("reset_unread_data.pcap", "client", "ESTABLISHED"),
    ("reset_after_close.pcap", "client", "FIN_WAIT_2"),
])
def test_aborts_name_sender_and_state(name: str, sender: str, state: str) -> None:
    found = finding(name, "aborts")
    assert (found["count"], found["evidence"]["sender"], found["evidence"]["state"]) == (1, sender, state)


@pytest.mark.parametrize(("name", "kind"), [
    ("refused.pcap", "refused"), ("unanswered.pcap", "unanswered"), ("keepalive.pcap", "keepalive")])
def test_one_connection_findings(name: str, kind: str) -> None:
    assert kinds(name) == [(kind, "10.77.0.2:9000", 1)]


QUIET = ["fourway_server_close.pcap", "threeway_close.pcap", "half_close.pcap", "simultaneous_close.pcap",
         "simultaneous_open.pcap", "port_reuse.pcap", "fastopen.pcap", "ipv6.pcap", "midstream.pcap",
         "one_sided_client.pcap", "one_sided_server.pcap", "starts_at_synack.pcap", "synack_before_syn.pcap",
         "rst_injected.pcap", "incomplete_handshake.pcap", "vlan_reuse.pcap", "vxlan.pcap",
         "crafted_encapsulations.pcapng", "any_interface.pcap", "dumpcap_pcapng.pcapng",
         "handshake_fourway_client_close.pcap", "handshake_fourway_client_close.pcapng",
         # crafted: odd segments in otherwise normal connections; the RST that answers a SYN-ACK ends a
         # handshake (close "none"), not an established connection, so it is no abort
         "crafted_ack_after_fin.pcap", "crafted_fin_in_syn_sent.pcap", "crafted_rst_answers_synack.pcap",
         "crafted_synrcvd_fin.pcap"]


@pytest.mark.parametrize("name", QUIET)
def test_no_false_finding(name: str) -> None:
    assert kinds(name) == []


def rec(server: str, client_steps: list, server_steps: list, ages: tuple[float, float]) -> dict:  # type: ignore[type-arg]
    return {"server": server, "states": {"client": client_steps, "server": server_steps},
            "final_age": {"client": ages[0], "server": ages[1]}}


def test_census_counts_intervals_at_sample_points() -> None:
    census = Census()
    # two connections; times chosen on sample points (multiples of 1024 us)
    t = 1024e-6
    census.add(rec("s:1", [["SYN_SENT", 1 * t, 1], ["ESTABLISHED", 2 * t, 2], ["FIN_WAIT_1", 5 * t, 5],
                           ["TIME_WAIT", 6 * t, 6]], [["SYN_RCVD", 1 * t, 1], ["ESTABLISHED", 3 * t, 3],
                                                      ["CLOSE_WAIT", 5 * t, 5], ["CLOSED", 6 * t, 6]], (4 * t, 0.0)))
    census.add(rec("s:1", [["SYN_SENT", 2 * t, 7], ["ESTABLISHED", 3 * t, 8]],
                   [["SYN_RCVD", 2 * t, 7], ["ESTABLISHED", 4 * t, 9]], (7 * t, 6 * t)))
    times, counts = census.series("s:1", "client")
    assert [round(x / t) for x in times] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert counts["SYN_SENT"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert counts["ESTABLISHED"] == [0, 1, 2, 2, 1, 1, 1, 1, 1, 1]
    assert counts["TIME_WAIT"] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # still there at the end (6 + 4 = 10)
    assert census.end_census("s:1", "client") == {"ESTABLISHED": 1, "TIME_WAIT": 1}
    assert census.end_census("s:1", "server") == {"ESTABLISHED": 1}
    peak = census.peaks(TOTAL, "server")["ESTABLISHED"]
    assert (peak.count, round(peak.at / t)) == (2, 4)


def test_census_memory_is_bounded_by_bins_not_connections() -> None:
    census = Census()
    for i in range(20_000):  # one connection a second for 20,000 s, each 0.5 s in ESTABLISHED
        census.add(rec("s:1", [["ESTABLISHED", float(i), 1], ["CLOSED", i + 0.5, 2]],
                       [["ESTABLISHED", float(i), 1], ["CLOSED", i + 0.5, 2]], (0.0, 0.0)))
    assert all(len(bins) <= MAX_BINS + 1 for states in census.changes.values() for bins in states.values())
    times, counts = census.series("s:1", "server")
    assert len(times) <= MAX_BINS + 1 and max(counts["ESTABLISHED"]) <= 1


def test_findings_over_no_records() -> None:
    assert findings(Tally(), Census(), Limits()) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "analyzer", "report", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_text_and_json(tmp_path: Path) -> None:
    text = run_cli(str(SAMPLES / "close_wait_left_open.pcap"))
    assert text.returncode == 0
    assert "[close-wait-leak] 10.77.0.2:9000" in text.stdout and "advice: " in text.stdout
    out = tmp_path / "r.json"
    assert run_cli("-f", "json", "-o", str(out), str(SAMPLES / "refused.pcap")).returncode == 0
    assert [f["kind"] for f in json.loads(out.read_text())["findings"]] == ["refused"]


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_text("not a capture")
    result = run_cli(str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "bad.pcap" in result.stderr


def sample_records(name: str) -> list[dict]:  # type: ignore[type-arg]
    import analyzer

    return [analyzer.record(r) for r in analyzer.analyze(str(SAMPLES / name))]


def tallied(records: list[dict]) -> list[tuple[str, str, int]]:  # type: ignore[type-arg]
    tally, census = Tally(), Census()
    for record in records:
        tally.add(record)
        census.add(record)
    return [(f.kind, f.endpoint, f.count) for f in findings(tally, census, Limits())]


def test_fin_wait_2_lingering_past_the_threshold() -> None:
    (record,) = sample_records("close_wait_left_open.pcap")
    assert ("fin-wait-2", "10.77.0.2:9000", 1) not in tallied([record])  # 0.04 s: just the capture's end
    record["final_age"]["client"] = 12.0  # the client's FIN_WAIT_2 had lasted 12 s when the capture ended
    assert ("fin-wait-2", "10.77.0.2:9000", 1) in tallied([record])


def test_slow_handshakes_by_median() -> None:
    (record,) = sample_records("fourway_server_close.pcap")
    assert tallied([record]) == []
    record["handshake_rtt"]["total"] = 0.5
    assert tallied([record, record, dict(record, handshake_rtt={"total": 0.001})]) == [
        ("slow-handshake", "10.77.0.2:9000", 3)]


def test_end_census_allows_a_microsecond_of_rounding() -> None:
    census = Census()
    # both still open at the capture's end (10 ms); the second's transition + age, each rounded, is 1 us short
    census.add(rec("s:1", [["ESTABLISHED", 0.001, 1]], [["ESTABLISHED", 0.001, 1]], (0.009, 0.009)))
    census.add(rec("s:1", [["ESTABLISHED", 0.002, 2]], [["ESTABLISHED", 0.002, 2]], (0.007999, 0.007999)))
    assert census.end_census("s:1", "client") == {"ESTABLISHED": 2}
    census.add(rec("s:1", [["ESTABLISHED", 0.003, 3]], [["ESTABLISHED", 0.003, 3]], (0.001, 0.001)))
    assert census.end_census("s:1", "client") == {"ESTABLISHED": 2}  # the third had ended 6 ms before


def test_peaks_agree_with_the_series() -> None:
    report = build([str(SAMPLES / "busy.pcap")])
    census = report.census
    for name in [*census.endpoints(), TOTAL]:
        for side in ("server", "client"):
            times, counts = census.series(name, side)
            expected = {state: (max(values), times[values.index(max(values))])
                        for state, values in counts.items() if max(values) > 0}
            assert {s: (p.count, p.at) for s, p in census.peaks(name, side).items()} == expected


def without_names(report_json: str) -> dict:  # type: ignore[type-arg]
    found = json.loads(report_json)
    found.pop("captures")
    return found  # type: ignore[no-any-return]


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (make apt-deps)")
def test_rotated_sets(tmp_path: Path) -> None:
    """`synfin report DIR/` and `--set FILE...` read a rotated set as one capture, as `synfin analyze` does:
    busy.pcap cut in 7 parts, named so that name order runs backwards in time, gives the whole file's report
    (a part gzipped: the reference pipeline reads the set, and the same again)."""
    parts = tmp_path / "parts"
    parts.mkdir()
    subprocess.run(["editcap", "-F", "pcap", "-c", "500", str(SAMPLES / "busy.pcap"), str(parts / "p.pcap")],
                   check=True, env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    made = sorted(parts.iterdir())
    files = [path.rename(parts / f"cap{len(made) - i:02d}.pcap") for i, path in enumerate(made)]
    whole = run_cli("-f", "json", str(SAMPLES / "busy.pcap"))
    as_dir = run_cli("-f", "json", str(parts))
    listed = run_cli("-f", "json", "--set", *map(str, files))
    assert whole.returncode == as_dir.returncode == listed.returncode == 0, as_dir.stderr + listed.stderr
    assert without_names(as_dir.stdout) == without_names(listed.stdout) == without_names(whole.stdout)
    assert json.loads(as_dir.stdout)["captures"] == [str(parts)]
    html = tmp_path / "r.html"
    assert run_cli("-f", "html", "-o", str(html), str(parts)).returncode == 0
    assert html.read_text().count("ladder of connection #") >= 6  # the examples' frames fetched across files
    with open(files[0], "rb") as plain, gzip.open(files[0].with_suffix(".pcap.gz"), "wb") as packed:
        packed.write(plain.read())
    files[0].unlink()
    assert without_names(run_cli("-f", "json", str(parts)).stdout) == without_names(whole.stdout)
    assert run_cli().returncode == 2


@pytest.mark.parametrize("engine_name", ["compiled", "reference"])
def test_analyze_summary_per_endpoint(engine_name: str) -> None:
    """`synfin analyze`'s summary: retransmissions and the busiest server endpoints, the same on both engines;
    checked by hand against server_states' manifest (60 server-first closes on 9102, 10 + 10 resets, 5 leaks
    on 9106, 5 refused on 9109, the 3 connections to 9107 sixth) and tcpdump (three SYNs from one client to
    9107: 2 resent)."""
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--engine", engine_name,
                          str(SAMPLES / "server_states.pcap")], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[-8:] == [
        "  retransmitted: SYN 2, SYN-ACK 0, FIN 0",
        "  busiest server endpoints (5 of 6):",
        "    10.77.0.2:9102: 60 connections, 60 handshake, 60 closed, 0 reset; at the end server TIME_WAIT 60",
        "    10.77.0.2:9103: 10 connections, 10 handshake, 0 closed, 10 reset",
        "    10.77.0.2:9104: 10 connections, 10 handshake, 0 closed, 10 reset",
        "    10.77.0.2:9106: 5 connections, 5 handshake, 0 closed, 0 reset; at the end client FIN_WAIT_2 5, "
        "server CLOSE_WAIT 5",
        "    10.77.0.2:9109: 5 connections, 0 handshake, 0 closed, 0 reset, 5 refused",
        "  per endpoint over time, findings and advice: synfin report CAPTURE",
    ]

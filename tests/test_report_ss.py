"""synfin report against `ss`: samples/server_states.pcap's census and findings at the instants `ss -tan` ran.

samples/generate.py made server_states.pcap (kernel traffic in two network
namespaces, captured on the client's veth) and ran `ss -tanH` in the server's
and the client's namespace at three known instants during the run
(server_states.ss.json: state, local and peer address of every socket, and the
wall-clock time before and after the two commands; tcpdump stamps frames with
the same clock). `ss` is the kernel's own word on each socket, so it is the
truth the census is held to, per server endpoint, side and state:

- an instant inside the capture: the census at the sample points from the
  `ss` run's start to one bin after its end (the census is read at bin edges),
  which must include the `ss` count (on this capture nothing changes state
  within that window, so it is exact);
- an instant after the last captured frame: a passive observer knows the
  states as of the last frame. Only timers change a state without a segment,
  and every state left here outlasts the check (TIME_WAIT 60 s, an orphaned
  FIN_WAIT_2 60 s, CLOSE_WAIT has no timer), so the census at the capture's
  end must equal `ss` later on.

LISTEN sockets are not connections (the census leaves them out), and a SYN
the server dropped (its accept queue full) leaves no socket on the server:
the census, which counts a server in SYN_RCVD only from its SYN-ACK, agrees.
Checked by hand: the snapshot at 1.3 s shows 9102 TIME-WAIT 60, 9106
CLOSE-WAIT 5 (FIN-WAIT-2 5 on the client), 9107 ESTAB 2 on both sides and
SYN-SENT 1 on the client (its SYN dropped and resent); at 2.3 s and 4.0 s,
after the last frame, the same less 9107, whose three client sockets are in
TIME-WAIT (the client closed first).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from analyzer.report_cli import Report, build, to_json
from analyzer.timeline import SIDES
from samples import pcapread

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPTURE = SAMPLES / "server_states.pcap"
SS_STATES = {"ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RCVD", "FIN-WAIT-1": "FIN_WAIT_1",
             "FIN-WAIT-2": "FIN_WAIT_2", "CLOSE-WAIT": "CLOSE_WAIT", "CLOSING": "CLOSING", "LAST-ACK": "LAST_ACK",
             "TIME-WAIT": "TIME_WAIT"}
Key = tuple[str, str, str]  # (server endpoint, side, state)


def snapshots() -> list[dict]:  # type: ignore[type-arg]
    return json.loads((SAMPLES / "server_states.ss.json").read_text())["snapshots"]  # type: ignore[no-any-return]


def ss_census(snapshot: dict) -> Counter[Key]:  # type: ignore[type-arg]
    """`ss`'s sockets per server endpoint, side and state: the server's by local address, the client's by peer."""
    counts: Counter[Key] = Counter()
    for side in SIDES:
        for line in snapshot[side]:
            state, local, peer = line.split()
            if state != "LISTEN":
                counts[(local if side == "server" else peer, side, SS_STATES[state])] += 1
    return counts


def census_range(report: Report, start: float, stop: float) -> dict[Key, tuple[int, int]]:
    """The report's census (least and most) at the sample points from `start` to one bin after `stop`."""
    found = {}
    width = report.census.width / 1e6
    for name in report.census.endpoints():
        for side in SIDES:
            times, counts = report.census.series(name, side)
            points = [i for i, t in enumerate(times) if start <= t <= stop + width]
            assert points, f"no sample point in [{start}, {stop + width}]"
            for state, values in counts.items():
                found[(name, side, state)] = (min(values[i] for i in points), max(values[i] for i in points))
    return found


@pytest.fixture(scope="module")
def report() -> Report:
    return build([str(CAPTURE)])


def last_frame_time() -> float:
    return max(seg.ts for seg in pcapread.read(CAPTURE).segments)


@pytest.mark.parametrize("index", range(3))
def test_census_matches_ss(report: Report, index: int) -> None:
    snapshot = snapshots()[index]
    truth = ss_census(snapshot)
    if snapshot["to"] <= last_frame_time():
        ours = census_range(report, snapshot["from"], snapshot["to"])
    else:  # after the last frame: what the observer knew then (see the module's docstring)
        ours = {(name, side, state): (n, n) for name in report.census.endpoints() for side in SIDES
                for state, n in report.census.end_census(name, side).items()}
    for key in set(truth) | set(ours):
        low, high = ours.get(key, (0, 0))
        assert low <= truth[key] <= high, (key, truth[key], (low, high))


def test_snapshots_cover_both_cases() -> None:
    last = last_frame_time()
    assert snapshots()[0]["to"] < last < snapshots()[1]["from"]  # one inside the capture, two after it


def test_findings_agree_with_ss(report: Report) -> None:
    found = {(f["kind"], f["endpoint"]): f for f in to_json(report)["findings"]}
    manifest = json.loads((SAMPLES / "server_states.manifest.json").read_text())
    port = {kind: f"10.77.0.2:{p}" for kind, p in manifest["ports"].items()}
    assert sorted(found) == sorted([
        ("time-wait-pile", port["server_close"]), ("close-wait-leak", port["close_wait"]),
        ("listen-overflow", port["slow_accept"]), ("refused", port["refused"]),
        ("aborts", port["client_reset"]), ("aborts", port["server_reset"])])
    during = ss_census(snapshots()[0])
    # the TIME_WAIT pile: ss saw every server-first close in TIME-WAIT on the server
    pile = found[("time-wait-pile", port["server_close"])]["evidence"]
    assert pile["side"] == "server" and pile["peak"] == during[(port["server_close"], "server", "TIME_WAIT")] == 60
    # the leak: the same five sockets in CLOSE-WAIT at every snapshot, their peers in FIN-WAIT-2
    leak = found[("close-wait-leak", port["close_wait"])]
    for snapshot in snapshots():
        seen = ss_census(snapshot)
        assert seen[(port["close_wait"], "server", "CLOSE_WAIT")] == leak["count"] == 5
        assert seen[(port["close_wait"], "client", "FIN_WAIT_2")] == 5
    # the slow server: two handshakes done (ESTAB on both sides), one client still in SYN-SENT (its SYN dropped)
    overflow = found[("listen-overflow", port["slow_accept"])]["evidence"]
    assert overflow["clean_handshakes"] == during[(port["slow_accept"], "server", "ESTABLISHED")] == 2
    assert overflow["dropped_handshakes"] == during[(port["slow_accept"], "client", "SYN_SENT")] == 1
    # refused and reset connections leave no socket behind, on either side, at any snapshot
    for kind in ("refused", "client_reset", "server_reset"):
        assert not any(key[0] == port[kind] for snapshot in snapshots() for key in ss_census(snapshot))
        assert found[("aborts" if "reset" in kind else kind, port[kind])]["count"] == manifest["kinds"][kind]

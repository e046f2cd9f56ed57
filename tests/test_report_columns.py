"""synfin report's columns (analyzer/columns.py): the engine's "census" output against the JSON records.

The census and the findings are computed once, on batches; these tests hold the
two ways a batch is made (the compiled engine's integers, the reference
pipeline's records) to the same columns on every sample, the report to the same
output on both engines, and a batch to the same result as its records added
one at a time (the census's end bookkeeping depends on the order records come).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import analyzer
from analyzer.columns import Batch, read_census
from analyzer.findings import Limits, Tally, findings
from analyzer.report_cli import build, to_json, write_text
from analyzer.timeline import SIDES, STATES, TOTAL, Census

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPTURES = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))


def engine_batches(path: Path) -> list[Batch]:
    found: list[Batch] = []
    stream = analyzer.analyze(str(path))
    stream.consume(lambda out: read_census(out, found.append), "census")  # type: ignore[attr-defined]
    return found


def joined(batches: list[Batch]) -> Batch:
    return Batch([name for b in batches for name in b.servers], np.concatenate([b.numbers for b in batches]),
                 np.concatenate([b.steps for b in batches]))


@pytest.mark.parametrize("name", CAPTURES)
def test_engine_columns_equal_the_reference_records(name: str) -> None:
    path = SAMPLES / name
    ours = joined(engine_batches(path))
    records = [analyzer.record(c) for c in analyzer.analyze(str(path), engine="reference")]
    theirs = Batch.of_records(records)
    assert ours.servers == theirs.servers
    assert np.array_equal(ours.numbers, theirs.numbers)  # the doubles bit for bit
    assert np.array_equal(ours.steps, theirs.steps)
    assert len(ours) == len(records) > 0


@pytest.mark.parametrize("name", ["busy.pcap", "listen_overflow.pcap", "close_wait_left_open.pcap",
                                  "keepalive.pcap", "port_reuse.pcap", "crafted_encapsulations.pcapng"])
def test_report_is_the_same_on_both_engines(name: str) -> None:
    compiled, reference = build([str(SAMPLES / name)]), build([str(SAMPLES / name)], engine="reference")
    assert json.dumps(to_json(compiled)) == json.dumps(to_json(reference))
    texts = []
    for report in (compiled, reference):
        out = io.StringIO()
        write_text(report, out)
        texts.append(out.getvalue())
    assert texts[0] == texts[1]


def summed(records: list[dict], one_by_one: bool) -> str:  # type: ignore[type-arg]
    census, tally = Census(), Tally()
    if one_by_one:
        for rec in records:
            census.add(rec)
            tally.add(rec)
    else:
        batch = Batch.of_records(records)
        census.add_batch(batch)
        tally.add_batch(batch)
    peaks = {f"{name} {side}": {s: (p.count, p.at) for s, p in census.peaks(name, side).items()}
             for name in [*census.endpoints(), TOTAL] for side in SIDES}
    ends = {f"{name} {side}": census.end_census(name, side) for name in [*census.endpoints(), TOTAL] for side in SIDES}
    return json.dumps([peaks, ends, [f.json() for f in findings(tally, census, Limits())],
                       {n: (e.connections, e.handshakes, dict(e.retransmits), sorted(e.rtt.items()))
                        for n, e in sorted(tally.endpoints.items())}])


def test_a_batch_counts_as_its_records_one_by_one() -> None:
    records = [analyzer.record(r) for r in analyzer.analyze(str(SAMPLES / "busy.pcap"))]
    assert summed(records, one_by_one=False) == summed(records, one_by_one=True)
    # the end's bookkeeping depends on the order: the same holds with the records reversed
    assert summed(records[::-1], one_by_one=False) == summed(records[::-1], one_by_one=True)


def test_a_batch_keeps_the_order_of_the_end_bookkeeping() -> None:
    """Ends a few microseconds apart, in random order: which count as "at the capture's end" depends on the
    order they came in (timeline.Census._finishes); a batch must decide as the records one by one do."""
    import random

    rng = random.Random(15)
    records = []
    for i in range(2000):
        start = rng.randrange(0, 12) * 1e-6 + 1.0
        states = [["SYN_SENT", start, 1], ["ESTABLISHED", start + 1e-6, 2]]
        peer = [["SYN_RCVD", start, 1], ["ESTABLISHED", start + 2e-6, 3]][: rng.randrange(0, 3)]
        records.append({"id": i, "server": f"10.0.0.{i % 3}:80", "states": {"client": states, "server": peer},
                        "final_age": {"client": rng.randrange(0, 9) * 1e-6 or None,
                                      "server": rng.randrange(0, 9) * 1e-6 if peer else None}})
    for block in (records, records[::-1], records[:7], records[100:300]):
        assert summed(block, one_by_one=False) == summed(block, one_by_one=True)
        census = Census()
        census.add_batch(Batch.of_records(block))
        assert {side: census.end_census(TOTAL, side) for side in SIDES} == end_by_hand(block)


def end_by_hand(records: list[dict]) -> dict[str, dict[str, int]]:  # type: ignore[type-arg]
    """The census at the end as the sweep defines it, record by record, the server side first: an end more
    than 2 us after every end before it starts the list afresh; an end within 2 us of the latest joins it."""
    latest, kept, last_seen = None, [], 0
    for rec in records:
        for side in SIDES:
            steps = rec["states"][side]
            if not steps:
                continue
            finish = round(steps[-1][1] * 1e6) + round((rec["final_age"][side] or 0.0) * 1e6)
            last_seen = max([last_seen, finish, *(round(s[1] * 1e6) for s in steps)])
            if latest is None or finish > latest + 2:
                kept = []
            latest = finish if latest is None else max(latest, finish)
            if finish >= latest - 2:
                kept.append((side, steps[-1][0]))
    if latest is None or latest < last_seen - 2:
        return {side: {} for side in SIDES}
    return {side: {state: n for state in STATES if (n := kept.count((side, state)))} for side in SIDES}


def test_a_failing_consumer_stops_the_reading() -> None:
    def fail(batch: Batch) -> None:
        raise RuntimeError("stop here")

    stream = analyzer.analyze(str(SAMPLES / "busy.pcap"))
    with pytest.raises(RuntimeError, match="stop here"):
        stream.consume(lambda out: read_census(out, fail), "census")  # type: ignore[attr-defined]


def test_a_partial_record_is_an_error() -> None:
    with pytest.raises(ValueError, match="partial record"):
        read_census(io.BytesIO(b"10.0.0.1:80\n1 2 3\n"), lambda batch: None)

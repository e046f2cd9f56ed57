"""The Python API on the compiled engine (analyzer/records.py, analyzer/frames.py).

`analyzer.analyze()` yields Records from the engine: each must be the CLI's JSON record (`analyzer.record`),
in the CLI's order, on every sample and on crafted captures, with and without a BPF filter; its attributes
must agree with that record and with the reference's Connection (labels, endpoints, final states, history).
The DataFrame read from the engine must equal, values and dtypes, the one made from the reference's
Connections. Errors raise what the reference raises; leaving a loop early stops the engine and leaves no
thread or file descriptor behind; memory stays bounded by open connections (a subprocess's peak RSS).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import analyzer
from analyzer import engine
from analyzer.fsm import State
from tests.crafting import crafted
from tests.engine_compare import run_cli
from tests.test_engine import BAD_FILES, _many_connections

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcap.gz")))
#: drops every RST (and so changes what most samples report): the filter must apply in the API as in the CLI
NO_RST = "not tcp[tcpflags] & tcp-rst != 0"
OPTION_NAMES = {"--msl": "msl", "--idle-timeout": "idle_timeout", "--handshake-timeout": "handshake_timeout"}

needs_engine = pytest.mark.skipif(not engine.available(), reason="the compiled engine is not built")
needs_filters = pytest.mark.skipif(not engine.filters_available(), reason="the engine was built without libpcap")


def cli_records(path: Path, options: list[str]) -> list[dict[str, Any]]:
    """The JSON records `synfin analyze -f json` writes (the compiled engine, held to the reference elsewhere)."""
    outcome = run_cli(["analyze", "--engine", "compiled", "-f", "json", *options, str(path)])
    assert outcome.status == 0, outcome.stderr
    return [json.loads(line) for line in outcome.stdout.splitlines()]


def keywords(options: list[str]) -> dict[str, Any]:
    """CLI options (--msl 0.01 --filter EXPR ...) as analyze()'s keywords."""
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    out: dict[str, Any] = {OPTION_NAMES[k]: float(v) for k, v in pairs.items() if k in OPTION_NAMES}
    if "--filter" in pairs:
        out["bpf"] = pairs["--filter"]
    return out


def check_attributes(rec: analyzer.Record, want: dict[str, Any]) -> None:
    """Every JSON key is the record's attribute of that name (client and server: views whose str() it is)."""
    for key, value in want.items():
        got = getattr(rec, key)
        assert (str(got) if key in ("client", "server") else got) == value, key
    for side in ("client", "server"):
        view = getattr(rec, side)
        assert view.state == State(want["final"][side])
        assert [[str(t.state), t.ts, t.frame] for t in view.history] == want["states"][side]
        assert (view.packets, view.payload_bytes) == (want["packets"][side], want["payload_bytes"][side])
    assert rec.labels == {key: want[key] for key in ("open", "close", "half_close", "active_closer", "reset_by",
                                                      "reset_state")}


def compare_with_cli(path: Path, options: list[str]) -> None:
    got = list(analyzer.analyze(path, **keywords(options)))
    assert all(isinstance(rec, analyzer.Record) for rec in got)
    want = cli_records(path, options)
    assert [analyzer.record(rec) for rec in got] == want
    for rec, record in zip(got, want, strict=True):
        check_attributes(rec, record)


@needs_engine
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_records_are_the_cli_json_records(capture: Path) -> None:
    compare_with_cli(capture, [])


@needs_filters
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_records_with_a_filter_are_the_cli_json_records(capture: Path) -> None:
    compare_with_cli(capture, ["--filter", NO_RST])


@needs_engine
@pytest.mark.parametrize("batch", range(4))
def test_records_of_crafted_captures(tmp_path: Path, batch: int) -> None:
    """120 crafted captures (tests/crafting.py), each with its timing options; every third filtered too."""
    for seed in range(batch * 30, (batch + 1) * 30):
        made = crafted(seed)
        path = made.write(tmp_path)
        compare_with_cli(path, made.options)
        if seed % 3 == 0 and engine.filters_available():
            compare_with_cli(path, [*made.options, "--filter", "tcp[tcpflags] & tcp-syn == 0 or port 9102"])


@needs_engine
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_records_behave_as_the_reference_connections(capture: Path) -> None:
    """The documented API (labels, endpoints, their state, address and port) reads the same on both engines."""
    records = list(analyzer.analyze(capture))
    conns = list(analyzer.analyze(capture, engine="reference"))
    assert len(records) == len(conns)
    for rec, conn in zip(records, conns, strict=True):
        assert (rec.id, rec.labels) == (conn.id, conn.labels)
        for mine, theirs in ((rec.client, conn.client), (rec.server, conn.server)):
            assert (mine.state, mine.addr, mine.port) == (theirs.state, theirs.addr, theirs.port)
            assert [(t.state, t.ts, t.frame) for t in mine.history] == [(t.state, t.ts, t.frame)
                                                                        for t in theirs.history]


@needs_engine
def test_stats_are_filled_when_the_records_are_read() -> None:
    stats, ref = analyzer.Stats(), analyzer.Stats()
    list(analyzer.analyze(SAMPLES / "busy.pcap", stats=stats, **({"bpf": "tcp port 9105"}
                                                                 if engine.filters_available() else {})))
    list(analyzer.analyze(SAMPLES / "busy.pcap", stats=ref, engine="reference",
                          **({"bpf": "tcp port 9105"} if engine.filters_available() else {})))
    assert stats == ref and stats.connections > 0


def test_engine_choice() -> None:
    path = SAMPLES / "busy.pcap"
    assert isinstance(next(iter(analyzer.analyze(path, engine="reference"))), analyzer.Connection)
    assert isinstance(next(iter(analyzer.analyze(path, keep_segments=True))), analyzer.Connection)
    with pytest.raises(ValueError, match="engine must be one of"):
        analyzer.analyze(path, engine="fast")
    if engine.available():
        assert isinstance(next(iter(analyzer.analyze(path))), analyzer.Record)
        with pytest.raises(ValueError, match="keep_segments"):
            analyzer.analyze(path, engine="compiled", keep_segments=True)


# ---- errors -------------------------------------------------------------------------------------------


def outcome(path: Path, **options: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The records read before any exception, and the exception (type and message)."""
    read: list[dict[str, Any]] = []
    try:
        for conn in analyzer.analyze(path, **options):
            read.append(analyzer.record(conn))
    except Exception as err:  # compared between the engines
        return read, f"{type(err).__name__}: {err}"
    return read, None


@needs_engine
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_damaged_files_raise_what_the_reference_raises(tmp_path: Path, name: str) -> None:
    content, suffix = BAD_FILES[name]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    assert outcome(path) == outcome(path, engine="reference")


@needs_engine
def test_missing_file_and_bad_filter(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.pcap"
    assert outcome(missing) == outcome(missing, engine="reference")
    assert outcome(missing)[1].startswith("CaptureError")
    with pytest.raises(analyzer.FilterError):
        analyzer.analyze(SAMPLES / "busy.pcap", bpf="tcp prt 1")  # at the call, before anything is read


# ---- early exit and memory ----------------------------------------------------------------------------


def resources() -> tuple[int, int, int]:
    """Python threads, OS threads of this process, open file descriptors."""
    return threading.active_count(), len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


def back_to(before: tuple[int, int, int]) -> bool:
    """Whether the resources are back to `before`, allowing a joined thread a moment to leave the OS's list
    (join() returns when the thread's Python part ends, a moment before the OS thread exits)."""
    for _ in range(200):
        if resources() == before:
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 copies of a real four-way connection, 1 ms apart (200,000 frames): far more output than a pipe holds."""
    path = tmp_path_factory.mktemp("api") / "many.pcap"
    path.write_bytes(_many_connections(20_000, closed_every=1))
    return path


@needs_engine
def test_leaving_early_stops_the_engine(many: Path) -> None:
    before = resources()
    stream = analyzer.analyze(many)
    first = next(stream)
    assert first.id == 0
    stream.close()  # close() stops the engine and waits for it
    assert back_to(before), (resources(), before)
    for rec in analyzer.analyze(many):  # a for loop left with break: the stream goes with its last reference
        if rec.id == 100:
            break
    del rec
    gc.collect()
    assert back_to(before), (resources(), before)
    with analyzer.analyze(many) as stream:
        assert next(stream).id == 0
    assert back_to(before), (resources(), before)
    assert len(list(analyzer.analyze(many))) == 20_000  # and the engine runs again


PEAK = """
import resource, sys, analyzer
n = 0
for conn in analyzer.analyze(sys.argv[1], msl=0.01):
    labels, state = conn.labels, conn.server.state
    n += 1
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak(path: Path) -> tuple[int, int]:
    """(records read, peak RSS in KiB) of iterating analyze(path) in a subprocess."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True)
    count, kib = done.stdout.split()
    return int(count), int(kib)


@needs_engine
@pytest.mark.skipif(bool(os.environ.get("SYNFIN_SANITIZED")), reason="memory figures mean nothing under ASan")
def test_memory_is_bounded_by_open_connections(tmp_path: Path, many: Path) -> None:
    """20,000 connections (30 MB of records) read one by one cost what 20 connections cost, within 25 MiB:
    with a 10 ms MSL only a few are open at a time, and the text is read as the engine writes it."""
    few = tmp_path / "few.pcap"
    few.write_bytes(_many_connections(20, closed_every=1))
    (small, small_kib), (large, large_kib) = peak(few), peak(many)
    assert (small, large) == (20, 20_000)
    assert large_kib - small_kib < 25 * 1024, (small_kib, large_kib)


# ---- DataFrames -----------------------------------------------------------------------------------------


@needs_engine
@pytest.mark.plain_only  # the engine's side is its CSV output, which test_engine.py runs on every sample
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_dataframe_from_the_engine_is_the_reference_one(capture: Path) -> None:
    pd = pytest.importorskip("pandas")
    fast = analyzer.to_dataframe(analyzer.analyze(capture))
    slow = analyzer.to_dataframe(analyzer.analyze(capture, engine="reference"))
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    pd.testing.assert_frame_equal(analyzer.to_dataframe(list(analyzer.analyze(capture))), slow, check_exact=True)
    named = analyzer.to_dataframe(analyzer.analyze(capture), capture="x,y.pcap")
    pd.testing.assert_frame_equal(named, analyzer.to_dataframe(analyzer.analyze(capture, engine="reference"),
                                                               capture="x,y.pcap"), check_exact=True)
    assert set(named["capture"]) <= {"x,y.pcap"}


@needs_engine
def test_dataframe_dtypes_and_values() -> None:
    """Checked against the CLI's JSON records: the dtypes the README promises and the values they hold."""
    pd = pytest.importorskip("pandas")
    path = SAMPLES / "busy.pcap"
    frame = analyzer.to_dataframe(analyzer.analyze(path))
    want = {rec["id"]: rec for rec in cli_records(path, [])}
    assert list(frame.index) == list(want) and frame.index.dtype == "Int64"
    assert str(frame["start"].dtype) .startswith("datetime64") and str(frame["start"].dt.tz) == "UTC"
    for column in ("open", "close", "active_closer", "reset_by", "reset_state", "final_client", "final_server"):
        assert isinstance(frame[column].dtype, pd.CategoricalDtype), column
    assert list(frame["open"].cat.categories) == list(analyzer.labels.OPEN_LABELS)
    assert frame["packets_client"].dtype == "Int64" and frame["half_close"].dtype == "boolean"
    assert frame["handshake_rtt"].dtype == "Float64" and frame["client"].dtype == "string"
    for conn_id, rec in want.items():
        row = frame.loc[conn_id]
        assert row["start"] == pd.Timestamp(rec["start"], unit="s", tz="UTC")
        assert (row["open"], row["final_server"]) == (rec["open"], rec["final"]["server"])
        assert (row["reset_by"] if rec["reset_by"] else None) == rec["reset_by"]
        rtt = rec["handshake_rtt"]
        assert (row["handshake_rtt"] is pd.NA) if rtt is None else row["handshake_rtt"] == rtt["total"]


@needs_engine
def test_dataframe_after_reading_some_records() -> None:
    """A stream already started goes the slow way, with what is left of it."""
    pytest.importorskip("pandas")
    stream = analyzer.analyze(SAMPLES / "busy.pcap")
    next(stream)
    assert len(analyzer.to_dataframe(stream)) == 339
    spent = analyzer.analyze(SAMPLES / "busy.pcap")
    analyzer.to_dataframe(spent)
    assert list(spent) == []  # the DataFrame took the records

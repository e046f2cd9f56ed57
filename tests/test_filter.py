"""BPF filters (`--filter EXPR`, `analyze(path, bpf=EXPR)`): the frames tcpdump -r would select, in both engines.

The oracle is tcpdump itself: `tcpdump -r FILE -w OUT EXPR`, then `synfin
analyze OUT`, must give the connections and labels that `synfin analyze
--filter EXPR FILE` gives, on the sample captures (real kernel traffic:
busy.pcap holds 340 connections on six ports, ipv6.pcap, the Linux cooked
any_interface.pcap, pcapng from dumpcap). Frame numbers are the one thing
that differs, by design: with --filter they stay the file's, so they are
compared with the unfiltered run instead. Both engines must give the same
bytes with a filter, on the samples and on crafted captures (tests/crafting.py,
named crafted-SEED). Crafted captures here also cover a pcapng mixing link
types and VLAN-tagged frames. tcpdump runs without LD_PRELOAD, so this file
also runs under `make sanitize`.
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

import analyzer
from analyzer import engine
from analyzer.bpf import BpfFilter, FilterError, looks_like_filter
from analyzer.pipeline import Stats
from tests.crafting import crafted
from tests.engine_compare import difference, run_cli, run_engines
from tests.pcapwrite import LINKTYPE_ETHERNET, LINKTYPE_RAW, frame, handshake_packets, write_pcap, write_pcapng
from tests.test_engine import BAD_FILES

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
BUSY = SAMPLES / "busy.pcap"
# The tests that compare the engines need one built with libpcap; the others run on whichever engine filters.
needs_engine = pytest.mark.skipif(not engine.filters_available(), reason="the engine is built without libpcap")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")

# (sample, expression): expressions that select whole connections and ones that cut connections apart
ORACLE_CASES = [
    ("busy.pcap", "tcp port 9101"),
    ("busy.pcap", "tcp port 9103 or tcp port 9109"),
    ("busy.pcap", "not port 9102 and not port 9105"),
    ("busy.pcap", "src host 10.77.0.1"),  # the client's half only: labels change, as with tcpdump
    ("busy.pcap", "tcp[tcpflags] & (tcp-syn|tcp-rst) != 0"),
    ("busy.pcap", "greater 60"),
    ("ipv6.pcap", "ip6 and tcp and dst port 9000"),
    ("ipv6.pcap", "ip6 and src port 9000"),
    ("any_interface.pcap", "tcp and inbound"),
    ("dumpcap_pcapng.pcapng", "tcp[tcpflags] & tcp-fin != 0 or tcp[tcpflags] & tcp-syn != 0"),
    ("handshake_fourway_client_close.pcapng", "dst port 9000"),
]


def _tcpdump(source: Path, expression: str, out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # not the sanitizers' runtimes
    subprocess.run(["tcpdump", "--time-stamp-precision=nano", "-r", str(source), "-w", str(out), expression],
                   check=True, env=env,
                   capture_output=True)


def _without_frames(value: object) -> object:
    """A JSON record with every frame number left out (states' [state, time, frame] keep state and time), and
    times to 10 µs: tcpdump -w writes a pcap, and a pcapng's stamps (ticks times 1e-9 plus an offset) come
    back from it a few hundred ns apart."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _without_frames(v) for k, v in value.items() if "frame" not in k}
    if isinstance(value, list):
        if len(value) == 3 and isinstance(value[0], str) and isinstance(value[2], int):
            return [value[0], _without_frames(value[1])]
        return [_without_frames(v) for v in value]
    return value


def _records(text: bytes) -> list[dict]:
    return [json.loads(line) for line in text.decode().splitlines()]


def _summary(stderr: str, name: str) -> list[str]:
    """The summary's lines, the capture's name taken out and the unmatched count left out."""
    return [line.replace(name, "CAPTURE") for line in stderr.splitlines()
            if "not matching the filter" not in line and not line.startswith("synfin: note:")]


@needs_tcpdump
@pytest.mark.parametrize(("sample", "expression"), ORACLE_CASES)
def test_same_connections_as_tcpdump_prefiltered(tmp_path: Path, sample: str, expression: str) -> None:
    source = SAMPLES / sample
    prefiltered = tmp_path / "tcpdump.pcap"
    _tcpdump(source, expression, prefiltered)
    ours = run_cli(["analyze", "-f", "json", "--filter", expression, str(source)])
    theirs = run_cli(["analyze", "-f", "json", str(prefiltered)])
    assert ours.status == theirs.status == 0, ours.stderr + theirs.stderr
    mine, oracle = _records(ours.stdout), _records(theirs.stdout)
    assert mine, f"{expression!r} selects no connection in {sample}: a test of nothing"
    assert [_without_frames(r) for r in mine] == [_without_frames(r) for r in oracle]
    assert _summary(ours.stderr, str(source)) == _summary(theirs.stderr, str(prefiltered))
    everything = run_cli(["analyze", "-f", "json", str(source)])
    unmatched = _frames(everything.stderr) - _frames(theirs.stderr)
    assert unmatched > 0, f"{expression!r} keeps every frame of {sample}: a weak test"
    assert f"  {unmatched} frame{'s' if unmatched > 1 else ''} not matching the filter" in ours.stderr.splitlines()


def _frames(summary: str) -> int:
    """The frame count of a summary's first line ('x.pcap: 3280 frames, ...')."""
    return int(summary.splitlines()[0].split(": ")[1].split()[0])


def test_frame_numbers_stay_the_files(tmp_path: Path) -> None:
    """A port filter keeps whole connections: their records are the unfiltered ones but for the ids, and for
    what runs to the capture's end, which is the last segment the filter kept (as in a tcpdump-prefiltered file):
    the age of each final state and the time spent in it, never longer than without the filter."""
    everything = {(r["client"], r["server"]): r for r in _records(run_cli(["analyze", "-f", "json", str(BUSY)]).stdout)}
    run = run_cli(["analyze", "-f", "json", "--filter", "tcp port 9104", str(BUSY)])
    kept = _records(run.stdout)
    assert len(kept) == 40
    to_the_end = ("final_age", "state_time")
    for record in kept:
        whole = dict(everything[(record["client"], record["server"])])
        assert ({k: v for k, v in record.items() if k not in to_the_end} | {"id": whole["id"]}
                == {k: v for k, v in whole.items() if k not in to_the_end})
        for side in ("client", "server"):
            final = record["final"][side]
            assert record["final_age"][side] <= whole["final_age"][side]
            assert record["state_time"][side] | {final: 0} == whole["state_time"][side] | {final: 0}
    assert "2960 frames not matching the filter" in run.stderr


@needs_engine
@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
@pytest.mark.parametrize("expression", ["tcp port 9102", "tcp[tcpflags] & tcp-rst != 0", "ip6"])
def test_engines_identical_on_samples(tmp_path: Path, fmt: str, expression: str) -> None:
    captures = sorted(SAMPLES.glob("*.pcap")) + sorted(SAMPLES.glob("*.pcapng"))
    for capture in captures:
        runs = run_engines([capture], fmt, ["--filter", expression], tmp_path)
        problem = difference(runs["reference"], runs["compiled"], fmt)
        assert problem is None, f"{capture.name}, --filter {expression!r}: {problem}"


@needs_engine
@pytest.mark.parametrize("expression", ["tcp[13] & 2 != 0", "vlan and tcp", "ip6 or less 70", "port 80"])
def test_engines_identical_on_crafted(tmp_path: Path, expression: str) -> None:
    """Crafted captures: mutated real packets in every link layer, pcap and pcapng, some gzipped."""
    for seed in range(60):
        made = crafted(seed)
        path = tmp_path / made.name
        path.write_bytes(made.content)
        runs = run_engines([path], "json", ["--filter", expression, *made.options], tmp_path)
        problem = difference(runs["reference"], runs["compiled"], "json")
        assert problem is None, f"crafted-{seed} ({', '.join(made.what)}), --filter {expression!r}: {problem}"


def _mixed_pcapng(tmp_path: Path) -> Path:
    """Crafted: one pcapng, two link types. Port 80 on Ethernet, port 81 on raw IP, port 82 on Ethernet in a
    VLAN (802.1ad tag), interleaved frame by frame."""
    plain = [(0, frame(p, LINKTYPE_ETHERNET)) for p in handshake_packets(dport=80)]
    raw = [(1, frame(p, LINKTYPE_RAW)) for p in handshake_packets(sport=40001, dport=81)]
    tagged = [(0, frame(p, LINKTYPE_ETHERNET, vlans=1)) for p in handshake_packets(sport=40002, dport=82)]
    frames = [f for trio in zip(plain, raw, tagged, strict=True) for f in trio]
    return write_pcapng(tmp_path / "crafted-mixed.pcapng", frames, [LINKTYPE_ETHERNET, LINKTYPE_RAW])


def _servers(stdout: bytes) -> list[str]:
    return sorted(r["server"] for r in _records(stdout))


@needs_engine
@pytest.mark.parametrize(("expression", "servers", "failed"), [
    ("tcp", ["10.0.0.2:80", "10.0.0.2:81"], None),  # tcp alone does not look inside a VLAN tag, as tcpdump
    ("tcp port 81 or tcp port 80", ["10.0.0.2:80", "10.0.0.2:81"], None),
    ("vlan and tcp", ["10.0.0.2:82"], "RAW: no VLAN support for Raw IP"),
    ("vlan 100 and tcp port 82", ["10.0.0.2:82"], "RAW: no VLAN support for Raw IP"),
    ("ether host 02:00:00:00:00:01", ["10.0.0.2:80", "10.0.0.2:82"], "RAW: ethernet addresses supported only"),
])
def test_pcapng_with_two_link_types(tmp_path: Path, expression: str, servers: list[str], failed: str | None) -> None:
    capture = _mixed_pcapng(tmp_path)
    runs = run_engines([capture], "json", ["--filter", expression], tmp_path, to_file=False)
    assert difference(runs["reference"], runs["compiled"], "json") is None
    run = runs["compiled"]
    assert run.status == 0 and _servers(run.stdout) == servers
    unmatched = next(line for line in run.stderr.splitlines() if "not matching the filter" in line)
    assert (failed is None) == ("cannot apply" not in unmatched), unmatched
    if failed:
        assert f"it cannot apply to link type {failed}" in unmatched


@needs_tcpdump
def test_vlan_frames_as_tcpdump(tmp_path: Path) -> None:
    """Crafted: Ethernet frames, some in one or two VLAN tags; 'vlan and tcp' as tcpdump -r selects."""
    frames = ([frame(p, LINKTYPE_ETHERNET) for p in handshake_packets(dport=80)]
              + [frame(p, LINKTYPE_ETHERNET, vlans=1) for p in handshake_packets(sport=40001, dport=81)]
              + [frame(p, LINKTYPE_ETHERNET, vlans=2) for p in handshake_packets(sport=40002, dport=82)])
    capture = write_pcap(tmp_path / "crafted-vlans.pcap", frames, LINKTYPE_ETHERNET)
    for expression in ("vlan and tcp", "vlan 100 and vlan 200 and tcp", "not vlan", "vlan and tcp port 81"):
        prefiltered = tmp_path / "tcpdump.pcap"
        _tcpdump(capture, expression, prefiltered)
        ours = run_cli(["analyze", "-f", "json", "--filter", expression, str(capture)])
        theirs = run_cli(["analyze", "-f", "json", str(prefiltered)])
        assert _servers(ours.stdout) == _servers(theirs.stdout), expression
        assert [_without_frames(r) for r in _records(ours.stdout)] == [
            _without_frames(r) for r in _records(theirs.stdout)], expression


@pytest.mark.parametrize("command", [["analyze", "--engine", "reference"], ["analyze", "--engine", "compiled"],
                                     ["ladder", "--text"]])
def test_bad_expression(command: list[str]) -> None:
    run = run_cli([*command, "--filter", "tcp prt 80", str(BUSY)])
    assert run.status == 2 and run.stdout == b""
    assert run.stderr == "synfin: bad filter 'tcp prt 80': can't parse filter expression: syntax error\n"


def test_bad_expression_before_reading(tmp_path: Path) -> None:
    """The expression is checked before any capture is opened: a missing file is not the error shown."""
    run = run_cli(["analyze", "--filter", "port 99999", str(BUSY), str(tmp_path / "missing.pcap")])
    assert run.status == 2 and run.stdout == b""
    assert run.stderr.count("\n") == 1 and "bad filter 'port 99999'" in run.stderr and "port 99999" in run.stderr


@pytest.mark.parametrize("argv", [
    ["tcp port 8081"],  # quoted: one argument
    ["tcp", "port", "8081"],  # not quoted
])
def test_expression_is_never_a_file(argv: list[str]) -> None:
    """`synfin analyze busy.pcap 'tcp port 8081'` used to analyze busy.pcap, then say that the file
    'tcp port 8081' does not exist. Now nothing is analyzed, and the message says what to write."""
    run = run_cli(["analyze", str(BUSY), *argv])
    assert run.status == 2 and run.stdout == b""
    assert run.stderr == (f"synfin: {argv[0]!r} is not a file but looks like a filter expression: "
                          "use --filter 'tcp port 8081'\n")
    ladder = run_cli(["ladder", "tcp port 8081", "--text"])
    assert ladder.status == 2 and "use --filter 'tcp port 8081'" in ladder.stderr


def test_a_missing_file_is_still_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.pcap"
    run = run_cli(["analyze", "-f", "json", str(missing)])
    assert run.status == 2 and "cannot open" in run.stderr and "--filter" not in run.stderr
    assert not looks_like_filter("capture.pcap") and not looks_like_filter("./tcp.pcap")
    assert looks_like_filter("tcp") and looks_like_filter("host 10.0.0.1") and looks_like_filter("(port 80)")
    assert looks_like_filter("10.0.0.1 and port 80") and looks_like_filter("!tcp")
    for name in ("my capture.pcap", "capture (1).pcap", "old and new.pcapng", "tcp.pcap", "10.0.0.1"):
        assert not looks_like_filter(name), name
    spaced = run_cli(["analyze", str(tmp_path / "my capture.pcap")])
    assert spaced.status == 2 and "cannot open" in spaced.stderr and "--filter" not in spaced.stderr


def test_ladder_with_a_filter() -> None:
    """The filtered ladder of a connection is its unfiltered ladder, file frame numbers and all."""
    everything = _records(run_cli(["analyze", "-f", "json", str(BUSY)]).stdout)
    conn = next(r["id"] for r in everything if r["server"].endswith(":9109"))
    filtered = run_cli(["ladder", str(BUSY), "--filter", "tcp port 9109", "--conn", "0", "--text"])
    whole = run_cli(["ladder", str(BUSY), "--conn", str(conn), "--text"])
    assert filtered.status == whole.status == 0, filtered.stderr
    assert filtered.stdout.decode().replace("connection 0:", f"connection {conn}:", 1) == whole.stdout.decode()
    assert b"#526 " in filtered.stdout  # the file's frame number


def test_api_with_a_filter() -> None:
    stats = Stats()
    records = [analyzer.record(c) for c in analyzer.analyze(BUSY, bpf="tcp port 9105", stats=stats)]
    cli = run_cli(["analyze", "-f", "json", "--filter", "tcp port 9105", str(BUSY)])
    assert records == _records(cli.stdout) and len(records) == 50
    assert stats.unmatched + stats.frames == 3280 and stats.unmatched == 2680
    assert f"{stats.frames} frames" in cli.stderr and "2680 frames not matching the filter" in cli.stderr
    with pytest.raises(FilterError, match="bad filter 'tcp prt 1'"):
        analyzer.analyze(BUSY, bpf="tcp prt 1")  # at the call, before anything is read


def test_engine_without_libpcap(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine built without libpcap (no libpcap-dev at install): --engine auto filters with the reference
    pipeline and says so; --engine compiled refuses, exit status 2."""
    monkeypatch.setattr(engine, "filters_available", lambda: False)
    auto = run_cli(["analyze", "-f", "json", "--filter", "tcp port 9101", str(BUSY)])
    reference = run_cli(["analyze", "--engine", "reference", "-f", "json", "--filter", "tcp port 9101", str(BUSY)])
    assert auto.status == 0 and auto.stdout == reference.stdout
    if engine.available():
        assert "built without libpcap (libpcap-dev), so it cannot filter; using the reference" in auto.stderr
        refused = run_cli(["analyze", "--engine", "compiled", "--filter", "tcp", str(BUSY)])
        assert refused.status == 2 and refused.stdout == b"" and "built without libpcap" in refused.stderr


def test_filter_object_counts_link_types_it_cannot_apply_to() -> None:
    from analyzer.capture import RawFrame

    bpf = BpfFilter("vlan")
    raw = RawFrame(1, 0.0, LINKTYPE_RAW, bytes(frame(handshake_packets()[0], LINKTYPE_RAW)), 44)
    assert not bpf.matches(raw)
    assert bpf.failed == (LINKTYPE_RAW, "no VLAN support for Raw IP")


@needs_engine
def test_filter_on_gzip_several_captures_and_a_pipe(tmp_path: Path) -> None:
    """Each capture of a run is filtered alike, gzip too; a pipe into standard input as a file."""
    zipped = tmp_path / "busy.pcap.gz"
    zipped.write_bytes(gzip.compress(BUSY.read_bytes(), mtime=0))
    for fmt in ("csv", "table"):
        runs = run_engines([BUSY, zipped], fmt, ["--filter", "port 9103 or port 9109"], tmp_path)
        assert difference(runs["reference"], runs["compiled"], fmt) is None
        shown = runs["compiled"].stderr + (runs["compiled"].output or b"").decode()  # the table's summary: -o
        assert shown.count("2900 frames not matching the filter") == 2
    from_file = run_cli(["analyze", "-f", "json", "--filter", "port 9103", str(BUSY)])
    with BUSY.open("rb") as source:
        cat = subprocess.Popen(["cat"], stdin=source, stdout=subprocess.PIPE)
        piped = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-f", "json", "--filter", "port 9103",
                                "-"], stdin=cat.stdout, capture_output=True, check=True, timeout=60)
        cat.wait()
    assert piped.stdout == from_file.stdout and len(_records(piped.stdout)) == 40


@needs_engine
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_damaged_files_with_a_filter(tmp_path: Path, name: str) -> None:
    """tests/test_engine.py's damaged captures (random records: lengths that lie, captured longer than on the
    wire) through a filter that looks at the TCP header and the length: both engines alike."""
    content, suffix = BAD_FILES[name]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    runs = run_engines([path], "json", ["--filter", "tcp[13] & 2 != 0 or greater 1000 or less 60"], tmp_path,
                       to_file=False)
    assert difference(runs["reference"], runs["compiled"], "json") is None


@needs_engine
def test_a_link_type_libpcap_does_not_know(tmp_path: Path) -> None:
    """Crafted: frames of link type 9999 (no DLT): no filter applies to them; the summary says why."""
    frames = [frame(p, LINKTYPE_RAW) for p in handshake_packets()]
    capture = write_pcap(tmp_path / "crafted-linktype-9999.pcap", frames, 9999)
    runs = run_engines([capture], "json", ["--filter", "tcp"], tmp_path, to_file=False)
    assert difference(runs["reference"], runs["compiled"], "json") is None
    assert "7 frames not matching the filter (it cannot apply to link type linktype 9999: unknown data link " \
           "type 9999" in runs["compiled"].stderr

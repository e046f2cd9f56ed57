"""The command line's outputs: JSON, CSV, table, summary, progress; and the Python API."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import analyzer
from analyzer import cli
from analyzer.cli import main
from analyzer.styled import Styled

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BUSY = SAMPLES / "busy.pcap"
SMALL = SAMPLES / "threeway_close.pcap"


def run(capsys, *args):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_output_is_byte_identical_on_every_run():
    def once() -> bytes:
        return subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--format", "json", str(BUSY)],
                              capture_output=True, check=True).stdout
    first, second = once(), once()
    assert first == second and first.count(b"\n") == 340


def test_json_has_every_documented_key(capsys):
    status, out, _ = run(capsys, "analyze", "--format", "json", SMALL)
    record = json.loads(out)
    assert status == 0
    assert list(record)[:len(DOCUMENTED)] == DOCUMENTED


DOCUMENTED = ["id", "client", "server", "ip_version", "first_frame", "last_frame", "start", "end", "open",
              "close", "half_close", "active_closer", "reset_by", "reset_state", "roles_inferred", "states",
              "final", "retransmits", "keepalives", "syn_data", "packets", "payload_bytes", "options",
              "anomalies"]


def test_json_summary_goes_to_stderr_so_stdout_stays_json(capsys):
    _, out, err = run(capsys, "analyze", "--format", "json", BUSY)
    assert all(line.startswith("{") for line in out.splitlines())
    assert "busy.pcap: " in err and "open:  handshake 310, refused 30" in err


def test_csv_one_row_per_connection(capsys):
    _, out, _ = run(capsys, "analyze", "--format", "csv", "--no-summary", BUSY)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 340
    assert {row["close"] for row in rows} == {"four-way", "reset", "none"}
    first = next(r for r in rows if r["open"] == "refused")
    assert first["states_client"] == "SYN_SENT > CLOSED" and first["states_server"] == ""


def test_several_captures_name_their_source(capsys, tmp_path):
    _, out, _ = run(capsys, "analyze", "--format", "json", SMALL, SAMPLES / "refused.pcap")
    assert [json.loads(line)["capture"].rsplit("/", 1)[1] for line in out.splitlines()] == [
        "threeway_close.pcap", "refused.pcap"]


def test_table_and_summary(capsys):
    status, out, _ = run(capsys, "analyze", SAMPLES / "simultaneous_close.pcap")
    assert status == 0
    assert "simultaneous" in out and "TIME_WAIT/TIME_WAIT" in out
    assert "close: simultaneous 1" in out
    assert "final server states: TIME_WAIT 1" in out


def test_output_file(capsys, tmp_path):
    target = tmp_path / "out.jsonl"
    run(capsys, "analyze", "--format", "json", "-o", target, "--no-summary", SMALL)
    assert json.loads(target.read_text())["close"] == "three-way"


def test_progress_bar_on_a_terminal(monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_MIN_BYTES", 0)
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    seen = []
    with cli._progress_bar(BUSY, Styled(console=console)) as progress:
        assert progress is not None
        list(analyzer.analyze(BUSY, progress=lambda n: (seen.append(n), progress(n))))
    assert seen and seen[-1] == BUSY.stat().st_size


def test_no_progress_bar_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_MIN_BYTES", 0)
    for env in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(env, raising=False)
    with cli._progress_bar(BUSY, Styled(io.StringIO())) as progress:
        assert progress is None


def test_styled_lines_are_plain_text_off_a_terminal(monkeypatch):
    """Off a terminal a line is its pieces' text as it stands (what rich writes there), markup-like brackets and
    emoji codes included; with FORCE_COLOR, rich styles it."""
    for env in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(env, raising=False)
    plain = io.StringIO()
    Styled(plain).line(("[x]:smile:.pcap", "bold"), ": 3 frames, ", ("bad frames: 1", "yellow"))
    assert plain.getvalue() == "[x]:smile:.pcap: 3 frames, bad frames: 1\n"
    monkeypatch.setenv("FORCE_COLOR", "1")
    styled = io.StringIO()
    Styled(styled).line(("[x]:smile:.pcap", "bold"), ": 3 frames")
    assert styled.getvalue() == "\x1b[1m[x]:smile:.pcap\x1b[0m: 3 frames\n"


def test_json_to_a_pipe_does_not_import_rich():
    """Start-up time: `synfin analyze -f json` with nothing to style never imports rich (about 50 ms)."""
    code = ("import sys; from analyzer.cli import main; status = main(['analyze', '-f', 'json', sys.argv[1]]); "
            "print('rich imported' if any(m.split('.')[0] == 'rich' for m in sys.modules) else 'no rich', "
            "status, file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run([sys.executable, "-c", code, str(SMALL)], capture_output=True, text=True, env=env)
    assert done.stderr.splitlines()[-1] == "no rich 0", done.stderr
    assert done.stderr.startswith(f"{SMALL}: 10 frames, 10 TCP segments, 1 connection")


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "analyzer", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"synfin {analyzer.__version__}"


def test_dataframe_helper():
    pytest.importorskip("pandas")
    frame = analyzer.to_dataframe(analyzer.analyze(BUSY))
    assert len(frame) == 340
    counts = frame["close"].value_counts()  # a category: every close label, the absent ones counted 0
    assert counts[counts > 0].to_dict() == {"four-way": 230, "reset": 80, "none": 30}
    assert str(frame["start"].dtype).startswith("datetime64")


def test_table_colours_labels_only_on_a_terminal():
    from analyzer.report import write_table

    conns = list(analyzer.analyze(SAMPLES / "refused.pcap", engine="reference"))  # write_table takes Connections
    plain, tty = io.StringIO(), io.StringIO()
    write_table(conns, Console(file=plain))
    write_table(conns, Console(file=tty, force_terminal=True))
    assert "\x1b[" not in plain.getvalue()
    assert "\x1b[31mrefused" in tty.getvalue()
    header, row = plain.getvalue().splitlines()
    assert header.split()[:5] == ["id", "client", "server", "open", "close"]
    assert row.split()[3:5] == ["refused", "none"]


def test_summary_of_an_empty_capture(tmp_path, capsys):
    from tests.pcapwrite import write_pcap

    status, out, _ = run(capsys, "analyze", write_pcap(tmp_path / "empty.pcap", [], 1))
    assert status == 0
    assert "0 frames, 0 TCP segments, 0 connections" in out and "()" not in out


def test_unseen_is_the_last_key_and_the_last_csv_column(capsys):
    """Issue 13: which side was never seen, added at the end (keys are added, never moved)."""
    one_sided = str(SAMPLES / "one_sided_client.pcap")
    _, out, _ = run(capsys, "analyze", "--format", "json", one_sided)
    record = json.loads(out)
    assert list(record)[-1] == "unseen" and record["unseen"] == "server"
    _, out, _ = run(capsys, "analyze", "--format", "csv", "--no-summary", one_sided)
    header, row = out.splitlines()
    assert header.endswith(",unseen") and row.endswith(",server")
    _, out, _ = run(capsys, "analyze", "--format", "csv", "--no-summary", SMALL)
    assert out.splitlines()[1].endswith(",")  # seen both ways: an empty cell

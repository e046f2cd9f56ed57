"""`synfin ladder` through the command line: outputs, names, formats, and clear errors.

Captures are written here with tests/pcapwrite.py, so these tests do not
depend on samples/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import analyzer
from analyzer.cli import main
from analyzer.ladder import build
from analyzer.ladder_text import mermaid, text
from tests.pcapwrite import LINKTYPE_ETHERNET, frame, handshake_packets, write_pcap


def capture(tmp_path: Path, connections: int = 1, name: str = "talk.pcap") -> Path:
    packets = [p for n in range(connections) for p in handshake_packets(sport=40000 + n)]
    frames = [frame(p, LINKTYPE_ETHERNET) for p in packets]
    return write_pcap(tmp_path / name, frames, LINKTYPE_ETHERNET)


def run(capsys, *args) -> tuple[int, str, str]:
    status = main(["ladder", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_default_is_one_png_per_connection_in_the_current_directory(tmp_path, capsys, monkeypatch):
    path = capture(tmp_path, connections=2)
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)
    status, out, _ = run(capsys, path)
    assert status == 0
    assert out.split() == ["talk-0.png", "talk-1.png"]
    for name in out.split():
        assert (work / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_one_connection_to_a_named_svg(tmp_path, capsys):
    path = capture(tmp_path)
    status, out, _ = run(capsys, path, "-o", tmp_path / "x.svg")
    assert status == 0 and out.strip() == str(tmp_path / "x.svg")
    svg = (tmp_path / "x.svg").read_text()
    for words in ("SYN  seq 0", "SYN+ACK  seq 0  ack 1", "FIN+ACK  seq 1  ack 1", "SYN_SENT", "TIME_WAIT",
                  "LAST_ACK", "10.0.0.1:40000", "open: handshake · close: four-way"):
        assert words in svg


def test_several_connections_one_pdf_with_a_page_each(tmp_path, capsys):
    path = capture(tmp_path, connections=3)
    status, out, _ = run(capsys, path, "-o", tmp_path / "all.pdf")
    assert status == 0 and out.split() == [str(tmp_path / "all.pdf")]
    pdf = (tmp_path / "all.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 3


def test_several_connections_to_png_get_numbered_names(tmp_path, capsys):
    path = capture(tmp_path, connections=3)
    status, out, _ = run(capsys, path, "--conn", "0", "2", "-o", tmp_path / "x.png")
    assert status == 0
    assert out.split() == [str(tmp_path / "x-0.png"), str(tmp_path / "x-2.png")]
    assert not (tmp_path / "x-1.png").exists()


def test_text_and_mermaid_print_what_the_model_says(tmp_path, capsys):
    path = capture(tmp_path, connections=2)
    conn = next(c for c in analyzer.analyze(path, keep_segments=True) if c.id == 1)
    status, out, _ = run(capsys, path, "--conn", "1", "--text")
    assert status == 0 and out == text(build(conn))
    status, out, _ = run(capsys, path, "--conn", "1", "--mermaid", "--absolute", "--time", "sequential")
    assert status == 0 and out == mermaid(build(conn, "sequential", absolute=True))
    assert "SYN  seq 100 (frame 8)" in out  # raw numbers: the ISN is 100


def test_text_to_a_file(tmp_path, capsys):
    path = capture(tmp_path)
    status, out, _ = run(capsys, path, "--text", "-o", tmp_path / "ladder.txt")
    assert status == 0 and out == ""
    assert "SYN_SENT ─┤── SYN  seq 0 ─" in (tmp_path / "ladder.txt").read_text(encoding="utf-8")


def test_unknown_connection_lists_the_ones_there_are(tmp_path, capsys):
    path = capture(tmp_path, connections=3)
    status, out, err = run(capsys, path, "--conn", "7", "--text")
    assert status == 2 and out == ""
    assert "no connection 7" in err and "the connections there are 0-2" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--conn", "x"], "--conn takes connection ids"),
    (["-o", "ladder.txt"], "must end in .png, .svg or .pdf"),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    status, _, err = run(capsys, capture(tmp_path), *args)
    assert status == 2 and message in err


def test_unreadable_capture(tmp_path, capsys):
    bad = tmp_path / "bad.pcap"
    bad.write_text("not a capture")
    status, _, err = run(capsys, bad)
    assert status == 2 and "bad.pcap" in err and "not a pcap or pcapng capture" in err
    status, _, err = run(capsys, tmp_path / "missing.pcap")
    assert status == 2 and "missing.pcap" in err


def test_unwritable_output(tmp_path, capsys):
    status, _, err = run(capsys, capture(tmp_path), "-o", tmp_path / "no" / "such" / "dir.png")
    assert status == 2 and "cannot write" in err


def test_many_connections_need_a_choice_for_picture_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("analyzer.ladder_cli.MAX_DEFAULT_FILES", 2)
    path = capture(tmp_path, connections=3)
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, path)
    assert status == 2 and "3 connections" in err and "--conn" in err
    status, out, _ = run(capsys, path, "--conn", "all")
    assert status == 0 and len(out.split()) == 3


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["ladder", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for option in ("--conn", "--output", "--time", "--absolute", "--all-segments", "--text", "--mermaid",
                   "--msl", "CAPTURE-ID.png"):
        assert option in out

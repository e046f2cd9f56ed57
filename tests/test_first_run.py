"""What a new user meets first (issue 13): a gzip capture cut short, an empty capture, a bad timing
option, the notebook copied out of the source tree.

Each runs through both engines where both apply: the compiled one (`--engine compiled`, when built)
and the reference pipeline.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import analyzer
from analyzer import engine
from analyzer.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
ENGINES = ["reference"] + (["compiled"] if engine.available() else [])


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main(["analyze", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return status, captured.out, captured.err


def _unpacked_prefix(packed: bytes) -> bytes:
    """What a gzip file cut short still holds, unpacked as far as it goes."""
    return zlib.decompressobj(wbits=31).decompress(packed)


@pytest.mark.parametrize("which", ENGINES)
def test_gzip_cut_short_is_read_up_to_the_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              which: str) -> None:
    """A .gz cut mid-stream gives the connections of the frames before the cut, as the same bytes unpacked
    and cut short as a plain pcap do; the cut is counted and named as damage, exit status 0."""
    packed = gzip.compress((SAMPLES / "busy.pcap").read_bytes(), mtime=0)
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(packed[:len(packed) // 2])
    plain = tmp_path / "cut.pcap"
    plain.write_bytes(_unpacked_prefix(cut.read_bytes()))
    status, out, err = run(capsys, cut, "--format", "json", "--engine", which)
    assert status == 0
    _, plain_out, plain_err = run(capsys, plain, "--format", "json", "--engine", which)
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) > 100 and out == plain_out
    assert "gzip data cut short (no end-of-stream marker)" in err
    plain_bad = int(plain_err.split("bad frames: ")[1].split()[0])
    assert f"bad frames: {plain_bad + 1} " in err


@pytest.mark.parametrize("which", ENGINES)
def test_gzip_without_its_trailer_is_named_after_the_last_frame(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               which: str) -> None:
    """Cut right after the deflate data (the 8-byte trailer missing): every frame is there, the cut is the one
    damaged spot, numbered after the last frame (busy.pcap has 3280)."""
    cut = tmp_path / "notrailer.pcap.gz"
    cut.write_bytes(gzip.compress((SAMPLES / "busy.pcap").read_bytes(), mtime=0)[:-8])
    status, out, err = run(capsys, cut, "--format", "json", "--engine", which)
    assert status == 0 and len(out.splitlines()) == 340
    assert "3280 frames" in err
    assert "bad frames: 1 (first: frame 3281: gzip data cut short" in err


@pytest.mark.parametrize("which", ENGINES)
def test_empty_capture_has_no_blank_summary_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  which: str) -> None:
    """A pcap header and no frame: exit 0, a summary saying so, no `final client states: ` with nothing after."""
    empty = tmp_path / "empty.pcap"
    empty.write_bytes((SAMPLES / "busy.pcap").read_bytes()[:24])
    status, out, err = run(capsys, empty, "--engine", which)
    assert status == 0
    lines = (out + err).splitlines()
    assert lines[0].split()[:3] == ["id", "client", "server"]  # the table's header, and no row
    assert lines[1:] == [f"{empty}: 0 frames, 0 TCP segments, 0 connections"]


@pytest.mark.parametrize("option", ["--msl", "--idle-timeout", "--handshake-timeout"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "soon"])
def test_bad_timing_option_is_refused(capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["analyze", f"{option}={value}", str(SAMPLES / "busy.pcap")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0] and value in errors[0]


def test_zero_msl_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, SAMPLES / "busy.pcap", "--msl", "0", "--format", "json")
    assert status == 0 and len(out.splitlines()) == 340


@pytest.mark.parametrize("name", ["msl", "idle_timeout", "handshake_timeout"])
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_timing_argument_raises_valueerror(name: str, value: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        analyzer.analyze(SAMPLES / "busy.pcap", **{name: value})


def _first_cell() -> str:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(ROOT / "notebooks" / "tcp_handshake_and_teardown.ipynb", as_version=4)
    return next(cell.source for cell in notebook.cells if cell.cell_type == "code")


def test_notebook_copied_out_of_the_tree_finds_the_samples(tmp_path: Path) -> None:
    """Run from a folder outside the checkout, the notebook's set-up finds the samples through the installed
    analyzer package (an editable install: the checkout), not by walking up from the working directory."""
    shutil.copy(ROOT / "notebooks" / "tcp_handshake_and_teardown.ipynb", tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("SYNFIN_SAMPLES", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-c", _first_cell() + "\nprint(SAMPLES)"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == SAMPLES


def test_notebook_says_what_is_missing(tmp_path: Path) -> None:
    """With nowhere to find them, one clear error naming where it looked and what to do, not StopIteration."""
    env = {**os.environ, "SYNFIN_SAMPLES": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _first_cell()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("FileNotFoundError: the synfin sample captures") and str(tmp_path) in last
    assert "SYNFIN_SAMPLES" in last

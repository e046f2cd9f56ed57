"""Captures that are not files on a disk: a named pipe, bash's `<(cat x)`, and standard input ("-").

A pipe can be read once, from its start, and never reopened or rewound (issue 11, finding 2: the compiled
engine reopened the path it had already read the head of, and hung on a named pipe or said "not a pcap"; the
reference reopened a gzip file and lost its head). Each test runs `synfin` in a subprocess, with a timeout as
the hang guard, on the samples (real captures) and gzip copies of them, with both engines, and holds the
output to what the same command writes for the same file given by its path: the connections byte for byte,
the summary with the capture's name changed. Errors on standard input are the file's sentences, naming
"standard input".
"""

from __future__ import annotations

import functools
import gzip
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from analyzer import engine
from analyzer.capture import open_capture
from analyzer.ladder_cli import capture_stem

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HANG = 60  # seconds: far above a run here (well under 2 s), so a timeout means the command hung
ENGINES = ["reference", pytest.param("compiled", marks=pytest.mark.skipif(
    not engine.available(), reason="the compiled engine is not built"))]
KINDS = ["pcap", "pcapng", "gzip"]


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real capture of each kind: busy.pcap (290 KB, more than a pipe holds), a dumpcap pcapng, and
    busy.pcap gzip-compressed."""
    packed = tmp_path_factory.mktemp("pipes") / "busy.pcap.gz"
    packed.write_bytes(gzip.compress((SAMPLES / "busy.pcap").read_bytes(), mtime=0))
    return {"pcap": SAMPLES / "busy.pcap", "pcapng": SAMPLES / "dumpcap_pcapng.pcapng", "gzip": packed}


def synfin(*args: object, stdin: object = None, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`synfin ARGS` in a subprocess; a hang fails the test (TimeoutExpired) instead of stalling the suite."""
    return subprocess.run([sys.executable, "-m", "analyzer", *map(str, args)], stdin=stdin, input=data,
                          capture_output=True, timeout=HANG)


@functools.cache
def by_path(engine_name: str, path: Path, fmt: str = "json") -> subprocess.CompletedProcess[bytes]:
    done = synfin("analyze", "--engine", engine_name, "-f", fmt, path)
    assert done.returncode == 0, done.stderr
    return done


def assert_same_as_by_path(done: subprocess.CompletedProcess[bytes], engine_name: str, path: Path, name: str,
                           fmt: str = "json") -> None:
    """The connections as by path, byte for byte; the summary too (on stderr, or after the table), naming the
    capture `name`."""
    expected = by_path(engine_name, path, fmt)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.stdout.replace(str(path).encode(), name.encode()) and done.stdout
    assert done.stderr == expected.stderr.replace(str(path).encode(), name.encode())
    summary = done.stdout if fmt == "table" else done.stderr
    assert summary.count(f"{name}: ".encode()) == 1


@contextmanager
def fifo_fed(tmp_path: Path, data: bytes, trickle: int = 0) -> Iterator[Path]:
    """A named pipe, and a thread writing `data` into it once a reader opens it: the first `trickle` bytes one
    at a time, 10 ms apart (a slow writer: the head comes in pieces), then the rest."""
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        try:
            with open(fifo, "wb", buffering=0) as pipe:
                for i in range(trickle):
                    pipe.write(data[i:i + 1])
                    time.sleep(0.01)
                pipe.write(data[trickle:])
        except BrokenPipeError:  # the reader gave up (the test fails on its own account)
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield fifo
    finally:
        if writer.is_alive():  # blocked in open() for want of a reader: be one, briefly, to let it go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(HANG)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_named_pipe(tmp_path: Path, captures: dict[str, Path], engine_name: str, kind: str) -> None:
    path = captures[kind]
    with fifo_fed(tmp_path, path.read_bytes()) as fifo:
        done = synfin("analyze", "--engine", engine_name, "-f", "json", fifo)
    assert_same_as_by_path(done, engine_name, path, str(fifo))


@pytest.mark.parametrize("kind", ["pcap", "gzip"])
@pytest.mark.parametrize("engine_name", ENGINES)
def test_named_pipe_with_a_slow_writer(tmp_path: Path, captures: dict[str, Path], engine_name: str,
                                       kind: str) -> None:
    """The first bytes arrive one by one: the format is told from 4 bytes, not from what the first read got."""
    path = captures[kind]
    with fifo_fed(tmp_path, path.read_bytes(), trickle=30) as fifo:
        done = synfin("analyze", "--engine", engine_name, "-f", "json", fifo)
    assert_same_as_by_path(done, engine_name, path, str(fifo))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_bash_process_substitution(captures: dict[str, Path], engine_name: str, kind: str) -> None:
    path = captures[kind]
    script = '"$0" -m analyzer analyze --engine "$1" -f json <(cat "$2")'
    done = subprocess.run(["bash", "-c", script, sys.executable, engine_name, str(path)], capture_output=True,
                          timeout=HANG)
    name = done.stderr.split(b": ", 1)[0].decode()
    assert name.startswith(("/dev/fd/", "/proc/self/fd/")), done.stderr
    assert_same_as_by_path(done, engine_name, path, name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_standard_input(captures: dict[str, Path], engine_name: str, kind: str) -> None:
    """"-" reads standard input: from a pipe, and redirected from a file (which the engine reads on its own
    thread, as it does a file given by path)."""
    path = captures[kind]
    piped = synfin("analyze", "--engine", engine_name, "-f", "json", "-", data=path.read_bytes())
    assert_same_as_by_path(piped, engine_name, path, "standard input")
    with open(path, "rb") as redirected:
        done = synfin("analyze", "--engine", engine_name, "-f", "json", "-", stdin=redirected)
    assert_same_as_by_path(done, engine_name, path, "standard input")


@pytest.mark.parametrize("engine_name", ENGINES)
def test_standard_input_table_format(engine_name: str) -> None:
    path = SAMPLES / "busy.pcap"
    done = synfin("analyze", "--engine", engine_name, "-", data=path.read_bytes())
    assert_same_as_by_path(done, engine_name, path, "standard input", fmt="table")


@pytest.mark.parametrize("kind", ["pcap", "gzip"])
@pytest.mark.parametrize("engine_name", ENGINES)
def test_standard_input_read_from_where_it_stands(tmp_path: Path, captures: dict[str, Path], engine_name: str,
                                                  kind: str) -> None:
    """A file on standard input is read from its current offset, as `tcpdump -r -` and `cat` do: here 100
    bytes of something else precede the capture, and the caller has read past them."""
    path = captures[kind]
    shifted = tmp_path / "shifted"
    shifted.write_bytes(b"x" * 100 + path.read_bytes())
    with open(shifted, "rb") as stdin:
        stdin.seek(100)
        done = synfin("analyze", "--engine", engine_name, "-f", "json", "-", stdin=stdin)
    assert_same_as_by_path(done, engine_name, path, "standard input")


NOT_CAPTURES = {
    "empty": b"",
    "text": b"hello, not a capture at all\n",
    "gzip header only": b"\x1f\x8b\x08\x00garbage",
    "gzip of text": gzip.compress(b"hello, not a capture", mtime=0),
    "pcap header cut short": (SAMPLES / "busy.pcap").read_bytes()[:10],
}


@pytest.mark.parametrize("what", NOT_CAPTURES)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_not_a_capture_on_standard_input(tmp_path: Path, engine_name: str, what: str) -> None:
    """The file's error, naming standard input: one line, exit status 2, no traceback."""
    data = NOT_CAPTURES[what]
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    as_file = synfin("analyze", "--engine", engine_name, path)
    done = synfin("analyze", "--engine", engine_name, "-", data=data)
    assert as_file.returncode == done.returncode == 2
    assert done.stderr == as_file.stderr.replace(str(path).encode(), b"standard input")
    assert done.stderr.startswith(b"synfin: standard input: ") and done.stderr.count(b"\n") == 1
    assert done.stdout == as_file.stdout


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_terminal_on_standard_input_is_refused_not_waited_on(engine_name: str) -> None:
    primary, secondary = os.openpty()
    try:
        done = synfin("analyze", "--engine", engine_name, "-", stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 2
    assert done.stderr.startswith(b"synfin: standard input: is a terminal, not a capture")


def test_ladder_reads_standard_input_and_named_pipes(tmp_path: Path, captures: dict[str, Path]) -> None:
    args = ("ladder", "--conn", "0", "--text")
    expected = synfin(*args, SAMPLES / "busy.pcap")
    assert expected.returncode == 0 and expected.stdout
    piped = synfin(*args, "-", data=captures["gzip"].read_bytes())
    assert (piped.returncode, piped.stdout) == (0, expected.stdout), piped.stderr
    with fifo_fed(tmp_path, captures["gzip"].read_bytes()) as fifo:
        from_fifo = synfin(*args, fifo)
    assert (from_fifo.returncode, from_fifo.stdout) == (0, expected.stdout), from_fifo.stderr
    missing = synfin("ladder", "--conn", "9999", "--text", "-", data=captures["pcap"].read_bytes())
    assert missing.returncode == 2 and missing.stderr.startswith(b"synfin: standard input: no connection 9999")
    assert capture_stem("-") == "stdin"  # pictures from standard input: stdin-ID.png, not --ID.png
    assert capture_stem(Path("-")) == "-"  # a Path is a file: ./- on the command line


def test_python_api_reads_standard_input(captures: dict[str, Path]) -> None:
    code = ("import analyzer, sys\n"
            "for c in analyzer.analyze(sys.argv[1]): print(c.id, c.labels['open'], c.labels['close'])")
    expected = subprocess.run([sys.executable, "-c", code, str(captures["pcap"])], capture_output=True,
                              timeout=HANG)
    done = subprocess.run([sys.executable, "-c", code, "-"], input=captures["gzip"].read_bytes(),
                          capture_output=True, timeout=HANG)
    assert expected.returncode == 0 and expected.stdout.count(b"\n") == 340
    assert (done.returncode, done.stdout, done.stderr) == (0, expected.stdout, b"")


def test_the_engine_reads_a_plain_file_on_its_own_thread(tmp_path: Path, captures: dict[str, Path]) -> None:
    """The fast path stays: a plain file that can seek hands the engine its descriptor, at the capture's start;
    gzip and pipes are read through the stream, which gives back the head it read."""
    plain = open_capture(captures["pcap"])
    try:
        fd = plain.own_fd()
        assert fd == plain.file.fileno() and os.lseek(fd, 0, os.SEEK_CUR) == 0
    finally:
        plain.close()
    packed = open_capture(captures["gzip"])
    try:
        assert packed.own_fd() == -1 and packed.stream.read(4) == plain.head
    finally:
        packed.close()
    with fifo_fed(tmp_path, captures["pcap"].read_bytes()) as fifo:
        piped = open_capture(fifo)
        try:
            assert piped.own_fd() == -1 and piped.stream.read() == captures["pcap"].read_bytes()
        finally:
            piped.close()


@pytest.mark.parametrize("engine_name", ENGINES)
def test_standard_input_among_several_captures(tmp_path: Path, engine_name: str) -> None:
    """The JSON capture field (and CSV column) keeps the name as given, "-"; the summary says standard input.
    A file named "-" is ./-, as for tcpdump."""
    small = SAMPLES / "threeway_close.pcap"
    (tmp_path / "-").write_bytes((SAMPLES / "refused.pcap").read_bytes())
    done = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--engine", engine_name, "-f", "json",
                           str(small), "-", "./-"], input=(SAMPLES / "busy.pcap").read_bytes(), cwd=tmp_path,
                          capture_output=True, timeout=HANG)
    assert done.returncode == 0, done.stderr
    names = [line.split(b'"capture": ', 1)[1] for line in done.stdout.splitlines()]
    assert names == [b'"' + str(small).encode() + b'"}'] + [b'"-"}'] * 340 + [b'"./-"}']
    assert [line.split(b": ")[0] for line in done.stderr.splitlines() if not line.startswith(b" ")] == [
        str(small).encode(), b"standard input", b"./-"]

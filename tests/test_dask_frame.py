"""analyzer.to_dask_dataframe (analyzer/dask_frame.py): a capture's or rotated set's connections as a Dask DataFrame.

The set is busy.pcap (340 connections, kernel-made) cut by editcap every 400 frames into 9 files named
backwards in time (tests/test_rotated.cut). Whatever the partitioning, the computed frame must be
to_dataframe's of the whole file, values and dtypes (index included), once sorted by id; each partition is
sorted by id and divisions are claimed only when the partitions' id ranges do not overlap.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
pytest.importorskip("pyarrow")

import analyzer  # noqa: E402
from analyzer import engine  # noqa: E402
from analyzer.dask_frame import ExtraMissing, PartitionWriter  # noqa: E402
from analyzer.frames import read_csv, read_csv_chunks  # noqa: E402
from tests.test_rotated import SAMPLES, cut  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None or not engine.available(),
                                reason="needs editcap and the compiled engine")
BUSY = SAMPLES / "busy.pcap"
#: busy.pcap's records with these timers come out of id order once (id 430, then id 2, at row 253)
SHORT_TIMERS = {"msl": 0.05, "handshake_timeout": 0.2, "idle_timeout": 0.5}


@pytest.fixture(scope="module")
def busy_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    into = tmp_path_factory.mktemp("busy") / "parts"
    assert len(cut("busy.pcap", into, ["-c", "400"])) == 9
    return into


def whole(**options: object) -> pd.DataFrame:
    """to_dataframe of busy.pcap read as one file, sorted by id (the stream's order is the finishing order)."""
    return analyzer.to_dataframe(analyzer.analyze(BUSY, **options)).sort_index()  # type: ignore[arg-type]


def assert_same(ddf: dd.DataFrame, expected: pd.DataFrame) -> None:
    """The Dask frame's declared dtypes and its computed rows are to_dataframe's."""
    pd.testing.assert_series_equal(ddf.dtypes, expected.dtypes)
    got = ddf.compute()
    assert str(got.index.dtype) == "Int64" and got.index.name == "id"
    pd.testing.assert_frame_equal(got.sort_index(), expected)


def partition_ids(ddf: dd.DataFrame) -> list[list[int]]:
    return [list(ddf.get_partition(k).compute().index) for k in range(ddf.npartitions)]


def test_a_set_gives_the_whole_files_frame(busy_set: Path) -> None:
    ddf = analyzer.to_dask_dataframe(busy_set)
    expected = whole()
    assert len(expected) == 340 and ddf.npartitions == 1
    assert_same(ddf, expected)
    assert expected["open"].cat.categories[0] == "handshake"  # the categories are the labels', all of them
    assert str(expected["start"].dtype) == "datetime64[ns, UTC]"


def test_small_partitions_are_chunks_of_the_stream_sorted_within(busy_set: Path) -> None:
    ddf = analyzer.to_dask_dataframe(busy_set, rows_per_partition=50)
    ids = partition_ids(ddf)
    assert [len(chunk) for chunk in ids] == [50] * 6 + [40]
    assert all(chunk == sorted(chunk) for chunk in ids)
    assert ddf.known_divisions  # busy.pcap's connections all retire at the end, in id order
    assert ddf.divisions == (*[chunk[0] for chunk in ids], ids[-1][-1])
    assert_same(ddf, whole())
    assert ddf.loc[123].compute().index.tolist() == [123]


def test_overlapping_partitions_leave_divisions_unknown(busy_set: Path) -> None:
    """With short timers connections retire as they go: the stream runs up to id 430, then back to id 2."""
    ddf = analyzer.to_dask_dataframe(busy_set, rows_per_partition=50, **SHORT_TIMERS)  # type: ignore[arg-type]
    ids = partition_ids(ddf)
    assert len(ids) == 12 and max(ids[5]) == 430 and min(ids[5]) == 2  # rows 250-299 hold the turn
    assert all(chunk == sorted(chunk) for chunk in ids)
    assert not ddf.known_divisions
    assert_same(ddf, whole(**SHORT_TIMERS))


def test_where_and_bpf_pass_through(busy_set: Path) -> None:
    resets = analyzer.to_dask_dataframe(busy_set, where="close=reset", rows_per_partition=7)
    expected = whole(where="close=reset")
    assert 0 < len(expected) < 340 and set(expected["close"]) == {"reset"}
    assert_same(resets, expected)
    port = int(str(whole().iloc[0]["server"]).rpartition(":")[2])
    one_port = analyzer.to_dask_dataframe(busy_set, bpf=f"tcp port {port}")
    expected = whole(bpf=f"tcp port {port}")
    assert 0 < len(expected) < 340
    assert_same(one_port, expected)


def test_stats_and_capture_pass_through(busy_set: Path) -> None:
    stats = analyzer.Stats()
    ddf = analyzer.to_dask_dataframe(busy_set, stats=stats, capture="week", rows_per_partition=100)
    assert stats.connections == 340 and stats.boundaries  # filled when the analysis is done, before compute()
    expected = analyzer.to_dataframe(analyzer.analyze(BUSY), capture="week").sort_index()
    assert set(expected["capture"]) == {"week"}
    assert_same(ddf, expected)


@pytest.mark.parametrize("engine_name", ["compiled", "reference"])
def test_no_connections_still_has_the_columns_and_dtypes(busy_set: Path, engine_name: str) -> None:
    ddf = analyzer.to_dask_dataframe(busy_set, where="open=refused close=four-way", engine=engine_name)
    assert ddf.npartitions == 1 and not ddf.known_divisions
    expected = whole(where="open=refused close=four-way")
    assert len(expected) == 0 and expected["open"].cat.categories[0] == "handshake"
    assert str(expected["start"].dtype) == "datetime64[ns, UTC]"  # pandas alone makes an empty column's us
    assert_same(ddf, expected)


def test_divisions_only_for_disjoint_ascending_ranges(tmp_path: Path) -> None:
    frame = whole()
    cases = {"ascending": ([0, 1], [2, 3], True), "overlapping": ([0, 2], [1, 3], False),
             "descending": ([2, 3], [0, 1], False), "touching": ([0, 1], [1, 2], False)}
    for name, (first, second, known) in cases.items():
        writer = PartitionWriter(tmp_path)
        writer.write_all([frame.iloc[first], frame.iloc[second]])
        assert writer.ordered() is known, name
        writer.remove()
        assert list(tmp_path.iterdir()) == []


def test_on_a_local_dask_cluster(busy_set: Path) -> None:
    """workers=1: the set's files analyzed on a LocalCluster and merged (parallel.py), the same frame."""
    assert_same(analyzer.to_dask_dataframe(busy_set, workers=1, rows_per_partition=100), whole())


def test_on_the_reference_pipeline(busy_set: Path) -> None:
    """engine="reference" yields Connections, not a RecordStream: their CSV rows, chunk by chunk."""
    ddf = analyzer.to_dask_dataframe(busy_set, engine="reference", rows_per_partition=100)
    assert ddf.npartitions == 4
    assert_same(ddf, whole())


def test_directory_keeps_the_files(busy_set: Path, tmp_path: Path) -> None:
    into = tmp_path / "frames" / "busy"
    ddf = analyzer.to_dask_dataframe(busy_set, directory=into, rows_per_partition=200)
    names = sorted(path.name for path in into.iterdir())
    assert names == ["part-000000.parquet", "part-000001.parquet"]
    del ddf
    again = dd.read_parquet(str(into), index="id").compute()
    pd.testing.assert_frame_equal(again.sort_index(), whole())
    with pytest.raises(FileExistsError, match="not empty"):
        analyzer.to_dask_dataframe(busy_set, directory=into)
    assert sorted(path.name for path in into.iterdir()) == names


def test_the_temporary_directory_goes_at_exit(busy_set: Path, tmp_path: Path) -> None:
    script = ("import os, tempfile, analyzer\n"
              "ddf = analyzer.to_dask_dataframe(os.environ['SET'], rows_per_partition=100)\n"
              "[made] = os.listdir(tempfile.gettempdir())\n"
              "print(made, len(os.listdir(os.path.join(tempfile.gettempdir(), made))), len(ddf))\n")
    env = {**os.environ, "TMPDIR": str(tmp_path), "SET": str(busy_set)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    made, files, rows = out.stdout.split()
    assert made.startswith("synfin-dask-") and (files, rows) == ("4", "340")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture\n")
    into = tmp_path / "out"
    with pytest.raises(analyzer.CaptureError, match=r"notes\.pcap"):
        analyzer.to_dask_dataframe(bad, directory=into)
    assert list(into.iterdir()) == []
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(analyzer.CaptureError, match=r"notes\.pcap"):
        analyzer.to_dask_dataframe(bad)
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary directory went at once
    with pytest.raises(analyzer.FilterError):
        analyzer.to_dask_dataframe(BUSY, bpf="tcp port", directory=into)
    with pytest.raises(ValueError, match="rows_per_partition"):
        analyzer.to_dask_dataframe(BUSY, rows_per_partition=0)


def test_a_failed_write_removes_the_partitions_before_it(busy_set: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up at the third partition: the error comes out, the engine stops, no partial frame stays."""
    write = pd.DataFrame.to_parquet
    written: list[object] = []

    def fill_up(frame: pd.DataFrame, path: object, **options: object) -> None:
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)
        write(frame, path, **options)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fill_up)
    into = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        analyzer.to_dask_dataframe(busy_set, directory=into, rows_per_partition=50)
    assert len(written) == 2 and list(into.iterdir()) == []


@pytest.mark.parametrize("missing", ["pyarrow", "dask.dataframe", "pandas"])
def test_without_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'synfin\[dask\]'") as caught:
        analyzer.to_dask_dataframe(BUSY, directory=tmp_path / "out")
    assert isinstance(caught.value, ExtraMissing) and missing.split(".")[0] in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_csv_chunks_are_read_csv_in_pieces() -> None:
    rows = b"".join(engine_csv(BUSY))
    chunks = list(read_csv_chunks(io.BytesIO(rows), 120))
    assert [len(chunk) for chunk in chunks] == [120, 120, 100]
    pd.testing.assert_frame_equal(pd.concat(chunks), read_csv(io.BytesIO(rows)))


def engine_csv(path: Path) -> list[bytes]:
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-f", "csv", str(path)], capture_output=True,
                         check=True)
    return out.stdout.splitlines(keepends=True)[1:]  # without the header

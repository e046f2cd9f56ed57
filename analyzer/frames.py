"""Connections as a pandas DataFrame, for notebooks (the `pandas` extra).

One way in for every source: the CLI's CSV text, parsed by pandas' C reader
with the dtypes below. `to_dataframe(analyze(path))` of a stream that has not
started runs the compiled engine with `--format csv` into a pipe and reads it
as it comes (records.RecordStream.consume): no Python object per connection,
let alone per packet. Records (analyze() on the engine) hand over their CSV
rows; Connections (the reference) are written by report.write_csv, the
bytes the engine is held to. So the two paths give the same frame, values and
dtypes, by construction (tests/test_api.py checks it on every sample).

A column added to the CSV (report.CSV_FIELDS) is read as text unless it is
named in one of the dtype lists below: the one place to change.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from analyzer import engine
from analyzer.connection import Connection
from analyzer.fsm import State
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS
from analyzer.records import Record, RecordStream
from analyzer.report import CSV_FIELDS, TIMING_FIELDS, write_csv

if TYPE_CHECKING:
    import pandas

INTS = ["id", "ip_version", "first_frame", "last_frame", "retransmits_syn", "retransmits_synack",
        "retransmits_fin", "keepalives", "packets_client", "packets_server", "payload_bytes_client",
        "payload_bytes_server", "anomalies"]
BOOLS = ["half_close", "roles_inferred", "syn_data"]
FLOATS = ["duration", *TIMING_FIELDS]  # seconds; <NA> where the record has null
TIMES = ["start", "end"]  # epoch seconds in the CSV, UTC datetimes in the frame
TIME_DTYPE = "datetime64[ns, UTC]"
_STATES = [str(state) for state in State]
CATEGORIES = {"open": OPEN_LABELS, "close": CLOSE_LABELS, "active_closer": ("client", "server", "both"),
              "reset_by": ("client", "server"), "reset_state": _STATES, "final_client": _STATES,
              "final_server": _STATES}


def dtypes() -> dict[str, Any]:
    """The dtype of each CSV column as read: every other column is text (pandas' "string")."""
    import pandas as pd

    types: dict[str, Any] = {name: "string" for name in CSV_FIELDS}
    types.update({name: "Int64" for name in INTS})
    types.update({name: "boolean" for name in BOOLS})
    types.update({name: "Float64" for name in FLOATS})
    types.update({name: "float64" for name in TIMES})
    types.update({name: pd.CategoricalDtype(list(values)) for name, values in CATEGORIES.items()})
    return types


def frame_dtypes() -> dict[str, Any]:
    """The dtype of each column of to_dataframe's frame (the index, `id`, is Int64)."""
    types = dtypes()
    del types["id"]
    types.update({name: TIME_DTYPE for name in TIMES})
    return types


def read_csv(source: IO[bytes] | IO[str]) -> pandas.DataFrame:
    """The CLI's CSV rows (no header) as a DataFrame indexed by `id`; start and end as UTC datetimes."""
    import pandas as pd

    return _indexed(pd.read_csv(source, **_csv_options()))


def read_csv_chunks(source: IO[bytes] | IO[str], rows: int) -> Iterator[pandas.DataFrame]:
    """The same rows as read_csv, `rows` at a time (the last chunk shorter; one empty chunk for no rows), each
    with read_csv's columns and dtypes: for output bigger than memory (dask_frame.py)."""
    import pandas as pd

    with pd.read_csv(source, chunksize=rows, **_csv_options()) as reader:
        for chunk in reader:
            yield _indexed(chunk)


def _csv_options() -> dict[str, Any]:
    """pandas.read_csv's arguments for the CLI's CSV: the C reader, our dtypes, only an empty cell is null."""
    return {"header": None, "names": CSV_FIELDS, "dtype": dtypes(), "keep_default_na": False, "na_values": [""],
            "engine": "c"}


def _indexed(frame: pandas.DataFrame) -> pandas.DataFrame:
    """A frame as read from the CSV, with start and end as UTC datetimes, indexed by `id`."""
    import pandas as pd

    for column in TIMES:  # pandas makes microseconds of an empty column, nanoseconds of any other: always ns
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True).astype(TIME_DTYPE)
    return frame.set_index("id")


def to_dataframe(conns: Iterable[Record] | Iterable[Connection], capture: str | None = None) -> pandas.DataFrame:
    """One row per connection, with the CSV columns, indexed by `id`.

    `start`/`end` are UTC datetimes; labels, reset state and final states `category` (every possible
    value a category, in the order of labels.py and RFC 9293's state list); counts nullable `Int64`;
    flags `boolean`; `duration` and the timing columns (handshake RTT, final-state age, time in each
    state) float seconds in nullable `Float64`, <NA> where the record has null; the rest `string`.
    """
    if isinstance(conns, RecordStream) and not conns.started:
        return conns.consume(read_csv, "csv", capture)  # type: ignore[no-any-return]
    return read_csv(io.StringIO(_csv_text(conns, capture)))


def _csv_text(conns: Iterable[Record] | Iterable[Connection], capture: str | None) -> str:
    """The CSV rows of Records and Connections alike (the slow path: Python per connection)."""
    out = io.StringIO()
    prefix = engine._quoted(capture, "csv").decode() if capture is not None else ""
    for conn in conns:
        if isinstance(conn, Record):
            out.write(prefix + conn.csv_row().decode() + "\n")  # the row starts with the empty capture cell
        else:
            write_csv([conn], out, capture, header=False)
    return out.getvalue()

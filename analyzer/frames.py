"""Connections as a pandas DataFrame, for notebooks (the `pandas` extra)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from analyzer.connection import Connection
from analyzer.report import CSV_FIELDS, TIMING_FIELDS, flat_record

if TYPE_CHECKING:
    import pandas


def to_dataframe(conns: Iterable[Connection], capture: str | None = None) -> pandas.DataFrame:
    """One row per connection, with the CSV columns; `start`/`end` as UTC datetimes.

    The timing columns (handshake RTT, final-state age, time in each state) are
    float seconds in pandas' nullable Float64: <NA> where the record has null.
    """
    import pandas as pd

    frame = pd.DataFrame([flat_record(conn, capture) for conn in conns], columns=CSV_FIELDS)
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    for column in TIMING_FIELDS:
        frame[column] = frame[column].astype("Float64")
    return frame.set_index("id")

"""synfin: how each TCP connection opened and closed, and why.

The public API::

    import analyzer
    for conn in analyzer.analyze("capture.pcap"):  # Records, from the compiled engine (records.py)
        print(conn.id, conn.labels["open"], conn.labels["close"], conn.server.state)
    df = analyzer.to_dataframe(analyzer.analyze("capture.pcap"))
    ddf = analyzer.to_dask_dataframe("/var/capture/week/")  # a set too big for one pandas frame: parquet chunks
    web = analyzer.analyze("capture.pcap", bpf="tcp port 443")  # frames as tcpdump -r selects them
    resets = analyzer.analyze("capture.pcap", where="close=reset")  # connections as --where selects them

A capture is a path (pcap or pcapng, optionally gzip-compressed; a named pipe
reads as a file does) or the string "-" for standard input, as on the command
line (a pathlib.Path is always a file: Path("-") is a file named -).
"""

from analyzer.bpf import FilterError
from analyzer.capture import CaptureError
from analyzer.connection import Anomaly, Connection, Timeouts
from analyzer.dask_frame import to_dask_dataframe  # imports dask, pandas and pyarrow only when called
from analyzer.fsm import Event, State
from analyzer.pipeline import Stats
from analyzer.records import EndpointView, Record, RecordStream, analyze, record
from analyzer.where import WhereError

__version__ = "0.1.0"


def to_dataframe(conns, capture=None):  # type: ignore[no-untyped-def]
    """A pandas DataFrame, one row per connection (needs the `pandas` extra)."""
    from analyzer.frames import to_dataframe as build

    return build(conns, capture)


__all__ = [
    "Anomaly",
    "CaptureError",
    "Connection",
    "EndpointView",
    "Event",
    "FilterError",
    "Record",
    "RecordStream",
    "State",
    "Stats",
    "Timeouts",
    "WhereError",
    "__version__",
    "analyze",
    "record",
    "to_dask_dataframe",
    "to_dataframe",
]

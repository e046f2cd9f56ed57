"""Records in columns: what `synfin report`'s census and findings read, a batch of connections at a time.

`synfin report` reads every record of a capture once. Parsing each record's
JSON line in Python (17 us) and walking its dict (another ~30 us in the
census and the tally) made the report 9 times slower than `synfin analyze`
on the benchmark capture (250,000 connections). So the compiled engine writes
the few fields the report needs in its format "census" (output.c,
write_census), as three lines per connection that numpy parses a piece of
output at a time, with no Python code per record:

1. the server endpoint ("ip:port")
2. the integers of `NUMBERS`, separated by spaces: labels and states as
   their index in labels.OPEN_LABELS, CLOSE_LABELS, ROLES and fsm.State
   (-1: none)
3. each state transition, the client's then the server's, as two integers:
   (frame + 1) * 16 + the state's index (frame -1: a timer), and its time

Integers only, because numpy parses a decimal fraction several times slower
than an integer: a time or a duration (`FLOATS`) is sent as the bits of the
double that Python reads from the JSON record's text (repr of the time; the
repr of the duration rounded to the microsecond), so the columns hold the very
floats the JSON record holds. `Batch.of_records` makes the same columns from
JSON records (analyzer.record's dicts: the reference pipeline, and tests),
and tests/test_report.py holds the two to equality on every sample: the
census and the findings (timeline.py, findings.py) are computed once, on
batches, whichever engine made the records. None (no handshake RTT, no
transition) is 0.0 in a duration's column.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import IO, Any

import numpy as np

from analyzer.fsm import State
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS

NUMBERS = ("id", "first_frame", "last_frame", "start", "end", "open", "close", "reset_by", "reset_state",
           "final_client", "final_server", "syn", "synack", "fin", "keepalives", "rtt", "age_client", "age_server",
           "overflow", "n_client", "n_server")
FLOATS = frozenset(("start", "end", "rtt", "age_client", "age_server"))  # sent as the bits of a double
STATE_NAMES = [str(state) for state in State]
ROLES = ("client", "server")
OVERFLOW_NOTE = "resent its SYN-ACK after the ACK of it"  # the anomaly of a third ACK ignored
RETRANSMITS = ("syn", "synack", "fin")
STATE_BITS = 16  # a step's first integer: (frame + 1) * STATE_BITS + state index
CHUNK = 4 << 20
AHEAD = 8  # pieces read ahead of the counting: at most AHEAD * CHUNK bytes held
BATCH = 4096  # records per batch made from JSON records

_NUMBER = {name: i for i, name in enumerate(NUMBERS)}


@dataclass
class Batch:
    """Connections in columns: `servers` (n names, bytes), `numbers` (n x NUMBERS, int64; FLOATS as the bits of a
    double) and `steps` (m x 2, int64: (frame + 1) * 16 + state index, the time's bits), each record's client
    steps, then its server steps. `number(name)` and `step_times` read the doubles as doubles."""

    servers: list[bytes]
    numbers: np.ndarray
    steps: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)

    def number(self, name: str) -> np.ndarray:
        column = self.numbers[:, _NUMBER[name]]
        return np.ascontiguousarray(column).view(np.float64) if name in FLOATS else column

    @cached_property
    def step_states(self) -> np.ndarray:
        return self.steps[:, 0] % STATE_BITS  # type: ignore[no-any-return]

    @cached_property
    def step_frames(self) -> np.ndarray:
        """Each step's frame, -1 for a timer's."""
        return self.steps[:, 0] // STATE_BITS - 1  # type: ignore[no-any-return]

    @cached_property
    def step_times(self) -> np.ndarray:
        return np.ascontiguousarray(self.steps[:, 1]).view(np.float64)

    @cached_property
    def endpoints(self) -> tuple[list[str], np.ndarray]:
        """The server endpoints' names (in order of first sight) and each record's index among them (a dict
        look-up per record: sorting the names, as np.unique does, costs several times as much)."""
        index: dict[bytes, int] = {}
        codes = np.fromiter((index.setdefault(name, len(index)) for name in self.servers), np.int64, len(self))
        return [name.decode() for name in index], codes

    @cached_property
    def step_counts(self) -> np.ndarray:
        return self.number("n_client") + self.number("n_server")  # type: ignore[no-any-return]

    @cached_property
    def step_record(self) -> np.ndarray:
        """Each step's record (its row in `numbers`)."""
        return np.repeat(np.arange(len(self)), self.step_counts)

    @cached_property
    def step_server(self) -> np.ndarray:
        """Whether each step is the server's (after its record's client steps)."""
        starts = np.cumsum(self.step_counts) - self.step_counts
        position = np.arange(len(self.steps)) - starts[self.step_record]
        return position >= self.number("n_client")[self.step_record]  # type: ignore[no-any-return]

    @classmethod
    def of_records(cls, records: list[dict[str, Any]]) -> Batch:
        """The columns of JSON records (analyzer.record's dicts); keys a census-only record lacks count as
        none (the census reads `server`, `states` and `final_age` only)."""
        servers, numbers, times, steps = [], [], [], []
        for rec in records:
            servers.append(rec["server"].encode())
            numbers.append(_numbers(rec))
            for side in ROLES:
                for state, ts, frame in rec["states"][side]:
                    steps.append([(-1 if frame is None else frame) * STATE_BITS + STATE_BITS + _state(state), 0])
                    times.append(ts)
        steps_array = np.array(steps, dtype=np.int64).reshape(-1, 2)
        steps_array[:, 1] = np.array(times, dtype=np.float64).view(np.int64)
        return cls(servers, _bits(numbers), steps_array)

    @classmethod
    def parse(cls, lines: list[bytes]) -> Batch:
        """The engine's "census" lines (a multiple of three, each without its line end)."""
        numbers = np.fromstring(b" ".join(lines[1::3]), dtype=np.int64, sep=" ").reshape(-1, len(NUMBERS))
        steps = np.fromstring(b" ".join(lines[2::3]), dtype=np.int64, sep=" ").reshape(-1, 2)
        return cls(lines[0::3], numbers, steps)


def _state(name: str | None) -> int:
    return -1 if name is None else STATE_NAMES.index(name)


def _index(labels: tuple[str, ...], label: str | None) -> int:
    return -1 if label is None else labels.index(label)


def _bits(rows: list[list[float]]) -> np.ndarray:
    """`_numbers` rows as int64 columns, FLOATS as the bits of their doubles."""
    columns = np.array(rows, dtype=np.float64).reshape(-1, len(NUMBERS))
    numbers = columns.astype(np.int64)
    for name in FLOATS:
        numbers[:, _NUMBER[name]] = np.ascontiguousarray(columns[:, _NUMBER[name]]).view(np.int64)
    return numbers


def _numbers(rec: dict[str, Any]) -> list[float]:
    retransmits = rec.get("retransmits") or {}
    rtt = (rec.get("handshake_rtt") or {}).get("total")
    ages = rec.get("final_age") or {}
    final = rec.get("final") or {}
    overflow = next((a["frame"] for a in rec.get("anomalies") or [] if OVERFLOW_NOTE in a["what"]), 0)
    return [rec.get("id", 0), rec.get("first_frame", 0), rec.get("last_frame", 0), rec.get("start", 0.0),
            rec.get("end", 0.0), _index(OPEN_LABELS, rec.get("open")), _index(CLOSE_LABELS, rec.get("close")),
            _index(ROLES, rec.get("reset_by")), _state(rec.get("reset_state")), _state(final.get("client")),
            _state(final.get("server")), *(retransmits.get(kind, 0) for kind in RETRANSMITS),
            rec.get("keepalives", 0), 0.0 if rtt is None else rtt, ages.get("client") or 0.0,
            ages.get("server") or 0.0, overflow, len(rec["states"]["client"]), len(rec["states"]["server"])]


def read_census(stream: IO[bytes], handle: Callable[[Batch], None]) -> None:
    """Hand `handle` a Batch for each piece of the engine's "census" output read from `stream`.

    A thread reads the pipe ahead (at most AHEAD pieces), so that the engine, which blocks when the pipe is
    full, goes on while the batches are counted: both cores work."""
    pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(AHEAD)
    stop = threading.Event()

    def pump() -> None:
        try:
            while not stop.is_set() and (chunk := stream.read(CHUNK)):
                pieces.put(chunk)
            pieces.put(None)
        except BaseException as error:  # handed to the caller's thread
            pieces.put(error)

    reader = threading.Thread(target=pump, name="synfin-census-reader", daemon=True)
    reader.start()
    try:
        _count(pieces, handle)
    finally:
        stop.set()
        while reader.is_alive():  # let it put what it read and see the stop
            with contextlib.suppress(queue.Empty):
                pieces.get(timeout=0.01)
        reader.join()


def _count(pieces: queue.Queue[bytes | BaseException | None], handle: Callable[[Batch], None]) -> None:
    rest = b""
    while (chunk := pieces.get()) is not None:
        if isinstance(chunk, BaseException):
            raise chunk
        lines = (rest + chunk).split(b"\n")
        whole = (len(lines) - 1) // 3 * 3  # the lines of whole records; the rest waits for the next piece
        rest = b"\n".join(lines[whole:])
        if whole:
            handle(Batch.parse(lines[:whole]))
    if rest:
        raise ValueError(f"the engine's census output ends in a partial record: {rest[:80]!r}")


def batches_of(records: Iterable[dict[str, Any]], size: int = BATCH) -> Iterator[Batch]:
    """JSON records in batches of `size`."""
    it = iter(records)
    while block := list(islice(it, size)):
        yield Batch.of_records(block)

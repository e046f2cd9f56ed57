"""Writing finished connections: JSON Lines, CSV, a terminal table, and the summary.

Every writer streams: rows are written as connections finish, so output
memory does not grow with the capture. The JSON record's keys are part of the
public interface (see README); keys may be added, never renamed.
"""

from __future__ import annotations

import csv
import ipaddress
import json
from collections import Counter
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from analyzer.connection import GONE, Connection
from analyzer.decode import linktype_name
from analyzer.endpoint import Endpoint
from analyzer.fsm import State
from analyzer.labels import CLOSE_LABELS, OPEN_LABELS
from analyzer.layers import TUNNEL_KINDS
from analyzer.pipeline import Stats
from analyzer.rotated import NAMED_OVERLAPS, Boundaries
from analyzer.styled import Styled

if TYPE_CHECKING:
    from rich.console import Console


def endpoint_name(ep: Endpoint) -> str:
    address = ipaddress.ip_address(ep.addr)
    return f"[{address}]:{ep.port}" if address.version == 6 else f"{address}:{ep.port}"


def _history(ep: Endpoint) -> list[list[Any]]:
    return [[str(t.state), t.ts, t.frame] for t in ep.history]


#: timing figures are rounded to microseconds: capture timestamps are doubles, whose
#: resolution at today's epoch (2**-22 s, 0.24 us) makes finer digits noise
PRECISION = 6


def handshake_rtt(conn: Connection) -> dict[str, float] | None:
    """SYN -> SYN,ACK (the server side), SYN,ACK -> ACK (the client side) and SYN -> ACK,
    at the capture point; None without a complete three-way handshake."""
    syn, synack, ack = conn.hs_syn_ts, conn.hs_synack_ts, conn.hs_ack_ts
    if conn.labels["open"] != "handshake" or syn is None or synack is None or ack is None:
        return None
    return {"server": round(synack - syn, PRECISION), "client": round(ack - synack, PRECISION),
            "total": round(ack - syn, PRECISION)}


def final_age(ep: Endpoint, until: float) -> float | None:
    """How long the endpoint's last state had lasted at `until`; None if it never changed state."""
    return round(until - ep.history[-1].ts, PRECISION) if ep.history else None


def state_time(ep: Endpoint, until: float) -> dict[str, float]:
    """Seconds spent in each state (every visit counts), the last one until `until`; in order
    of first visit. Summed visit by visit, as output.c does, so the doubles agree."""
    totals: dict[str, float] = {}
    history = ep.history
    for index, step in enumerate(history):
        stop = history[index + 1].ts if index + 1 < len(history) else until
        name = str(step.state)
        totals[name] = totals.get(name, 0.0) + (stop - step.ts)
    return {name: round(total, PRECISION) for name, total in totals.items()}


def record(conn: Connection, capture: str | None = None) -> dict[str, Any]:
    """The JSON object for one connection (keys as in the README)."""
    labels = conn.labels
    out: dict[str, Any] = {
        "id": conn.id,
        "client": endpoint_name(conn.client),
        "server": endpoint_name(conn.server),
        "ip_version": conn.ip_version,
        "first_frame": conn.first_frame,
        "last_frame": conn.last_frame,
        "start": conn.start,
        "end": conn.end,
        "open": labels["open"],
        "close": labels["close"],
        "half_close": labels["half_close"],
        "active_closer": labels["active_closer"],
        "reset_by": labels["reset_by"],
        "reset_state": labels["reset_state"],
        "roles_inferred": conn.roles_inferred,
        "states": {"client": _history(conn.client), "server": _history(conn.server)},
        "final": {"client": str(conn.client.state), "server": str(conn.server.state)},
        "retransmits": dict(conn.retransmits),
        "keepalives": conn.keepalives,
        "syn_data": conn.syn_data,
        "packets": {"client": conn.client.packets, "server": conn.server.packets},
        "payload_bytes": {"client": conn.client.payload_bytes, "server": conn.server.payload_bytes},
        "options": {"client": dict(conn.client.options), "server": dict(conn.server.options)},
        "anomalies": [{"frame": a.frame, "what": a.what} for a in conn.anomalies],
        "handshake_rtt": handshake_rtt(conn),
        "final_age": {"client": final_age(conn.client, conn.finished_at),
                      "server": final_age(conn.server, conn.finished_at)},
        "state_time": {"client": state_time(conn.client, conn.finished_at),
                       "server": state_time(conn.server, conn.finished_at)},
        "tunnel": conn.tunnel,
        "vlan": list(conn.vlan) if conn.vlan else None,
        "anomaly_counts": dict(conn.anomaly_counts),
        "unseen": conn.unseen,
    }
    if capture is not None:
        out["capture"] = capture
    return out


def write_json(conns: Iterable[Connection], out: IO[str], capture: str | None = None) -> None:
    for conn in conns:
        out.write(json.dumps(record(conn, capture), separators=(", ", ": ")) + "\n")
        out.flush()


CSV_FIELDS = [
    "capture", "id", "client", "server", "ip_version", "first_frame", "last_frame", "start", "end",
    "duration", "open", "close", "half_close", "active_closer", "reset_by", "reset_state",
    "roles_inferred", "final_client", "final_server", "states_client", "states_server",
    "retransmits_syn", "retransmits_synack", "retransmits_fin", "keepalives", "syn_data",
    "packets_client", "packets_server", "payload_bytes_client", "payload_bytes_server", "anomalies",
    "handshake_rtt", "handshake_rtt_server", "handshake_rtt_client", "final_age_client", "final_age_server",
]
#: time in each state: a column per side and state, in fsm.State order (empty: never in it)
STATE_TIME_FIELDS = [f"state_time_{side}_{state}" for side in ("client", "server") for state in State]
CSV_FIELDS += STATE_TIME_FIELDS
#: the columns in seconds that may be empty (null)
TIMING_FIELDS = CSV_FIELDS[CSV_FIELDS.index("handshake_rtt"):]
CSV_FIELDS += ["tunnel", "vlan"]
#: keys added later, at the end (README: keys may be added, never renamed)
CSV_FIELDS += ["unseen"]


def flat_record(conn: Connection, capture: str | None = None) -> dict[str, Any]:
    """One connection as a flat row, for CSV and DataFrames."""
    return flat_from_record(record(conn, capture), capture)


def flat_from_record(rec: dict[str, Any], capture: str | None = None) -> dict[str, Any]:
    """A JSON record (`record`) as a flat row, for CSV and DataFrames."""
    row = {key: rec.get(key) for key in CSV_FIELDS if key in rec}
    row["capture"] = capture
    row["duration"] = round(rec["end"] - rec["start"], 9)
    for side in ("client", "server"):
        row[f"final_{side}"] = rec["final"][side]
        row[f"states_{side}"] = " > ".join(state for state, _, _ in rec["states"][side])
        row[f"packets_{side}"] = rec["packets"][side]
        row[f"payload_bytes_{side}"] = rec["payload_bytes"][side]
    for kind, count in rec["retransmits"].items():
        row[f"retransmits_{kind}"] = count
    row["anomalies"] = sum(rec["anomaly_counts"].values())  # all of them, not only those listed
    rtt = rec["handshake_rtt"] or {}
    row["handshake_rtt"] = rtt.get("total")
    for side in ("client", "server"):
        row[f"handshake_rtt_{side}"] = rtt.get(side)
        row[f"final_age_{side}"] = rec["final_age"][side]
        for state, secs in rec["state_time"][side].items():
            row[f"state_time_{side}_{state}"] = secs
    row["vlan"] = "/".join(map(str, rec["vlan"] or ())) or None
    return row


def csv_header() -> str:
    """The CSV header line, as write_csv writes it."""
    return ",".join(CSV_FIELDS) + "\n"


def write_csv(conns: Iterable[Connection], out: IO[str], capture: str | None = None,
              header: bool = True) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    if header:
        writer.writeheader()
    for conn in conns:
        writer.writerow(flat_record(conn, capture))


_COLUMNS = [("id", 5, ">"), ("client", 23, "<"), ("server", 23, "<"), ("open", 17, "<"),
            ("close", 12, "<"), ("half", 4, "<"), ("closer", 7, "<"), ("reset", 20, "<"),
            ("final client/server", 23, "<"), ("secs", 9, ">"), ("pkts", 6, ">")]
_ANSI = {"green": "32", "cyan": "36", "red": "31", "yellow": "33", "blue": "34", "dim": "2"}
_OPEN_STYLE = {"handshake": "green", "simultaneous-open": "cyan", "refused": "red",
               "unanswered": "yellow", "incomplete": "yellow", "partial": "dim"}
_CLOSE_STYLE = {"four-way": "green", "three-way": "green", "simultaneous": "cyan",
                "reset": "red", "half-closed": "yellow", "open": "blue", "none": "dim"}


def _cells(conn: Connection) -> list[str]:
    labels = conn.labels
    reset = f"{labels['reset_by']}@{labels['reset_state']}" if labels["reset_by"] else ""
    return [
        str(conn.id), endpoint_name(conn.client), endpoint_name(conn.server), str(labels["open"]),
        str(labels["close"]), "yes" if labels["half_close"] else "", str(labels["active_closer"] or ""),
        reset, f"{conn.client.state}/{conn.server.state}", _secs(conn),
        str(conn.client.packets + conn.server.packets),
    ]


def _secs(conn: Connection) -> str:
    """First to last segment once both ends are gone; otherwise the connection was still
    there when it was finished (capture end, or a timer), and the time to then, with a "+"
    (the other rows end in a space, so the decimal points line up)."""
    if conn.client.state in GONE and conn.server.state in GONE:
        return f"{conn.end - conn.start:.3f} "
    return f"{conn.finished_at - conn.start:.3f}+"


def _line(cells: list[str], styles: dict[int, str] | None = None) -> str:
    parts = []
    for index, (text, (_, width, align)) in enumerate(zip(cells, _COLUMNS, strict=True)):
        padded = f"{text:{align}{width}}"
        if styles and index in styles:
            padded = f"\x1b[{_ANSI[styles[index]]}m{padded}\x1b[0m"
        parts.append(padded)
    return "  ".join(parts).rstrip()


def table_header() -> str:
    """The table's first line: the column names."""
    return _line([name for name, _, _ in _COLUMNS]) + "\n"


def write_table(conns: Iterable[Connection], console: Console) -> None:
    """A row per connection in fixed-width columns, written as each finishes (nothing is kept).

    Rows are formatted directly rather than through rich's table layout, which
    costs about a millisecond a row: too slow for captures of 100,000s of
    connections. Labels are coloured on a terminal.
    """
    colour = console.is_terminal and not console.no_color
    out = console.file
    out.write(table_header())
    for conn in conns:
        cells = _cells(conn)
        styles = {3: _OPEN_STYLE[cells[3]], 4: _CLOSE_STYLE[cells[4]]} if colour else None
        out.write(_line(cells, styles) + "\n")
    out.flush()


#: a server endpoint's counts in the summary, in this order (the engine's sink.c count_endpoint)
ENDPOINT_FINALS = ("TIME_WAIT", "CLOSE_WAIT", "FIN_WAIT_2")
ENDPOINT_COUNTS = ("connections", "handshakes", "closed", "reset", "refused",
                   *(f"{side} {state}" for side in ("client", "server") for state in ENDPOINT_FINALS))
NAMED_ENDPOINTS = 5  # the summary's busiest server endpoints


class Census:
    """Counts kept while streaming, for the summary."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()
        self.close: Counter[str] = Counter()
        self.closer: Counter[str] = Counter()
        self.final: Counter[tuple[str, str]] = Counter()
        self.half_close = 0
        self.anomalies = 0
        self.matched = 0  # the connections counted here: with --where, those it matched
        self.retransmits: Counter[str] = Counter()  # SYN, SYN-ACK, FIN segments sent again
        self.endpoints: dict[str, list[int]] = {}  # per server endpoint: ENDPOINT_COUNTS (sink.c count_endpoint)

    def count(self, conns: Iterable[Connection]) -> Iterable[Connection]:
        for conn in conns:
            self.matched += 1
            labels = conn.labels
            self.retransmits.update(conn.retransmits)
            self._endpoint(conn, labels)
            self.open[str(labels["open"])] += 1
            self.close[str(labels["close"])] += 1
            self.closer[str(labels["active_closer"])] += 1
            self.final[("client", str(conn.client.state))] += 1
            self.final[("server", str(conn.server.state))] += 1
            self.half_close += bool(labels["half_close"])
            self.anomalies += sum(conn.anomaly_counts.values())
            yield conn

    def _endpoint(self, conn: Connection, labels: dict[str, Any]) -> None:
        row = self.endpoints.setdefault(endpoint_name(conn.server), [0] * len(ENDPOINT_COUNTS))
        one = endpoint_row(str(labels["open"]), str(labels["close"]), str(conn.client.state), str(conn.server.state))
        for k, n in enumerate(one):
            row[k] += n


def endpoint_row(open_label: str, close_label: str, final_client: str, final_server: str) -> list[int]:
    """One connection's counts in its server endpoint's row of the summary (ENDPOINT_COUNTS; sink.c
    count_endpoint in the engine; parallel.py takes the dropped records' rows off again)."""
    row = [1, open_label == "handshake", close_label in ("four-way", "three-way", "simultaneous"),
           close_label == "reset", open_label == "refused"] + [0] * (2 * len(ENDPOINT_FINALS))
    for index, state in enumerate((final_client, final_server)):
        if state in ENDPOINT_FINALS:
            row[5 + index * len(ENDPOINT_FINALS) + ENDPOINT_FINALS.index(state)] = 1
    return [int(n) for n in row]


NAMED_COUNTS = 10  # the summary names this many link types, and skip reasons; the rest it counts


def _most_frequent(counter: Counter[Any]) -> tuple[list[Any], int, int]:
    """The keys the summary names, in key order: all of them, or the NAMED_COUNTS most
    frequent (ties: the smaller key); and how many keys, and how many frames, are left.

    A capture can have 65,000 interfaces of distinct link types: the line stays short.
    """
    if len(counter) <= NAMED_COUNTS:
        return sorted(counter), 0, 0
    named = sorted(sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:NAMED_COUNTS])
    shown = sum(n for _, n in named)
    return [key for key, _ in named], len(counter) - NAMED_COUNTS, sum(counter.values()) - shown


def _links(linktypes: Counter[int]) -> str:
    named, more, frames = _most_frequent(linktypes)
    links = ", ".join(f"{linktype_name(k)} {linktypes[k]}" for k in named)
    return links + (f", and {more} more link types in {_plural(frames, 'frame')}" if more else "")


def _skipped(skipped: Counter[str]) -> str:
    named, more, frames = _most_frequent(skipped)
    reasons = ", ".join(f"{skipped[why]} {why}" for why in named)
    return reasons + (f", and {_plural(frames, 'frame')} for {more} more reasons" if more else "")


def write_summary(capture: str, stats: Stats, census: Census, out: Styled, where: str | None = None) -> None:
    """Counts per label, final-state census, and what was skipped. With `where` (the --where terms as
    where.Where.text gives them), the census is of the connections they matched, and a line says how many."""
    links = _links(stats.linktypes)
    out.line((capture, "bold"), f": {_plural(stats.frames, 'frame')}, "
             f"{_plural(stats.segments, 'TCP segment')}, {_plural(stats.connections, 'connection')}"
             + (f" ({links})" if links else ""))
    if where is not None:
        out.line(f"  {census.matched} of {_plural(stats.connections, 'connection')} matched --where {where}")
    if any(census.final.values()):  # no connection, nothing to break down: the first line said how many
        _write_labels(census, out)
        _write_endpoints(census, out)
    if census.anomalies:
        out.line(f"  anomalies: {census.anomalies} (see the JSON output)")
    if stats.tunnelled:
        kinds = ", ".join(f"{kind} {stats.tunnels[kind]}" for kind in TUNNEL_KINDS if stats.tunnels[kind])
        out.line(f"  in tunnels: {_plural(stats.tunnelled, 'TCP segment')} ({kinds})")
    if stats.skipped:
        out.line("  skipped: " + _skipped(stats.skipped))
    if stats.unmatched:
        out.line(f"  {_plural(stats.unmatched, 'frame')} not matching the filter" + _filter_failed(stats))
    if stats.bad_frames:
        named = "; ".join(f"frame {frame}: {what}" for frame, what in stats.problem_frames)
        out.line("  ", (f"bad frames: {stats.bad_frames}", "yellow"), f" (first: {named})")
    if stats.boundaries is not None:
        _write_boundaries(stats.boundaries, out)


def _write_boundaries(bounds: Boundaries, out: Styled) -> None:
    """A rotated set's files (rotated.py): how many, the largest gap where two meet, and every overlap."""
    gap = bounds.largest_gap()
    out.line(f"  set of {_plural(len(bounds.names), 'file')}, read in time order"
             + (f"; largest gap {gap[0]:.6f} s, between {gap[1]} and {gap[2]}" if gap else ""))
    overlaps = bounds.overlaps()
    if overlaps:
        named = "; ".join(f"{b} starts {seconds:.6f} s before {a} ends" for seconds, a, b in overlaps[:NAMED_OVERLAPS])
        more = f" (and {len(overlaps) - NAMED_OVERLAPS} more)" if len(overlaps) > NAMED_OVERLAPS else ""
        out.line("  ", (f"overlaps: {len(overlaps)}", "yellow"), f" ({named}{more})")


def _write_labels(census: Census, out: Styled) -> None:
    """The summary's lines per label, active closer and final state."""
    out.line("  open:  " + _counts(census.open, OPEN_LABELS))
    out.line("  close: " + _counts(census.close, CLOSE_LABELS)
             + (f"; half-close in {census.half_close}" if census.half_close else ""))
    closers = {k: v for k, v in census.closer.items() if k != "None"}
    if closers:
        out.line("  active closer: " + ", ".join(f"{k} {v}" for k, v in sorted(closers.items())))
    for side in ("client", "server"):
        finals = {state: n for (who, state), n in census.final.items() if who == side}
        out.line(f"  final {side} states: " + (", ".join(f"{s} {n}" for s, n in sorted(finals.items())) or "-"))


def _write_endpoints(census: Census, out: Styled) -> None:
    """The retransmissions, the busiest server endpoints (connections, how they opened and ended, the final
    states that pile up), and where to look further."""
    retx = census.retransmits
    out.line(f"  retransmitted: SYN {retx['syn']}, SYN-ACK {retx['synack']}, FIN {retx['fin']}")
    busiest = sorted(census.endpoints.items(), key=lambda item: (-item[1][0], item[0]))[:NAMED_ENDPOINTS]
    out.line(f"  busiest server endpoints ({len(busiest)} of {len(census.endpoints)}):")
    for name, row in busiest:
        counts = dict(zip(ENDPOINT_COUNTS, row, strict=True))
        finals = ", ".join(f"{key} {counts[key]}" for key in ENDPOINT_COUNTS[5:] if counts[key])
        out.line(f"    {name}: {_plural(counts['connections'], 'connection')}, {counts['handshakes']} handshake, "
                 f"{counts['closed']} closed, {counts['reset']} reset"
                 + (f", {counts['refused']} refused" if counts["refused"] else "")
                 + (f"; at the end {finals}" if finals else ""))
    out.line("  per endpoint over time, findings and advice: synfin report CAPTURE")


def _filter_failed(stats: Stats) -> str:
    """Why frames of a link type could not match at all (libpcap cannot compile the filter for it), if so."""
    if stats.filter_failed is None:
        return ""
    linktype, reason = stats.filter_failed
    return f" (it cannot apply to link type {linktype_name(linktype)}: {reason})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _counts(counter: Counter[str], order: tuple[str, ...]) -> str:
    return ", ".join(f"{name} {counter[name]}" for name in order if counter[name]) or "-"

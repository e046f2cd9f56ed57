"""`synfin report`: from connections to answers, per server endpoint.

Runs the compiled engine (analyzer.analyze) over each capture and feeds every
finished record, once, to the census of states over time (timeline.Census)
and the per-endpoint tally (findings.Tally); then writes the findings with
their evidence and advice, and the census peaks, as text (for a terminal),
JSON (one object) or HTML (report_html.py: one self-contained file with the
pictures). Nothing here keeps records: memory is bounded by endpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import analyzer
from analyzer.records import RecordStream
from analyzer.rotated import CaptureSet
from analyzer.thresholds import MIN_PILE

if TYPE_CHECKING:  # numpy's modules, imported when a report is made (not when `synfin` starts)
    from analyzer.columns import Batch
    from analyzer.findings import Finding, Tally
    from analyzer.timeline import Census

DESCRIPTION = """\
What a capture says about each server endpoint: how many connections sat in
each TCP state over time (the offline netstat census, on both sides), and
findings with their evidence and advice: TIME_WAIT piles, CLOSE_WAIT leaks,
listen-queue overflows, refused ports, aborts (RSTs), unanswered SYNs, slow
handshakes, keep-alives."""


@dataclass
class Report:
    """Everything a report shows, computed once from the records."""

    captures: list[str]  # as messages name them (a rotated set: its name)
    census: Census
    tally: Tally
    findings: list[Finding]
    stats: analyzer.Stats
    inputs: list[str | Path | CaptureSet] = field(default_factory=list)  # what was read (sets as sets)


def build(captures: list[str | Path | CaptureSet], msl: float = 30.0, min_pile: int = MIN_PILE,
          engine: str = "auto", **options: Any) -> Report:
    """Read every capture once (the compiled engine unless `engine` says otherwise); census and tally the
    records in batches (columns.py): the engine's "census" output, or the reference pipeline's records. A
    directory, or a rotated.CaptureSet, is a rotated set read as one capture (as analyzer.analyze reads it)."""
    from analyzer.columns import batches_of, read_census
    from analyzer.findings import Limits, Tally, findings
    from analyzer.timeline import Census

    census, tally, stats = Census(), Tally(), analyzer.Stats()

    def add(batch: Batch) -> None:
        census.add_batch(batch)
        tally.add_batch(batch)

    for path in captures:
        stream = analyzer.analyze(path, stats=stats, msl=msl, engine=engine, **options)
        if isinstance(stream, RecordStream):
            stream.consume(lambda out: read_census(out, add), "census")
        else:
            for batch in batches_of(analyzer.record(conn) for conn in stream):
                add(batch)
    names = [c.name if isinstance(c, CaptureSet) else str(c) for c in captures]
    return Report(names, census, tally, findings(tally, census, Limits(msl, min_pile)), stats, list(captures))


def when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def endpoint_rows(report: Report) -> Iterator[dict[str, Any]]:
    """One row per server endpoint: connections, the largest census of each state per side, RTTs."""
    from analyzer.findings import rtt_percentile
    from analyzer.timeline import SIDES

    for name in report.census.endpoints():
        end = report.tally.endpoints[name]
        peaks = {side: {state: peak.count for state, peak in report.census.peaks(name, side).items()}
                 for side in SIDES}
        yield {"endpoint": name, "connections": end.connections, "peaks": peaks,
               "at_end": {side: report.census.end_census(name, side) for side in SIDES},
               "retransmits": dict(end.retransmits),
               "handshake_rtt": {"p50": rtt_percentile(end.rtt, 0.5), "p90": rtt_percentile(end.rtt, 0.9),
                                 "p99": rtt_percentile(end.rtt, 0.99)}}


def to_json(report: Report) -> dict[str, Any]:
    from analyzer.timeline import SIDES, TOTAL

    total = {side: {state: {"peak": p.count, "peak_at": p.at} for state, p in
                    report.census.peaks(TOTAL, side).items()} for side in SIDES}
    return {"captures": report.captures, "connections": report.tally.records,
            "findings": [f.json() for f in report.findings], "census": total,
            "at_end": {side: report.census.end_census(TOTAL, side) for side in SIDES},
            "endpoints": list(endpoint_rows(report))}


def write_text(report: Report, out: IO[str]) -> None:
    from analyzer.timeline import SIDES

    out.write(f"{', '.join(report.captures)}: {report.tally.records} connections, "
              f"{len(report.census.endpoints())} server endpoints, {len(report.findings)} findings\n")
    for finding in report.findings:
        out.write(f"\n[{finding.kind}] {finding.endpoint}: {summary(finding)}\n")
        if finding.examples:
            out.write("  e.g. " + ", ".join(f"#{i} (frame {f})" for i, f in finding.examples) + "\n")
        out.write(wrap(finding.advice, "  advice: ") + "\n")
    out.write("\nStates over time (most at once; at the capture's end), per server endpoint:\n")
    for row in endpoint_rows(report):
        out.write(f"  {row['endpoint']}  {row['connections']} connections\n")
        for side in SIDES:
            peaks = ", ".join(f"{s} {n}" for s, n in row["peaks"][side].items()) or "-"
            ends = ", ".join(f"{s} {n}" for s, n in row["at_end"][side].items()) or "-"
            out.write(f"    {side:6}  peak: {peaks}; at end: {ends}\n")


def summary(finding: Finding) -> str:
    """The finding's evidence in one sentence."""
    ev = finding.evidence
    if finding.kind == "time-wait-pile":
        rate = f", {ev['closes_per_second']} closes/s x 2*MSL = {ev['steady_state']} at once if that rate went on" \
            if ev["closes_per_second"] else ""
        return (f"{ev['side']} side closed first {ev['closes']} times; {ev['peak']} in TIME_WAIT at once "
                f"at {when(ev['peak_at'])}{rate}; {ev['at_end']} at the capture's end")
    if finding.kind in ("close-wait-leak", "fin-wait-2"):
        ages = ", ".join(f"{age:.3f}" for age in ev["ages"])
        return (f"{finding.count} connections left in {ev['state']} on the {ev['side']} side at the capture's "
                f"end (oldest {ev['max_age']:.3f} s; ages {ages} s)")
    if finding.kind == "listen-overflow":
        return (f"{ev['dropped_handshakes']} handshakes with a SYN resent or a third ACK dropped, while "
                f"{ev['clean_handshakes']} completed at once (SYN resent {ev['syn_retransmits']}, "
                f"SYN-ACK resent {ev['synack_retransmits']})")
    if finding.kind == "aborts":
        return f"{finding.count} connections reset by the {ev['sender']} in {ev['state']}"
    if finding.kind == "slow-handshake":
        return f"{finding.count} handshakes, median {ev['p50']} s, p90 {ev['p90']} s, p99 {ev['p99']} s"
    return (f"{finding.count} of {ev['connections']} connections, from {when(ev['first'])} "
            f"to {when(ev['last'])}")


def wrap(text: str, lead: str, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(text, width, initial_indent=lead, subsequent_indent=" " * len(lead))


def add_report(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from analyzer.capture import capture_path
    from analyzer.cli import add_filter_option, add_timing_options

    parser = commands.add_parser("report", help="states over time, findings and advice per server endpoint",
                                 description=DESCRIPTION)
    parser.add_argument("captures", nargs="*", type=capture_path, metavar="CAPTURE",
                        help="pcap or pcapng files, optionally gzipped; - reads standard input; a directory is a "
                             "rotated set (its capture files read as one capture, see --set). All of them go "
                             "into one report")
    parser.add_argument("--set", nargs="+", type=Path, dest="set_files", metavar="FILE",
                        help="files of one rotated set (tcpdump -C/-G, dumpcap ring buffer), read as ONE capture "
                             "as `synfin analyze --set` reads them (connection ids and frame numbers the same). "
                             "Put --set after any CAPTURE (it takes every file that follows)")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default: standard output)")
    parser.add_argument("-f", "--format", choices=("text", "json", "html"), default="text",
                        help="text (default), json (one object) or html (one self-contained file)")
    parser.add_argument("--min-time-wait", type=int, default=MIN_PILE, metavar="N",
                        help="report a TIME_WAIT pile when one side of an endpoint held N at once "
                             f"(default {MIN_PILE})")
    add_filter_option(parser)
    add_timing_options(parser)
    parser.set_defaults(run=run_report, usage_error=parser.error)


def run_report(args: argparse.Namespace) -> int:
    from analyzer.cli import with_sets

    if not args.captures and not args.set_files:  # argparse's message and status 2
        args.usage_error("the following arguments are required: CAPTURE (or --set FILE ...)")
    try:
        report = build(with_sets(args.captures, args.set_files), msl=args.msl, idle_timeout=args.idle_timeout,
                       handshake_timeout=args.handshake_timeout, bpf=args.bpf, min_pile=args.min_time_wait)
    except (analyzer.CaptureError, analyzer.FilterError, OSError) as error:
        print(f"synfin report: {error}", file=sys.stderr)
        return 2
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.format == "json":
            json.dump(to_json(report), out, indent=1)
            out.write("\n")
        elif args.format == "html":
            from analyzer.report_html import write_html

            write_html(report, out, msl=args.msl)
        else:
            write_text(report, out)
    finally:
        if args.output:
            out.close()
    return 0

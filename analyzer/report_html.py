"""`synfin report --format html`: one self-contained file to attach to an incident ticket.

The findings (evidence and advice), the states-over-time picture, a table per
server endpoint, and the ladder diagram of one example connection per finding.
Pictures are PNGs embedded as base64 data: URLs and the style sheet is inline,
so the file loads nothing from anywhere (tests/test_report_html.py opens it in
headless Chromium). Ladders need the example connection's segments, which
ladder_source.connections gets by reading the capture once more with the
engine (it stops once the wanted connections have finished); only for a single
capture read from a file (standard input cannot be read twice).
"""

from __future__ import annotations

import base64
import html
from typing import IO, Any

from analyzer import engine, ladder, ladder_plot
from analyzer.capture import is_stdin
from analyzer.findings import Finding
from analyzer.rotated import CaptureSet
from analyzer.timeline_plot import busiest, to_png

MAX_LADDERS = 8

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.finding { border-left: 4px solid #de2d26; padding: 0.3em 1em; margin: 1em 0; background: #fafafa; }
.kind { font-family: monospace; font-weight: bold; } .advice { color: #333; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f0f0f0; } summary { cursor: pointer; color: #1f5fa8; }
img { max-width: 100%; } code { background: #eee; padding: 0 3px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def png(data: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def finding_html(finding: Finding, sentence: str, picture: str) -> str:
    examples = ", ".join(f"#{i} (frame {f})" for i, f in finding.examples)
    return (f'<div class="finding"><p><span class="kind">{esc(finding.kind)}</span> '
            f"<b>{esc(finding.endpoint)}</b>: {esc(sentence)}</p>"
            + (f"<p>Examples: {esc(examples)}</p>" if examples else "")
            + f'<p class="advice"><b>Advice:</b> {esc(finding.advice)}</p>{picture}</div>')


def ladders(report: Any, msl: float) -> dict[int, str]:
    """The ladder picture of each finding's first example, by connection id (one capture, a file)."""
    if len(report.inputs) != 1 or is_stdin(report.inputs[0]):
        return {}
    source = report.inputs[0]
    if isinstance(source, CaptureSet) and not engine.chainable(source):  # a gzip file in it: no frames to fetch
        return {}
    from analyzer.ladder_source import connections

    ids = sorted({f.examples[0][0] for f in report.findings if f.examples})[:MAX_LADDERS]
    if not ids:
        return {}
    conns = connections(source, ids, msl=msl)  # type: ignore[arg-type]
    return {conn.id: f"<details><summary>ladder of connection #{conn.id}</summary>"
                     f"{png(ladder_plot.to_bytes(ladder.build(conn)), f'ladder of connection {conn.id}')}</details>"
            for conn in conns}


def endpoint_table(rows: list[dict[str, Any]]) -> str:
    head = ("<tr><th>endpoint</th><th>connections</th><th>server side: most at once</th>"
            "<th>client side: most at once</th><th>at the end (server / client)</th>"
            "<th>resent SYN / SYN-ACK / FIN</th><th>handshake p50 / p90 (s)</th></tr>")
    body = []
    for row in rows:
        peaks = [", ".join(f"{s} {n}" for s, n in row["peaks"][side].items()) or "-" for side in ("server", "client")]
        ends = " / ".join(", ".join(f"{s} {n}" for s, n in row["at_end"][side].items()) or "-"
                          for side in ("server", "client"))
        retx = " / ".join(str(row["retransmits"].get(k, 0)) for k in ("syn", "synack", "fin"))
        rtt = f"{row['handshake_rtt']['p50'] or '-'} / {row['handshake_rtt']['p90'] or '-'}"
        cells = [row["endpoint"], row["connections"], *peaks, ends, retx, rtt]
        body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def write_html(report: Any, out: IO[str], msl: float = 30.0) -> None:
    from analyzer.report_cli import endpoint_rows, summary

    drawn = ladders(report, msl)
    connections = {name: end.connections for name, end in report.tally.endpoints.items()}
    timeline = to_png(report.census, busiest(report.census, connections))
    title = f"synfin report: {', '.join(report.captures)}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>",
             f"<p>{report.tally.records} connections, {len(report.census.endpoints())} server endpoints, "
             f"{len(report.findings)} findings.</p>", '<h2 id="findings">Findings</h2>']
    if not report.findings:
        parts.append("<p>No findings.</p>")
    for finding in report.findings:
        example = finding.examples[0][0] if finding.examples else None
        parts.append(finding_html(finding, summary(finding), drawn.get(example, "") if example is not None else ""))
    parts += ['<h2 id="timeline">States over time</h2>', png(timeline, "states over time"),
              '<h2 id="endpoints">Server endpoints</h2>', endpoint_table(list(endpoint_rows(report))),
              "</body></html>\n"]
    out.write("\n".join(parts))

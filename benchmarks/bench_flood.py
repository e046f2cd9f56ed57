"""Peak memory and wall time of `synfin analyze` on a crafted SYN flood (issue 11, finding 5).

    python benchmarks/bench_flood.py [--count 1000000] [--seconds 1] [--answered] [--runs 3]
                                     [--engine compiled] [--keep DIR] [--json FILE]

Makes a flood of COUNT unanswered SYNs from distinct clients within SECONDS
(tests/flood.py: struct-packed pcap, a million SYNs in about a second; with
--answered, each followed by the server's SYN-ACK), then
runs ``synfin analyze --engine ENGINE --format json FLOOD`` RUNS times in a
child process, its output to /dev/null, and prints each run's wall time and
peak RSS (the child's VmHWM: tests/flood.py, analyze_peak), their medians,
and the peak per half-open connection above an empty run's (one SYN). Every
SYN stays half-open until the handshake timeout (40 s), so at the end of the
capture all COUNT connections are open at once. The target: a million under
300 MB with the compiled engine (923 MB before tracker.c kept half-open
connections compact; 247 MiB after, 320 MiB answered).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.flood import analyze_peak, syn_flood  # noqa: E402  (the repository's root is on the path only now)


@dataclass
class Run:
    """One run: wall seconds, peak RSS in MiB, and the connection count of its summary line."""

    wall: float
    peak_mib: float
    summary: str


def analyze(capture: Path, engine: str) -> Run:
    """One timed run of synfin on `capture`, its output to /dev/null."""
    start = time.perf_counter()
    peak, stderr = analyze_peak(capture, engine)
    wall = time.perf_counter() - start
    return Run(wall, peak / 2**20, stderr.splitlines()[0] if stderr else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="SYNs in the flood (default 1000000)")
    parser.add_argument("--seconds", type=float, default=1.0, help="the flood's duration (default 1)")
    parser.add_argument("--answered", action="store_true", help="each SYN answered by a SYN-ACK")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--engine", default="compiled", choices=("compiled", "reference"))
    parser.add_argument("--keep", type=Path, help="write the flood here (and keep it) instead of a temporary folder")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="synfin-flood-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        made = time.perf_counter()
        name = f"flood-{args.count}{'-answered' if args.answered else ''}.pcap"
        flood = syn_flood(folder / name, args.count, args.seconds, answered=args.answered)
        made = time.perf_counter() - made
        empty = analyze(syn_flood(folder / "flood-1.pcap", 1), args.engine)
        what = "SYNs and SYN-ACKs" if args.answered else "SYNs"
        print(f"flood: {args.count:,} {what} in {args.seconds:g} s, {flood.stat().st_size / 2**20:.0f} MiB, "
              f"made in {made:.1f} s; an empty run peaks at {empty.peak_mib:.0f} MiB")
        runs = []
        for number in range(1, args.runs + 1):
            runs.append(analyze(flood, args.engine))
            print(f"  run {number}: {runs[-1].wall:.2f} s, peak {runs[-1].peak_mib:.0f} MiB")
        wall = statistics.median(r.wall for r in runs)
        peak = statistics.median(r.peak_mib for r in runs)
        per_connection = (peak - empty.peak_mib) * 2**20 / max(args.count, 1)
        print(f"{args.engine}: median {wall:.2f} s, peak RSS {peak:.0f} MiB "
              f"({per_connection:.0f} bytes per half-open connection above the empty run)")
        print(f"  {runs[0].summary}")
    if args.json:
        figures = {"count": args.count, "seconds": args.seconds, "answered": args.answered, "engine": args.engine,
                   "wall_median": wall,
                   "peak_mib_median": peak, "bytes_per_connection": per_connection,
                   "empty_peak_mib": empty.peak_mib, "runs": [asdict(r) for r in runs]}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time `synfin ladder --conn N` against `synfin analyze -f json` of the same capture (issue 12).

    python benchmarks/bench_ladder.py [CAPTURE] [--runs 5] [--conn N ...]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap. Without --conn, three connections are picked from the
analysis: an early one (6083, if the capture has it: it ends near frame 64,000 of the benchmark capture), the
one whose last frame is nearest the middle of the file, and the one nearest 95 % of it. Each round runs, on
the same file, each in a fresh interpreter:

    synfin analyze -f json FILE > /dev/null
    synfin ladder FILE --conn N -o OUT.png          (each N; matplotlib drawn: a PNG)
    synfin ladder FILE --conn N --text > /dev/null  (the early N)

round by round, so that the machine's drift falls on every variant alike; the file is read once first (page
cache). Printed: median, min and max wall time, median peak RSS (VmHWM, read by the child itself: a child's
ru_maxrss starts at its parent's), and each variant's ratio to analyze's median in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from synfin_peak import run

DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")
EARLY = 6083
def pick(capture: Path) -> list[int]:
    """An early, a middle and a late connection (by last frame)."""
    done = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-f", "json", "--no-summary", str(capture)],
                          capture_output=True, text=True, check=True)
    last = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        last[record["id"]] = record["last_frame"]
    frames = max(last.values())
    chosen = [EARLY if EARLY in last else min(last, key=lambda i: abs(last[i] - frames * 0.02))]
    for share in (0.5, 0.95):
        chosen.append(min(last, key=lambda i: abs(last[i] - frames * share)))
    for conn_id in chosen:
        print(f"connection {conn_id}: last frame {last[conn_id]:,} of {frames:,}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--conn", type=int, action="append", help="connection id (repeatable)")
    args = parser.parse_args(argv)
    with args.capture.open("rb") as warm:
        while warm.read(1 << 24):
            pass
    ids = args.conn or pick(args.capture)
    out = Path(tempfile.mkdtemp(prefix="bench-ladder-"))
    path = str(args.capture)
    variants = {"analyze -f json": ["analyze", "-f", "json", path]}
    for conn_id in ids:
        variants[f"ladder --conn {conn_id} -o x.png"] = ["ladder", path, "--conn", str(conn_id), "-o",
                                                        str(out / f"{conn_id}.png")]
    variants[f"ladder --conn {ids[0]} --text"] = ["ladder", path, "--conn", str(ids[0]), "--text"]
    walls: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, list[int]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, command in variants.items():
            seconds, peak = run(command)
            walls[name].append(seconds)
            peaks[name].append(peak)
    base = statistics.median(walls["analyze -f json"])
    print(f"{args.capture}: {args.runs} runs each, interleaved")
    print(f"{'variant':<34} {'median s':>9} {'min':>7} {'max':>7} {'peak MB':>8} {'/ analyze':>9}")
    for name, values in walls.items():
        median = statistics.median(values)
        print(f"{name:<34} {median:9.3f} {min(values):7.3f} {max(values):7.3f} "
              f"{statistics.median(peaks[name]) / 1e6:8.0f} {median / base:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

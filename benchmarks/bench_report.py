"""Time `synfin report` against `synfin analyze -f json` of the same capture (issue 15).

    python benchmarks/bench_report.py [CAPTURE] [--runs 5]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap. Each round runs, each in a fresh interpreter, on the
same file (read once first, for the page cache):

    synfin analyze -f json FILE > /dev/null
    synfin report -f json FILE > /dev/null
    synfin report -f html FILE -o OUT.html

round by round, so that the machine's drift falls on every variant alike. Printed: median, min and max wall
time, median peak RSS (VmHWM, read by the child itself), and each variant's ratio to analyze's median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from synfin_peak import run

DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    args.capture.read_bytes()  # into the page cache
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "analyze -f json": ["analyze", "-f", "json", "--no-summary", str(args.capture)],
            "report -f json": ["report", "-f", "json", str(args.capture)],
            "report -f html": ["report", "-f", "html", "-o", str(Path(tmp) / "r.html"), str(args.capture)],
        }
        results: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, argv in variants.items():
                results[name].append(run(argv))
    base = statistics.median(s for s, _ in results["analyze -f json"])
    print(f"{args.capture} ({args.runs} runs)")
    for name, runs in results.items():
        times = [s for s, _ in runs]
        median = statistics.median(times)
        rss = statistics.median(r for _, r in runs) / 2**20
        print(f"  {name:16} median {median:6.2f} s (min {min(times):.2f}, max {max(times):.2f}), "
              f"peak RSS {rss:5.0f} MiB, {median / base:4.1f}x analyze")


if __name__ == "__main__":
    main()

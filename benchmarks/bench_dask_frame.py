"""What analyzer.to_dask_dataframe costs against to_dataframe, in time and peak memory (issue 16's API part).

    python benchmarks/bench_dask_frame.py [CAPTURE] [--parts 12 | --copies 4] [--runs 3] [--rows 25000,100000]
                                          [--json FILE]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap, cut once (before timing) into PARTS files with editcap, as
bench_rotated.py cuts it; or, with --copies N, the set is N copies of the whole capture one after another in
time (`editcap -t`: each copy starts a minute after the one before ends), N times the connections, to see
which costs grow with the set and which stay. Then, round by round, each case runs in a child process of
its own, which reports its own peak RSS (VmHWM) at its end:

    pandas          to_dataframe(analyze(SET)): every connection in one pandas frame
    dask ROWS       to_dask_dataframe(SET, rows_per_partition=ROWS): the set written as parquet partitions

Each child then computes one aggregate (the connections per close label: `frame["close"].value_counts()`),
timed on its own: the frame built (analysis and writing), and the query. Printed: the median, min and max
of each over the runs, and the peak RSS's median. The rows are compared once (untimed): the Dask frame,
computed and sorted by id, must equal the pandas frame sorted by id.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_rotated import DEFAULT_CAPTURE, ROOT, cut

CHILD = """
import sys, time, tempfile, analyzer
case, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if case == "pandas":
    frame = analyzer.to_dataframe(analyzer.analyze(path))
else:
    frame = analyzer.to_dask_dataframe(path, rows_per_partition=int(case), directory=tempfile.mkdtemp())
built = time.perf_counter() - start
counts = frame["close"].value_counts()
counts = counts if case == "pandas" else counts.compute()
queried = time.perf_counter() - start - built
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(built, queried, int(peak) * 1024, frame.npartitions if case != "pandas" else 1, int(counts.sum()))
"""

SAME = """
import sys, pandas, analyzer
path, rows = sys.argv[1], int(sys.argv[2])
whole = analyzer.to_dataframe(analyzer.analyze(path)).sort_index()
pandas.testing.assert_frame_equal(analyzer.to_dask_dataframe(path, rows_per_partition=rows).compute().sort_index(),
                                  whole)
print(len(whole))
"""


def copies(capture: Path, count: int, into: Path) -> None:
    """`count` copies of the capture, each re-timed to start 60 s after the previous one ends."""
    times = subprocess.run(["capinfos", "-a", "-e", "-S", "-T", "-r", str(capture)], capture_output=True, text=True,
                           check=True).stdout.split()
    span = float(times[-1]) - float(times[-2]) + 60.0
    for index in range(count):
        subprocess.run(["editcap", "-F", "pcap", "-t", f"{index * span:.6f}", str(capture),
                        str(into / f"copy{count - index:03d}.pcap")], check=True)


def measure(case: str, parts: Path) -> dict[str, float]:
    """One child: seconds to build the frame, seconds for the query, peak RSS (bytes), partitions, rows."""
    with tempfile.TemporaryDirectory(prefix="synfin-bench-dask-") as scratch:
        done = subprocess.run([sys.executable, "-c", CHILD, case, str(parts)], capture_output=True, text=True,
                              check=True, cwd=ROOT, env={**os.environ, "TMPDIR": scratch})
    built, queried, peak, partitions, rows = done.stdout.split()
    return {"build_s": float(built), "query_s": float(queried), "peak_bytes": int(peak),
            "partitions": int(partitions), "rows": int(rows)}


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("build_s", "query_s", "peak_bytes"):
        values = [run[key] for run in runs]
        out.update({key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)})
    out.update({"partitions": runs[0]["partitions"], "rows": runs[0]["rows"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--parts", type=int, default=12)
    parser.add_argument("--copies", type=int, default=0, help="the set: this many re-timed copies of CAPTURE")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", default="25000,100000", help="rows_per_partition values to run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cases = ["pandas", *args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="synfin-bench-set-") as directory:
        parts = Path(directory)
        if args.copies:
            copies(args.capture, args.copies, parts)
        else:
            cut(args.capture, args.parts, parts)
        checked = subprocess.run([sys.executable, "-c", SAME, str(parts), cases[1]], capture_output=True,
                                 text=True, check=True, cwd=ROOT)
        print(f"{args.capture} as a set of {len(list(parts.iterdir()))} files: {checked.stdout.strip()} connections, "
              "the same rows both ways")
        results: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
        for _ in range(args.runs):
            for case in cases:
                results[case].append(measure(case, parts))
    summary = {case: summarize(runs) for case, runs in results.items()}
    for case, row in summary.items():
        name = "to_dataframe" if case == "pandas" else f"to_dask_dataframe rows={case}"
        print(f"{name:>32}: build median {row['build_s']:.2f} s ({row['build_s_min']:.2f}-{row['build_s_max']:.2f}), "
              f"query {row['query_s']:.2f} s, peak RSS {row['peak_bytes'] / 2**20:.0f} MiB "
              f"({row['peak_bytes_min'] / 2**20:.0f}-{row['peak_bytes_max'] / 2**20:.0f}), "
              f"{row['partitions']:.0f} partition(s), {row['rows']:.0f} rows")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

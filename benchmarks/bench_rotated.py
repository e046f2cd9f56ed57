"""What reading a rotated set as one capture costs (issue 16): the whole file against the same frames in parts,
read in sequence and analyzed in parallel on Dask (analyzer/parallel.py).

    python benchmarks/bench_rotated.py [CAPTURE] [--parts 12] [--runs 5] [--json FILE] [--growth 3,6,12]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap. It is cut with `editcap -F pcap -c N` into PARTS files
of equal frame counts (in a temporary directory, named so that name order is not time order), once,
before timing. Then, round by round, each of these runs in a child process, standard output to /dev/null:

    synfin analyze --engine compiled -f json CAPTURE                  (the whole file)
    synfin analyze --engine compiled -f json PARTS_DIR/               (the set, read as one capture)
    synfin analyze --engine compiled -f json --workers 1 PARTS_DIR/   (the set on a local Dask cluster of 1 worker)
    synfin analyze --engine compiled -f json --workers 2 PARTS_DIR/   (... of 2 workers)

Wall time is measured around fork/exec/wait and peak RSS is the child's ``ru_maxrss`` (os.wait4: the
command's own process); for the Dask cases, one more run under a wrapper gives the largest of all the
processes it started (RUSAGE_CHILDREN: workers, nannies, scheduler); the median, min and max are printed.
Every case's JSON records are compared once (untimed): they must be the same bytes.

The merge step's own cost: in a child, the set is merged with the files run one after another here
(parallel.run_in_sequence), and the client's time is split (parallel.Merged.seconds): the files' own runs,
the scans of the merge's keys, the merge's tracker (carried connections tracked, adopted, retired and
formatted), numbering and writing; with how many connections were handed over at boundaries and how many
records the merge's tracker wrote, and the child's peak RSS; once more with --msl 0.05 and a 0.05 s close
linger (few connections open at the boundaries). With --growth, the same for the capture cut into other
numbers of files (once each): how the merge grows with the boundaries.
Also printed: what choosing the order costs (each file's first frame read: rotated.in_time_order).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")


def frame_count(capture: Path) -> int:
    done = subprocess.run(["capinfos", "-c", "-M", str(capture)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def cut(capture: Path, parts: int, into: Path) -> list[Path]:
    """The capture in `parts` files of equal frame counts, renamed so that name order runs back in time."""
    per_file = -(-frame_count(capture) // parts)
    subprocess.run(["editcap", "-F", "pcap", "-c", str(per_file), str(capture), str(into / "part.pcap")],
                   check=True)
    made = sorted(into.iterdir())
    return [path.rename(into / f"cap{len(made) - i:03d}.pcap") for i, path in enumerate(made)]


def run(args: list[str], output: int | None = None) -> tuple[float, int]:
    """Run `synfin ARGS` in a child; its wall time (s) and peak RSS (KiB)."""
    command = [sys.executable, "-m", "analyzer", *args]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=output if output is not None else subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"failed ({child.returncode}): {' '.join(command)}")
    return wall, usage.ru_maxrss


def workers_peak(args: list[str]) -> int:
    """Peak RSS (KiB) of the largest child of `synfin ARGS` (the Dask workers, nanny, scheduler are its
    descendants): measured by running it under a wrapper whose RUSAGE_CHILDREN covers them."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.DEVNULL, check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "analyzer", *args],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout.split()[-1])


def merge_phases(parts_dir: Path, *timers: float) -> dict[str, float]:
    """parallel.merge's own cost on the set, in a child (this script's --phases mode; `timers`: msl, linger)."""
    done = subprocess.run([sys.executable, __file__, "--phases", str(parts_dir), *map(str, timers)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def phases(parts_dir: Path, msl: float = 30.0, linger: float = 5.0) -> None:
    """--phases: the parts run here one after another, then the merge timed alone; JSON on stdout. With a
    short `msl` and `linger` (Timeouts.close_linger) few connections are open at the boundaries."""
    sys.path.insert(0, str(ROOT))
    from analyzer import parallel
    from analyzer.connection import Timeouts
    from analyzer.rotated import from_directory

    capture_set = from_directory(parts_dir)
    start = time.perf_counter()
    merged = parallel.analyze_set(capture_set, "json", Timeouts(msl=msl, close_linger=linger))
    scanned = time.perf_counter()
    assert merged is not None, "the set is read in sequence"
    written = sum(len(piece) for piece in merged.pieces())
    done = time.perf_counter()
    seconds = merged.seconds
    print(json.dumps({"files": len(capture_set.files), "count_s": scanned - start, "parts_s": seconds["parts"],
                      "merge_s": seconds["scan"] + seconds["track"], "scan_s": seconds["scan"],
                      "track_s": seconds["track"], "write_s": seconds["write"], "total_s": done - start,
                      "handed_over": merged.adopted, "remade": merged.remade,
                      "connections": merged.counts["connections"], "bytes": written,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def digest(args: list[str]) -> str:
    with tempfile.TemporaryFile() as out:
        run(args, out.fileno())
        out.seek(0)
        return hashlib.sha256(out.read()).hexdigest()


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--phases":
        phases(Path(sys.argv[2]), *map(float, sys.argv[3:5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--parts", type=int, default=12)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--growth", default="", help="also the merge's cost for these numbers of files (3,6,12)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from analyzer.rotated import in_time_order

    with tempfile.TemporaryDirectory(prefix="synfin-rotated-") as tmp:
        parts_dir = Path(tmp) / "set"
        parts_dir.mkdir()
        files = cut(args.capture, args.parts, parts_dir)
        cases = {"whole file": [str(args.capture)], f"set of {len(files)} files": [f"{parts_dir}/"],
                 "set, Dask, 1 worker": ["--workers", "1", f"{parts_dir}/"],
                 "set, Dask, 2 workers": ["--workers", "2", f"{parts_dir}/"]}
        base = ["analyze", "--engine", "compiled", "-f", "json"]
        digests = {name: digest(base + paths) for name, paths in cases.items()}
        same = len(set(digests.values())) == 1
        start = time.perf_counter()
        in_time_order(files)
        ordering = time.perf_counter() - start
        figures: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
        merges, quiet = [], []  # quiet: --msl 0.05 and a 0.05 s linger: few connections open at boundaries
        for _ in range(args.runs):  # alternately: this machine's speed drifts
            for name, paths in cases.items():
                figures[name].append(run(base + paths))
            merges.append(merge_phases(parts_dir))
            quiet.append(merge_phases(parts_dir, 0.05, 0.05))
        worker_peaks = {name: workers_peak(base + paths) for name, paths in cases.items() if "Dask" in name}
        growth = []
        for count in [int(n) for n in args.growth.split(",") if n]:
            other = Path(tmp) / f"set{count}"
            other.mkdir()
            cut(args.capture, count, other)
            growth.append(merge_phases(other))
    print(f"{args.capture}: {args.runs} runs each; records identical: {same}")
    summary: dict[str, object] = {}
    for name, runs in figures.items():
        walls = [wall for wall, _ in runs]
        rss = max(peak for _, peak in runs)
        summary[name] = {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
                         "peak_rss_mib": rss / 1024}
        extra = (f", largest process of the run (workers too) {worker_peaks[name] / 1024:.1f} MiB"
                 if name in worker_peaks else "")
        print(f"  {name:>22}: median {statistics.median(walls):.3f} s (min {min(walls):.3f}, "
              f"max {max(walls):.3f}), peak RSS {rss / 1024:.1f} MiB{extra}")
    merge = {key: statistics.median(m[key] for m in merges) for key in merges[0]}
    print(f"  merge step alone (median): {merge['merge_s']:.3f} s (scans {merge['scan_s']:.3f}, tracker "
          f"{merge['track_s']:.3f}; {merge['handed_over']:.0f} connections handed over, {merge['remade']:.0f} of "
          f"{merge['connections']:.0f} records written by the merge), numbering and writing {merge['write_s']:.3f} s; "
          f"the {merge['files']:.0f} parts one after another {merge['parts_s']:.3f} s, the first scans "
          f"{merge['count_s']:.3f} s; peak RSS {merge['peak_rss_mib']:.0f} MiB")
    short = {key: statistics.median(m[key] for m in quiet) for key in quiet[0]}
    print(f"  merge step, msl and linger 0.05 s (median): {short['merge_s']:.3f} s ({short['handed_over']:.0f} "
          f"handed over, {short['remade']:.0f} records by the merge), numbering and writing {short['write_s']:.3f} s; "
          f"parts one after another {short['parts_s']:.3f} s")
    for one in growth:
        print(f"  {one['files']:>3} files: merge {one['merge_s']:.3f} s, {one['handed_over']} handed over, "
              f"{one['remade']} records by the merge, writing {one['write_s']:.3f} s; parts {one['parts_s']:.3f} s")
    print(f"  ordering the set by first frame times: {ordering * 1000:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"capture": str(args.capture), "identical": same, "runs": summary,
                                         "ordering_s": ordering, "merge": merge, "merge_short_timers": short,
                                         "growth": growth,
                                         "worker_peaks_kib": worker_peaks}, indent=2))


if __name__ == "__main__":
    main()

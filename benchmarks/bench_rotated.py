"""What reading a rotated set as one capture costs (issue 16): the whole file against the same frames in parts.

    python benchmarks/bench_rotated.py [CAPTURE] [--parts 12] [--runs 5] [--json FILE]

CAPTURE defaults to /tmp/flood/bench250/bench.pcap. It is cut with `editcap -F pcap -c N` into PARTS files
of equal frame counts (in a temporary directory, named so that name order is not time order), once,
before timing. Then, round by round, each of these runs in a child process, standard output to /dev/null:

    synfin analyze --engine compiled -f json CAPTURE        (the whole file)
    synfin analyze --engine compiled -f json PARTS_DIR/     (the set, read as one capture)

Wall time is measured around fork/exec/wait and peak RSS is the child's ``ru_maxrss`` (os.wait4); the
median, min and max of the runs are printed. Both runs' JSON records are compared once (untimed): they
must be the same bytes. Also printed: what choosing the order costs (each file's first frame read:
rotated.in_time_order), timed in this process.

Not measured here: parallel analysis on Dask (the issue's part 2), which is not built yet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = Path("/tmp/flood/bench250/bench.pcap")


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


def digest(args: list[str]) -> str:
    with tempfile.TemporaryFile() as out:
        run(args, out.fileno())
        out.seek(0)
        return hashlib.sha256(out.read()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--parts", type=int, default=12)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from analyzer.rotated import in_time_order

    with tempfile.TemporaryDirectory(prefix="synfin-rotated-") as tmp:
        parts_dir = Path(tmp)
        files = cut(args.capture, args.parts, parts_dir)
        cases = {"whole file": [str(args.capture)], f"set of {len(files)} files": [f"{parts_dir}/"]}
        base = ["analyze", "--engine", "compiled", "-f", "json"]
        same = len({digest(base + paths) for paths in cases.values()}) == 1
        start = time.perf_counter()
        in_time_order(files)
        ordering = time.perf_counter() - start
        figures: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
        for _ in range(args.runs):  # alternately: this machine's speed drifts
            for name, paths in cases.items():
                figures[name].append(run(base + paths))
    print(f"{args.capture}: {args.runs} runs each; records identical: {same}")
    summary = {}
    for name, runs in figures.items():
        walls = [wall for wall, _ in runs]
        rss = max(peak for _, peak in runs)
        summary[name] = {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
                         "peak_rss_mib": rss / 1024}
        print(f"  {name:>16}: median {statistics.median(walls):.3f} s (min {min(walls):.3f}, "
              f"max {max(walls):.3f}), peak RSS {rss / 1024:.1f} MiB")
    print(f"  ordering the set by first frame times: {ordering * 1000:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"capture": str(args.capture), "identical": same, "runs": summary,
                                         "ordering_s": ordering}, indent=2))


if __name__ == "__main__":
    main()

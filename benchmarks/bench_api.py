"""Time the Python API against `synfin analyze -f json` on the same capture (issue 12).

    python benchmarks/bench_api.py [CAPTURE] [--runs 5]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap, as made by make_capture.py. Each named command of
COMMANDS runs in a subprocess of its own, round by round (so the machine's drift falls on all alike), and
its wall time and peak RSS (ru_maxrss of that child, from wait4) are taken. Printed: median, min and max
wall time, the median peak RSS, and each command's ratio to the first (the CLI) in wall time and RSS.

COMMANDS is the hook for more rows: a name and a shell command with {python} and {capture} to fill in
(a ladder row, say, once ladders run on the engine).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")

ITERATE = """
import sys, analyzer
n = 0
for conn in analyzer.analyze(sys.argv[1]):
    labels, client, server = conn.labels, conn.client.state, conn.server.state
    n += 1
print(n)
"""
DATAFRAME = """
import sys, analyzer
print(len(analyzer.to_dataframe(analyzer.analyze(sys.argv[1]))))
"""

#: name -> shell command; the first is what the others are compared with
COMMANDS: dict[str, str] = {
    "synfin analyze -f json > /dev/null": "{python} -m analyzer analyze -f json {capture}",
    "for conn in analyze(): labels, final states": "{python} -c {iterate} {capture}",
    "to_dataframe(analyze())": "{python} -c {dataframe} {capture}",
}


def run(command: str) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one run of `command` (through the shell: the shell's child is
    the Python process, and ru_maxrss of a wait4 covers the largest of the waited-for process's tree)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, shell=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"failed ({child.returncode}): {command}")
    return wall, usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with args.capture.open("rb") as warm:  # into the page cache
        while warm.read(1 << 24):
            pass
    fill = {"python": shlex.quote(sys.executable), "capture": shlex.quote(str(args.capture)),
            "iterate": shlex.quote(ITERATE), "dataframe": shlex.quote(DATAFRAME)}
    commands = {name: template.format(**fill) for name, template in COMMANDS.items()}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[int]] = {name: [] for name in commands}
    for round_ in range(args.runs):
        for name, command in commands.items():
            wall, peak = run(command)
            walls[name].append(wall)
            peaks[name].append(peak)
        print(f"round {round_ + 1}/{args.runs}: " + ", ".join(f"{w[-1]:.2f} s" for w in walls.values()),
              file=sys.stderr)
    base = next(iter(commands))
    base_wall, base_rss = statistics.median(walls[base]), statistics.median(peaks[base])
    print(f"{args.capture}, {args.runs} runs each, alternated")
    print(f"{'command':46} {'median':>8} {'min-max':>13} {'peak RSS':>9} {'wall ÷ 1st':>10} {'RSS ÷ 1st':>9}")
    for name in commands:
        wall, rss = statistics.median(walls[name]), statistics.median(peaks[name])
        print(f"{name:46} {wall:7.2f}s {min(walls[name]):5.2f}-{max(walls[name]):5.2f} s "
              f"{rss / 2**20:6.0f} MiB {wall / base_wall:10.2f} {rss / base_rss:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One `synfin` command timed in a subprocess of its own: wall seconds and peak RSS (VmHWM, read by the child
itself at its end, so the figure is the command's and not the benchmark's). Shared by bench_ladder.py and
bench_report.py."""

from __future__ import annotations

import subprocess
import sys
import time

PEAK = """
import sys
from analyzer.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as status_file:
    print("peak-rss-kib", next(line.split()[1] for line in status_file if line.startswith("VmHWM:")),
          file=sys.stderr)
sys.exit(status)
"""


def run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of `synfin ARGS`, standard output to /dev/null."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)
    seconds = time.perf_counter() - start
    peak = next(line for line in done.stderr.splitlines() if line.startswith("peak-rss-kib"))
    return seconds, int(peak.split()[1]) * 1024

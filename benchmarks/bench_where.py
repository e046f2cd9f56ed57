"""Time `synfin analyze --where TERMS` against no --where (and, optionally, against another build) (issue 12).

    python benchmarks/bench_where.py [CAPTURE] [--runs 5] [--where 'open=unanswered' --where 'open=handshake']
                                     [--baseline DIR]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap, as made by make_capture.py. Each round runs, on the same
file, standard output to /dev/null:

    python -m analyzer analyze -f json FILE                 (no --where)
    python -m analyzer analyze -f json --where TERMS FILE   (each TERMS: the compiled engine tests every connection)
    PYTHONPATH=DIR python -m analyzer analyze -f json FILE  (with --baseline: another checkout's build, e.g. main's)

round by round, so that the VM's drift falls on every variant alike. The file is read once before timing
(page cache). Printed: median, min and max wall time per variant, the connections each wrote (from the
summary's "N of M connections matched" line), the median CPU time (user + system of the process and its
threads, which a busy shared machine disturbs less than the wall time) and each one's ratio to the run
without --where.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")
SYNFIN = f"{shlex.quote(sys.executable)} -m analyzer analyze -f json"


def variants(capture: Path, terms: list[str], baseline: Path | None) -> dict[str, tuple[str, Path]]:
    """Name -> (shell command, directory to run it in: its analyzer/ is the one imported)."""
    path = shlex.quote(str(capture))
    commands = {"no --where": (f"{SYNFIN} {path}", ROOT)}
    if baseline is not None:
        commands[f"no --where, {baseline}"] = (f"{SYNFIN} {path}", baseline)
    for term in terms:
        commands[f"--where {term!r}"] = (f"{SYNFIN} --where {shlex.quote(term)} {path}", ROOT)
    return commands


def run(command: str, where: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, all threads: less sensitive to a busy machine), the summary."""
    env = {**os.environ, "PYTHONPATH": str(where)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, cwd=where, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def written(summary: str) -> str:
    found = re.search(r"^  (\d+) of \d+ connections? matched", summary, re.MULTILINE)
    if found:
        return found.group(1)
    found = re.search(r", (\d+) connections?", summary)
    return found.group(1) if found else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--where", action="append",
                        help="--where terms (repeatable; default 'open=unanswered' and 'open=handshake')")
    parser.add_argument("--baseline", type=Path, help="another checkout with a built engine, timed without --where")
    args = parser.parse_args(argv)
    terms = args.where or ["open=unanswered", "open=handshake"]
    with args.capture.open("rb") as warm:
        while warm.read(1 << 24):
            pass
    commands = variants(args.capture, terms, args.baseline)
    load = f"{os.getloadavg()[0]:.1f}"
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    count: dict[str, str] = {}
    for _ in range(args.runs):
        for name, (command, where) in commands.items():
            seconds, cpu, summary = run(command, where)
            times[name].append(seconds)
            cpus[name].append(cpu)
            count[name] = written(summary)
    base, base_cpu = statistics.median(times["no --where"]), statistics.median(cpus["no --where"])
    print(f"{args.capture}: {args.runs} runs each, interleaved; load average before and after: {load}, "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'variant':<56} {'median s':>9} {'min':>7} {'max':>7} {'/ none':>7} {'cpu s':>7} {'/ none':>7} "
          f"{'written':>9}")
    for name, values in times.items():
        median, cpu = statistics.median(values), statistics.median(cpus[name])
        print(f"{name:<56} {median:9.3f} {min(values):7.3f} {max(values):7.3f} {median / base:7.2f} "
              f"{cpu:7.3f} {cpu / base_cpu:7.2f} {count[name]:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time `synfin analyze --filter EXPR` against no filter and against tcpdump doing the filtering (issue 12).

    python benchmarks/bench_filter.py [CAPTURE] [--runs 5] [--expr 'tcp port 80' --expr 'tcp port 9001']

CAPTURE defaults to /tmp/synfin-bench/bench.pcap, as made by make_capture.py. Each round runs, on the same
file, standard output to /dev/null:

    python -m analyzer analyze -f json FILE                                  (no filter)
    python -m analyzer analyze -f json --filter EXPR FILE                    (each EXPR: libpcap in the engine)
    tcpdump -r FILE -w - EXPR | python -m analyzer analyze -f json -         (each EXPR: tcpdump filters)

round by round, so that the VM's drift falls on every variant alike. The file is read once before timing
(page cache). Printed: median, min and max wall time per variant, the frames each kept (from the summary on
standard error) and each filtered run's ratio to the unfiltered one and to the tcpdump pipe.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")
SYNFIN = f"{shlex.quote(sys.executable)} -m analyzer analyze -f json"


def variants(capture: Path, expressions: list[str]) -> dict[str, str]:
    """Name -> shell command."""
    path = shlex.quote(str(capture))
    commands = {"no filter": f"{SYNFIN} {path}"}
    for expr in expressions:
        commands[f"--filter {expr!r}"] = f"{SYNFIN} --filter {shlex.quote(expr)} {path}"
        commands[f"tcpdump {expr!r} | synfin -"] = (f"tcpdump -r {path} -w - {shlex.quote(expr)} 2>/dev/null | "
                                                   f"{SYNFIN} -")
    return commands


def run(command: str) -> tuple[float, str]:
    """Wall seconds, and the summary's first line."""
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)
    return time.perf_counter() - start, (done.stderr.splitlines() or [""])[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--expr", action="append", help="BPF expression (repeatable; default 'tcp port 80')")
    args = parser.parse_args(argv)
    expressions = args.expr or ["tcp port 80"]
    with args.capture.open("rb") as warm:
        while warm.read(1 << 24):
            pass
    commands = variants(args.capture, expressions)
    times: dict[str, list[float]] = {name: [] for name in commands}
    kept: dict[str, str] = {}
    for _ in range(args.runs):
        for name, command in commands.items():
            seconds, summary = run(command)
            times[name].append(seconds)
            found = re.search(r": (\d+) frames?,", summary)
            kept[name] = found.group(1) if found else "?"
    base = statistics.median(times["no filter"])
    print(f"{args.capture}: {args.runs} runs each, interleaved")
    print(f"{'variant':<44} {'median s':>9} {'min':>7} {'max':>7} {'frames':>9} {'/ none':>7} {'/ tcpdump':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        piped = times.get(name.replace("--filter ", "tcpdump ", 1) + " | synfin -") if "--filter" in name else None
        to_pipe = f"{median / statistics.median(piped):9.2f}" if piped else f"{'':9}"
        print(f"{name:<44} {median:9.3f} {min(values):7.3f} {max(values):7.3f} {kept[name]:>9} "
              f"{median / base:7.2f} {to_pipe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Can `synfin live` keep up with a replayed capture? Rising replay rates, compared with `synfin analyze`.

    sudo python benchmarks/live_replay.py [--capture bench.pcap] [--frames 100000]
                                          [--rates 10000,50000,100000,250000,top]
                                          [--engines compiled,reference] [--preload]
                                          [-- LIVE OPTIONS...]

The first `--frames` frames of the capture (an `editcap -r` cut; 0: all of
it) are replayed with `tcpreplay` into one end of a veth pair inside a network
namespace made for the run (tests/replay.py, removed at the end); `synfin live
-f json --engine ENGINE` listens on the other end, for each of `--engines` in
turn (the compiled engine on libpcap's ring, live_engine.py; the reference
pipeline on a packet socket, live.py), so the two are measured on the same
frames in the same run. Per rate and engine it prints: frames tcpreplay sent,
how long that took (tcpreplay's own figure) and the rate that makes, what the
kernel dropped before synfin read it, frames
synfin analyzed, the connections of `synfin analyze` of the same cut whose
labels (open, close, active closer, who reset) are missing from the live
report or differ; synfin's CPU time from listening until it has read
everything (user + system: how much of a core the rate costs it); and its
resident memory (VmRSS, sampled every 0.2 s)
at the start, at its peak and at the end of the step; with `--rss-every S`,
also its RSS every S seconds through the step: on a long replay (`--frames 0
--rates 20000 --rss-every 10`), whether memory stays flat.

`top` is `tcpreplay --topspeed`. Arguments after `--` go to `synfin live`.
The sniffer, tcpreplay and the kernel share this machine's cores, so the
figures are for this machine and its load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns import NetnsError  # noqa: E402
from tests.replay import RSS_EVERY, ReplayLink, analyze, differing, labels  # noqa: E402

DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")


def main() -> int:
    args = _options()
    if os.geteuid() != 0:
        print("live_replay: needs root (network namespaces, packet sockets)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="live-replay-") as tmp:
        cut = _cut(args.capture, args.frames, Path(tmp))
        expected = labels(analyze(cut))
        print(f"{args.capture} (first {args.frames or 'all'} frames): {len(expected)} connections in "
              f"synfin analyze; synfin live {' '.join(args.live) or '(default options)'}")
        print(f"{'rate (frames/s)':>16} {'engine':>9} {'sent':>9} {'seconds':>8} {'sent/s':>8} {'dropped':>8} "
              f"{'analyzed':>9} {'labels differ':>16} {'CPU s':>6}  RSS MB start/peak/end")
        try:
            with ReplayLink() as link:
                for rate in args.rates.split(","):
                    for engine in args.engines.split(","):
                        _step(link, cut, rate.strip(), engine.strip(), expected, args, Path(tmp))
        except NetnsError as err:  # setting up the link, or a ReplayError
            print(f"live_replay: {err}", file=sys.stderr)
            return 1
    return 0


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--frames", type=int, default=100_000, help="replay the first N frames (0: all)")
    parser.add_argument("--rates", default="10000,50000,100000,250000,top",
                        help="frames per second, comma-separated; 'top' is tcpreplay --topspeed")
    parser.add_argument("--engines", default="compiled,reference",
                        help="synfin live --engine for each rate, comma-separated (default: compiled,reference)")
    parser.add_argument("--preload", action="store_true",
                        help="tcpreplay --preload-pcap: the cut read into memory first, so top speed is higher")
    parser.add_argument("--rss-every", type=float, default=0, metavar="SECONDS",
                        help="also print synfin's RSS every SECONDS through each step")
    parser.add_argument("live", nargs="*", help="after --: more options for synfin live")
    return parser.parse_args()


def _cut(capture: Path, frames: int, tmp: Path) -> Path:
    if not frames:
        return capture
    cut = tmp / f"first{frames}.pcap"
    subprocess.run(["editcap", "-r", str(capture), str(cut), f"1-{frames}"], check=True, capture_output=True)
    return cut


def _step(link: ReplayLink, cut: Path, rate: str, engine: str, expected: dict,  # type: ignore[type-arg]
          args: argparse.Namespace, tmp: Path) -> None:
    run = link.replay(cut, rate, ["--engine", engine, *args.live], tmp, preload=args.preload,
                      keep_events=False)
    differ = len(differing(expected, labels(run.records)))
    rss = "/".join(f"{kb / 1024:.0f}" for kb in (run.rss_kb[0], max(run.rss_kb), run.rss_kb[-1])) \
        if run.rss_kb else "-"
    print(f"{rate:>16} {engine:>9} {run.sent:>9} {run.seconds:>8.2f} {run.sent / run.seconds:>8.0f} "
          f"{run.dropped:>8} {run.analyzed:>9} {differ:>6} of {len(expected):<7} {run.cpu_seconds:>6.2f}  {rss}",
          flush=True)
    if args.rss_every > 0 and run.rss_kb:
        every = max(1, round(args.rss_every / RSS_EVERY))
        print(f"{'':>16} RSS MB every {args.rss_every:g} s: "
              + " ".join(f"{kb / 1024:.0f}" for kb in run.rss_kb[::every]), flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Run the fuzzer: `python -m tests.fuzz [--seconds S] [--seed N] [--out DIR]` (the Makefile's `fuzz` target).

The fuzzer runs in a child process (`--worker`) watched by this one, so that
a crash (a sanitizer report, a segfault) or a hang still leaves a
reproducer: the child writes each input to OUT/work/current.pcap before
running it, and when the child dies or stops making progress for
--hang-seconds, this process keeps that file as OUT/findings/crash-*.pcap or
hang-*.pcap, with the child's last output next to it. Mismatches between the
engines and tracebacks are saved by the child itself (OUT/findings/
mismatch-*.pcap, traceback-*.pcap, each with a .txt saying what differed and
the options to run it with).

The exit status is 0 when nothing was found, 1 otherwise. (The worker's own
status is 0, FOUND for mismatches and tracebacks, or NO_ENGINE; any other
is a crash.) Which `analyzer` runs is whatever Python imports (the Makefile
puts build/sanitize first on PYTHONPATH, with PYTHONSAFEPATH=1); it is
printed at the start.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOUND, NO_ENGINE = 3, 2  # the worker's exit statuses besides 0; any other is a crash


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to mutate, after the seeds")
    parser.add_argument("--seed", type=int, default=1, help="the random seed of the mutations")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz-out")
    parser.add_argument("--crafted", type=int, default=480, help="crafted captures to seed with (tests/crafting.py)")
    parser.add_argument("--hang-seconds", type=float, default=60.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _worker(args) if args.worker else _supervise(args, argv if argv is not None else sys.argv[1:])


def _worker(args: argparse.Namespace) -> int:
    import analyzer
    from analyzer import engine
    from tests.fuzz.harness import Fuzzer, seeds

    if not engine.available():
        print("the compiled engine is not built: nothing to compare the reference with", file=sys.stderr)
        return NO_ENGINE
    from analyzer import _engine, cli

    # One argument parser for the whole run: building it is half the time of a small input's analysis.
    cli.build_parser = functools.cache(cli.build_parser)  # type: ignore[assignment]
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    fuzzer = Fuzzer(work, args.seed, args.out / "findings", args.out / "corpus", log=True)
    print(f"analyzer from {Path(analyzer.__file__).parent}, engine {Path(_engine.__file__).name}, "
          f"coverage map: {'yes' if fuzzer.coverage else 'no (unguided: not the fuzz build)'}", flush=True)
    fuzzer.seed(seeds(args.crafted))
    print(f"seeds: {fuzzer.stats.line()}", flush=True)
    fuzzer.run(seconds=args.seconds)
    print(f"done: {fuzzer.stats.line()}", flush=True)
    return FOUND if fuzzer.stats.findings else 0


def _supervise(args: argparse.Namespace, argv: list[str]) -> int:
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "worker.log"
    current = work / "current.pcap"
    current.unlink(missing_ok=True)
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "tests.fuzz", *argv, "--worker"], stdout=log,
                                 stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
        status = _watch(child, current, args.hang_seconds, log_path)
    tail = log_path.read_text(errors="replace")
    if status == "hang" or status not in (0, FOUND, NO_ENGINE):
        kept = _keep(args.out, current, "hang" if status == "hang" else "crash", tail)
        print(tail[-6000:])
        print(f"the engine {'hung' if status == 'hang' else f'died (status {status})'} on {kept}")
        return 1
    print("\n".join(line for line in tail.splitlines() if not line.startswith("[")))
    return 0 if status == 0 else 1


def _watch(child: subprocess.Popen, current: Path, hang_seconds: float, log_path: Path) -> int | str:
    """The child's exit status, or "hang" if its current input did not change for `hang_seconds`."""
    last = None
    last_change = time.monotonic()
    while True:
        try:
            return child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        stamp = current.stat().st_mtime_ns if current.exists() else None
        if stamp != last:
            last, last_change = stamp, time.monotonic()
        elif stamp is not None and time.monotonic() - last_change > hang_seconds:
            child.kill()
            child.wait()
            return "hang"
        if log_path.exists():
            _echo_progress(log_path)


_echoed = 0


def _echo_progress(log_path: Path) -> None:
    """Print the child's new progress lines as they come (so a long run is seen to be alive)."""
    global _echoed
    text = log_path.read_text(errors="replace")
    lines = text.splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]
    for line in complete[_echoed:]:
        if line.startswith("["):
            print(line, end="", flush=True)
    _echoed = len(complete)


def _keep(out: Path, current: Path, kind: str, log: str) -> Path:
    findings = out / "findings"
    findings.mkdir(parents=True, exist_ok=True)
    content = current.read_bytes() if current.exists() else b""
    options = (current.parent / "current.options")
    name = f"{kind}-{hashlib.sha1(content).hexdigest()[:12]}"
    kept = findings / f"{name}.pcap"
    shutil.copyfile(current, kept) if current.exists() else kept.write_bytes(b"")
    opts = options.read_text() if options.exists() else ""
    (findings / f"{name}.txt").write_text(f"options: {opts}\n{log[-20000:]}")
    return kept


if __name__ == "__main__":
    sys.exit(main())

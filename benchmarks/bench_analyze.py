"""Time `synfin analyze` against `tcptrace -n` and `tshark -z conv,tcp` on the same capture (issue 6).

    python benchmarks/bench_analyze.py [CAPTURE] [--runs 5] [--tools synfin,tcptrace,tshark,cat]
                                       [--limit-synfin-seconds 60] [--cold-cache-dir DIR] [--json FILE]

CAPTURE defaults to /tmp/synfin-bench/bench.pcap, as made by make_capture.py;
the pcapng, IPv6, VLAN and ¼/½/2× files are found through the ``manifest.json``
beside it (or given with --pcapng, --ipv6, --vlan, --scale-files).

Every tool runs on the same file in this one run, round by round (one run of
each tool per round), its standard output to /dev/null:

    python -m analyzer analyze --engine compiled --format json FILE   (this repository's synfin)
    tcptrace -n FILE
    tshark -q -z conv,tcp -r FILE
    cat FILE                                         (baseline: reading the file)

Wall time is measured around fork/exec/wait; peak RSS is the child's
``ru_maxrss`` from ``os.wait4``. The file is read once before timing, so it
is in the page cache for every tool. Reported: median, min and max wall,
packets/s (packet count from the manifest, else ``capinfos -c``), peak RSS and
the ratios synfin/tcptrace and synfin/tshark.

Also: synfin's first run after clearing its bytecode caches (``__pycache__``
under analyzer/, plus every ``--cold-cache-dir``), timed apart from the warm
runs; a scaling table of synfin's wall time and peak RSS on ¼, ½, 1 and 2× the
capture; synfin on the pcapng, IPv6 and VLAN copies against the plain pcap
(each of these files run alternately with the plain 1× pcap, and its ratio
taken to those paired runs: this VM's speed drifts by 20 % over minutes);
and each tool's connection count next to the manifest's (synfin's from its
summary on stderr, tcptrace's and tshark's from one extra, untimed run each).

A synfin run slower than ``--limit-synfin-seconds`` is not repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = Path("/tmp/synfin-bench/bench.pcap")
ALL_TOOLS = ("synfin", "tcptrace", "tshark", "cat")
VARIANTS = {"pcapng": ("pcapng", "pcap"), "ipv6": ("IPv6", "IPv4"), "vlan": ("VLAN", "plain")}
SCALES = ("x0.25", "x0.5", "x1", "x2")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def command(tool: str, path: Path) -> list[str]:
    """The command line of `tool` on `path` (standard output goes to /dev/null)."""
    return {
        "synfin": [sys.executable, "-m", "analyzer", "analyze", "--engine", "compiled", "--format", "json", str(path)],
        "tcptrace": ["tcptrace", "-n", str(path)],
        "tshark": ["tshark", "-q", "-z", "conv,tcp", "-r", str(path)],
        "cat": ["cat", str(path)],
    }[tool]


# -- one timed run ----------------------------------------------------------------


@dataclass
class Sample:
    """One run: wall seconds, peak RSS (KiB), exit status, what it wrote on stderr."""

    wall: float
    rss_kib: int
    status: int
    stderr: str = field(repr=False)


def child_env() -> dict[str, str]:
    """This environment with bytecode caching on, as after a normal install (pip writes .pyc files)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}


def timed(cmd: Sequence[str]) -> Sample:
    """Run `cmd` (stdout to /dev/null), timing it and taking its rusage from wait4."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if proc.returncode:
        console.print(f"[red]{' '.join(cmd)} exited {proc.returncode}: {text.strip()[-500:]}[/]")
    return Sample(wall, usage.ru_maxrss, proc.returncode, text)


@dataclass
class Result:
    """Every run of one tool on one file, and the figures drawn from them."""

    tool: str
    file: str
    packets: int
    samples: list[Sample] = field(default_factory=list)
    cold: Sample | None = None

    @property
    def walls(self) -> list[float]:
        return [s.wall for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss_mib(self) -> float:
        return max(s.rss_kib for s in self.samples) / 1024

    @property
    def pps(self) -> float:
        return self.packets / self.median

    def summary(self) -> dict[str, Any]:
        """The figures, for --json."""
        out = {"tool": self.tool, "file": self.file, "packets": self.packets, "runs": len(self.samples),
               "walls_s": [round(w, 4) for w in self.walls], "median_s": round(self.median, 4),
               "min_s": round(min(self.walls), 4), "max_s": round(max(self.walls), 4),
               "packets_per_s": round(self.pps), "peak_rss_mib": round(self.rss_mib, 1)}
        if self.cold:
            out["cold"] = {"wall_s": round(self.cold.wall, 4), "peak_rss_mib": round(self.cold.rss_kib / 1024, 1)}
        return out


# -- files, packet counts, caches -------------------------------------------------


def load_index(capture: Path) -> dict[str, Any]:
    """manifest.json beside the capture (make_capture.py's), or an empty one."""
    index = capture.parent / "manifest.json"
    found = json.loads(index.read_text()) if index.exists() else {"files": {}, "captures": {}}
    return {**found, "dir": capture.parent.resolve()}


def packet_count(path: Path, index: dict[str, Any]) -> int:
    """Packets in `path`: from the manifest when it lists the file, else capinfos."""
    for entry in index["files"].values():
        if entry["file"] == path.name and path.resolve().parent == index["dir"]:
            return int(entry["packets"])
    out = subprocess.run(["capinfos", "-M", "-c", "-T", str(path)], capture_output=True, text=True, check=True)
    header, values = out.stdout.strip().splitlines()[:2]
    return int(dict(zip(header.split("\t"), values.split("\t"), strict=True))["Number of packets"])


def find_variants(capture: Path, index: dict[str, Any], args: argparse.Namespace) -> dict[str, Path]:
    """The variant files: given on the command line, else listed in the manifest."""
    found: dict[str, Path] = {}
    for key in (*VARIANTS, "x0.25", "x0.5", "x2"):
        entry = index["files"].get(key)
        if entry and not args.no_variants:
            found[key] = capture.parent / entry["file"]
    for key in VARIANTS:
        if getattr(args, key):
            found[key] = getattr(args, key)
    if args.scale_files:
        found.update(zip(("x0.25", "x0.5", "x2"), args.scale_files, strict=True))
    return {k: v for k, v in found.items() if v.exists()}


def clear_caches(extra: Sequence[Path]) -> list[str]:
    """Remove analyzer/'s __pycache__ directories and the contents of `extra`; what was removed."""
    removed = []
    for cache in (ROOT / "analyzer").rglob("__pycache__"):
        shutil.rmtree(cache)
        removed.append(str(cache))
    for directory in extra:
        if directory.is_dir():
            for child in directory.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            removed.append(f"{directory}/*")
    return removed


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Read every file once so that no tool pays for the disk."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# -- running the rounds -------------------------------------------------------------


def bench_file(path: Path, tools: Sequence[str], runs: int, packets: int, args: argparse.Namespace,
               cold: bool = False) -> dict[str, Result]:
    """Round-robin runs of `tools` on `path`; synfin stops repeating once a run exceeds the limit."""
    results = {tool: Result(tool, path.name, packets) for tool in tools}
    if cold and "synfin" in tools:
        removed = clear_caches(args.cold_cache_dir)
        console.print(f"  cold synfin run (cleared {len(removed)} cache dirs)")
        results["synfin"].cold = timed(command("synfin", path))
    for round_no in range(runs):
        for tool in tools:
            result = results[tool]
            if tool == "synfin" and result.samples and result.samples[-1].wall > args.limit_synfin_seconds:
                continue
            result.samples.append(timed(command(tool, path)))
            console.print(f"  round {round_no + 1}/{runs} {tool:9} {result.samples[-1].wall:8.2f} s", style="dim")
    return results


# -- connection counts ----------------------------------------------------------------


def census(path: Path, tool: str) -> dict[str, int]:
    """Connections as tcptrace or tshark count them (one untimed run, output kept)."""
    out = subprocess.run(command(tool, path), capture_output=True, text=True, check=False).stdout
    if tool == "tshark":
        return {"connections": sum(1 for line in out.splitlines() if "<->" in line)}
    counts: dict[str, int] = {"connections": 0}
    for status in re.findall(r"^\s*\d+: .*\((\w[\w ]*)\)\s*$", out, re.MULTILINE):
        counts["connections"] += 1
        counts[status] = counts.get(status, 0) + 1
    return counts


def synfin_census(stderr: str) -> dict[str, Any]:
    """synfin's own summary (stderr in --format json): connections, open and close labels."""
    found: dict[str, Any] = {}
    if m := re.search(r"(\d+) frames, (\d+) TCP segments, (\d+) connections", stderr):
        found.update(frames=int(m[1]), segments=int(m[2]), connections=int(m[3]))
    for key in ("open", "close"):
        if m := re.search(rf"^\s*{key}:\s*(.*)$", stderr, re.MULTILINE):
            found[key] = m[1].strip()
    return found


def expected(path: Path, index: dict[str, Any]) -> dict[str, Any]:
    """What the generator's manifest says this capture holds."""
    for capture in index["captures"].values():
        manifest_path = path.parent / capture["manifest"]
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest["capture"] == path.name:
            kinds = {k: v["completed"] for k, v in manifest["kinds"].items()}
            return {"connections": manifest["completed"], "kinds": kinds,
                    "reused_four_tuples": manifest["scan"]["reused_four_tuples"],
                    "four_tuples": manifest["scan"]["four_tuples"]}
    return {}


# -- tables ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, Python and the peers' versions."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "memory_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "tshark": _first_line(["tshark", "--version"]),
            "tcptrace": _first_line(["tcptrace", "-v"], stderr=True).removeprefix("Version: "),
            "synfin_commit": _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
            "peak_rss_from": "os.wait4 rusage ru_maxrss",
            "bytecode_cache": "on (PYTHONDONTWRITEBYTECODE / PYTHONPYCACHEPREFIX removed for the runs)"}


def _first_line(cmd: Sequence[str], stderr: bool = False) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not found"
    text = (done.stderr if stderr else done.stdout) or done.stdout or done.stderr
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def print_main(results: dict[str, Result], path: Path) -> None:
    table = Table(title=f"{path.name}: {next(iter(results.values())).packets:,} packets, "
                        f"{path.stat().st_size / 1e6:,.0f} MB")
    for name in ("tool", "runs", "median wall", "min", "max", "packets/s", "peak RSS", "synfin ÷ tool"):
        table.add_column(name, justify="left" if name == "tool" else "right")
    synfin = results.get("synfin")
    for tool, r in results.items():
        ratio = f"{synfin.median / r.median:.2f}×" if synfin and tool not in ("synfin", "cat") else ""
        table.add_row(tool, str(len(r.samples)), f"{r.median:.2f} s", f"{min(r.walls):.2f}", f"{max(r.walls):.2f}",
                      _rate(r.pps), f"{r.rss_mib:,.0f} MiB", ratio)
    console.print(table)
    if synfin and synfin.cold:
        console.print(f"synfin cold (first run after clearing caches): {synfin.cold.wall:.2f} s, "
                      f"{synfin.cold.rss_kib / 1024:,.0f} MiB; warm median {synfin.median:.2f} s "
                      f"(cold − warm = {synfin.cold.wall - synfin.median:+.2f} s)")


def _rate(pps: float) -> str:
    return f"{pps / 1e6:.2f} M" if pps >= 1e6 else f"{pps / 1e3:.0f} k"


def print_scaling(rows: dict[str, tuple[Result, Result]]) -> None:
    """Each row's ratios are to the 1× runs it was paired with (the 1× row: the main runs)."""
    base_rss = rows["x1"][0].rss_mib
    table = Table(title="synfin: growth with capture size (each size paired with 1×)")
    for name in ("size", "file", "packets", "wall", "packets/s", "peak RSS", "wall ÷ 1×", "RSS ÷ 1×"):
        table.add_column(name, justify="left" if name in ("size", "file") else "right")
    for key in SCALES:
        if key in rows:
            r, b = rows[key]
            table.add_row(key[1:] + "×", r.file, f"{r.packets:,}", f"{r.median:.2f} s", _rate(r.pps),
                          f"{r.rss_mib:,.0f} MiB", f"{r.median / b.median:.2f}", f"{r.rss_mib / base_rss:.2f}")
    console.print(table)


def print_variants(rows: dict[str, tuple[Result, Result]]) -> None:
    table = Table(title="synfin: variants against the plain IPv4 pcap (run alternately with it)")
    for name in ("variant", "file", "packets", "wall", "base wall", "wall ratio", "per-packet ratio", "peak RSS"):
        table.add_column(name, justify="left" if name in ("variant", "file") else "right")
    for key, (r, base) in rows.items():
        label = f"{VARIANTS[key][0]} ÷ {VARIANTS[key][1]}"
        per_packet = (r.median / r.packets) / (base.median / base.packets)
        table.add_row(label, r.file, f"{r.packets:,}", f"{r.median:.2f} s", f"{base.median:.2f} s",
                      f"{r.median / base.median:.2f}", f"{per_packet:.2f}", f"{r.rss_mib:,.0f} MiB")
    console.print(table)


def print_census(counts: dict[str, dict[str, Any]], want: dict[str, Any]) -> None:
    table = Table(title="connections counted")
    table.add_column("source")
    table.add_column("connections", justify="right")
    table.add_column("details")
    if want:
        kinds = ", ".join(f"{k} {v:,}" for k, v in want["kinds"].items())
        table.add_row("manifest (generator)", f"{want['connections']:,}",
                      f"{kinds}; {want['four_tuples']:,} distinct 4-tuples, {want['reused_four_tuples']:,} reused")
    for tool, found in counts.items():
        details = "; ".join(f"{k} {v}" for k, v in found.items() if k != "connections")
        table.add_row(tool, f"{found.get('connections', 0):,}", details)
    console.print(table)


# -- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each tool (default 5)")
    parser.add_argument("--tools", default="synfin,tcptrace,tshark,cat",
                        help=f"comma-separated, from {','.join(ALL_TOOLS)}")
    parser.add_argument("--limit-synfin-seconds", type=float, default=60.0,
                        help="do not repeat a synfin run that took longer than this (default 60)")
    parser.add_argument("--cold-cache-dir", type=Path, action="append", default=[],
                        help="a JIT/compile cache directory to empty before the cold run (repeatable)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache run")
    parser.add_argument("--no-census", action="store_true", help="skip the untimed connection-count runs")
    parser.add_argument("--no-variants", action="store_true", help="ignore the variants listed in the manifest")
    parser.add_argument("--no-scaling", action="store_true", help="skip the ¼/½/2× table")
    parser.add_argument("--variant-runs", type=int, default=None, help="synfin runs per variant (default --runs)")
    parser.add_argument("--pcapng", type=Path, help="pcapng copy of CAPTURE")
    parser.add_argument("--ipv6", type=Path, help="the same traffic over IPv6")
    parser.add_argument("--vlan", type=Path, help="CAPTURE with 802.1Q tags")
    parser.add_argument("--scale-files", type=Path, nargs=3, metavar=("QUARTER", "HALF", "DOUBLE"))
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    if unknown := set(args.tools) - set(ALL_TOOLS):
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    return args


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every table's figures."""
    capture, index = args.capture, load_index(args.capture)
    variants = find_variants(capture, index, args)
    warm_page_cache([capture, *variants.values()])
    packets = packet_count(capture, index)
    console.print(f"[bold]{capture}[/]: {packets:,} packets; tools {', '.join(args.tools)}; {args.runs} runs")
    main = bench_file(capture, args.tools, args.runs, packets, args, cold=not args.no_cold)
    print_main(main, capture)
    report: dict[str, Any] = {"machine": machine(), "capture": str(capture),
                              "results": [r.summary() for r in main.values()]}
    if "synfin" in main:
        report.update(scale_and_variants(main["synfin"], variants, index, args))
    if not args.no_census:
        report["census"] = run_census(capture, main, index, args.tools)
    return report


def bench_pair(path: Path, base: Path, runs: int, index: dict[str, Any]) -> tuple[Result, Result]:
    """synfin on `path` and on `base` alternately, the order swapped every round: a ratio between two
    files is only as good as the two sets of runs are alike, and this VM's speed drifts over minutes."""
    pair = (Result("synfin", path.name, packet_count(path, index)),
            Result("synfin", base.name, packet_count(base, index)))
    for round_no in range(runs):
        order = ((pair[0], path), (pair[1], base))
        for result, file in order if round_no % 2 == 0 else order[::-1]:
            result.samples.append(timed(command("synfin", file)))
        console.print(f"  round {round_no + 1}/{runs} {path.name} {pair[0].samples[-1].wall:.2f} s, "
                      f"{base.name} {pair[1].samples[-1].wall:.2f} s", style="dim")
    return pair


def scale_and_variants(synfin: Result, variants: dict[str, Path], index: dict[str, Any],
                       args: argparse.Namespace) -> dict[str, Any]:
    """The scaling table and the pcapng / IPv6 / VLAN ratios, synfin only, each file paired with the 1× pcap."""
    out: dict[str, Any] = {}
    runs = args.variant_runs or args.runs
    capture = args.capture
    if not args.no_scaling and any(k in variants for k in ("x0.25", "x0.5", "x2")):
        rows = {"x1": (synfin, synfin)}
        for key in ("x0.25", "x0.5", "x2"):
            if key in variants:
                console.print(f"scaling {key}: {variants[key].name}, paired with {capture.name}")
                rows[key] = bench_pair(variants[key], capture, runs, index)
        print_scaling(rows)
        out["scaling"] = {k: {**r.summary(), "paired_1x_median_s": round(b.median, 4),
                              "wall_ratio": round(r.median / b.median, 3)} for k, (r, b) in rows.items()}
    pairs = {}
    for key in VARIANTS:
        if key in variants:
            console.print(f"variant {key}: {variants[key].name}, paired with {capture.name}")
            pairs[key] = bench_pair(variants[key], capture, runs, index)
    if pairs:
        print_variants(pairs)
        out["variants"] = {k: {**r.summary(), "paired_base_median_s": round(b.median, 4),
                               "wall_ratio": round(r.median / b.median, 3),
                               "per_packet_ratio": round((r.median / r.packets) / (b.median / b.packets), 3)}
                           for k, (r, b) in pairs.items()}
    return out


def run_census(capture: Path, main: dict[str, Result], index: dict[str, Any], tools: Sequence[str]) -> dict[str, Any]:
    """Connection counts from every tool next to the manifest's."""
    counts: dict[str, dict[str, Any]] = {}
    if "synfin" in main:
        counts["synfin"] = synfin_census(main["synfin"].samples[-1].stderr)
    for tool in ("tcptrace", "tshark"):
        if tool in tools:
            console.print(f"counting connections with {tool} (untimed)", style="dim")
            counts[tool] = census(capture, tool)
    want = expected(capture, index)
    print_census(counts, want)
    return {"manifest": want, **counts}


def print_machine(info: dict[str, Any]) -> None:
    console.print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, "
                  f"Linux {info['kernel']}, Python {info['python']}; {info['tshark']}; {info['tcptrace']}; "
                  f"synfin {info['synfin_commit']}; peak RSS from {info['peak_rss_from']}; "
                  f"bytecode cache {info['bytecode_cache']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.capture.exists():
        console.print(f"[red]{args.capture}: no such file; make it with benchmarks/make_capture.py[/]")
        return 2
    print_machine(machine())
    report = run_all(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
        console.print(f"figures written to {args.json}")
    return 0


def _jsonable(value: object) -> object:
    return asdict(value) if isinstance(value, Sample) else str(value)


if __name__ == "__main__":
    sys.exit(main())

"""Build the compiled engine for fuzzing, into a place of its own (never over the normal in-place build).

    python -m tests.fuzz.build [--out build/sanitize] [--no-sanitize]

makes OUT/analyzer/: a copy of the package (its Python modules and the C
sources, so the staleness check of tests/test_engine.py still applies) with
an extension built from analyzer/_engine/*.c by gcc with

* AddressSanitizer and UndefinedBehaviorSanitizer (-fsanitize=address,undefined
  plus float-cast-overflow, -fno-sanitize-recover=undefined: the first report
  ends the process), -g -fno-omit-frame-pointer; left out with --no-sanitize
  (a faster, coverage-only build);
* -fsanitize-coverage=trace-pc, with tests/fuzz/cov.c (compiled without it)
  linked in to keep the edge map the fuzzer reads.

Put OUT first on PYTHONPATH and `import analyzer` takes the copy (the
editable install's finder comes after the path entries). Python itself is
not instrumented, so the sanitizer runtimes must be preloaded:
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
ASAN_OPTIONS=detect_leaks=0 (Python's own allocations are not leaks to chase
here). The Makefile's `sanitize` and `fuzz` targets do all of this.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "analyzer" / "_engine"
COV = Path(__file__).resolve().parent / "cov.c"
COMMON = ["-fPIC", "-std=gnu11", "-ffp-contract=off", "-g", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
          "-Wno-missing-field-initializers", "-Wno-unused-parameter", "-pthread"]
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=undefined,float-cast-overflow"]


def build(out: Path, sanitize: bool = True, engine: Path = ENGINE) -> Path:
    """Copy the package to OUT/analyzer and build its instrumented extension there (from the C sources in
    `engine`, by default analyzer/_engine); return the extension's path."""
    package = out / "analyzer"
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(ROOT / "analyzer", package, ignore=shutil.ignore_patterns("*.so", "__pycache__", "_engine"))
    shutil.copytree(engine, package / "_engine")
    objects = out / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    include = ["-I", sysconfig.get_paths()["include"], "-I", str(engine)]
    pcap = _have_pcap()  # as setup.py: filters (filter.c) when libpcap-dev is there
    flags = [*COMMON, "-O1", *(SANITIZE if sanitize else []), *(["-DSYNFIN_HAVE_PCAP=1"] if pcap else [])]
    built = []
    for source in sorted(engine.glob("*.c")):
        target = objects / (source.stem + ".o")
        _gcc([*flags, "-fsanitize-coverage=trace-pc", *include, "-c", str(source), "-o", str(target)])
        built.append(str(target))
    cov = objects / "cov.o"
    _gcc([*COMMON, "-O2", "-c", str(COV), "-o", str(cov)])  # not instrumented: it is the instrumentation
    extension = package / ("_engine" + sysconfig.get_config_var("EXT_SUFFIX"))
    _gcc([*flags, "-shared", *built, str(cov), "-o", str(extension), "-lm", *(["-lpcap"] if pcap else [])])
    return extension


def check(out: Path) -> int:
    """0 if `import analyzer` takes OUT's copy and its engine keeps a coverage map; else say what it took."""
    import analyzer
    from tests.fuzz.harness import Coverage

    taken = Path(analyzer.__file__).resolve().parent
    if taken != out / "analyzer" or not Coverage.present():
        print(f"python imports analyzer from {taken}, not {out / 'analyzer'} (or without its coverage map): "
              "put OUT first on PYTHONPATH and run with PYTHONSAFEPATH=1", file=sys.stderr)
        return 1
    print(f"analyzer from {taken}, with the coverage map")
    return 0


def instrumented_blocks(extension: Path) -> int | None:
    """How many calls to the coverage hook the build has (its basic blocks); None without objdump."""
    try:
        listing = subprocess.run(["objdump", "-d", str(extension)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum("call" in line and "<__sanitizer_cov_trace_pc" in line for line in listing.stdout.splitlines())


def _have_pcap() -> bool:
    """Whether a program using libpcap compiles and links here (setup.py's test, with gcc)."""
    probe = "#include <pcap.h>\nint main(void) { return pcap_open_dead(1, 65535) == 0; }\n"
    done = subprocess.run(["gcc", "-x", "c", "-", "-lpcap", "-o", os.devnull], input=probe, capture_output=True,
                          text=True)
    return done.returncode == 0


def _gcc(args: list[str]) -> None:
    done = subprocess.run(["gcc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"gcc failed: gcc {' '.join(args)}\n{done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "sanitize")
    parser.add_argument("--no-sanitize", action="store_true", help="coverage only: no ASan/UBSan")
    parser.add_argument("--engine", type=Path, default=ENGINE, help="the C sources (default analyzer/_engine)")
    parser.add_argument("--check", action="store_true",
                        help="do not build: say which analyzer Python imports, and fail unless it is OUT's")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out.resolve())
    extension = build(args.out.resolve(), sanitize=not args.no_sanitize, engine=args.engine.resolve())
    blocks = instrumented_blocks(extension)
    print(f"built {extension.relative_to(ROOT) if extension.is_relative_to(ROOT) else extension}"
          f"{f' ({blocks} instrumented blocks)' if blocks else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

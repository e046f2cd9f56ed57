"""The fuzz loop: seeds, the coverage map, the oracle, and the corpus that grows with coverage.

For each input (a capture's bytes plus the timing options to analyze it
with) the oracle runs `synfin analyze` in this process with the compiled
engine and with the Python reference, as JSON to an -o file and as the
table (which ends with the summary) to standard output, and asks:

* did either raise (a traceback for a user)? `run_cli` turns an exception
  that escapes `main` into a "raised ..." status;
* do the two engines differ in any byte: exit status, standard output,
  standard error (the JSON run's summary and the clean "file: frame N: ..."
  errors) and the table?

A crash or a sanitizer report ends the process; the input being run is
always on disk (`current.pcap` in the work directory) so the supervisor
(tests/fuzz/__main__.py) can keep it as the reproducer.

Coverage comes from the fuzz build of the engine (tests/fuzz/build.py:
gcc's -fsanitize-coverage=trace-pc and tests/fuzz/cov.c), read through
ctypes: the edge map (AFL-style, hit counts in buckets) decides what joins
the corpus, the block map says how much of the engine was reached. With the
normal build there is no map and the loop still runs, unguided: the corpus
is the seeds, every input a mutant of one of them.
"""

from __future__ import annotations

import ctypes
import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from analyzer import engine
from tests.engine_compare import Outcome, difference, run_cli
from tests.fuzz.mutate import mutate

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
MAX_INPUT = 96 * 1024  # the reference runs ~25,000 packets/s: keep an execution well under a second
OPTION_SETS = ([], ["--msl", "0.01", "--idle-timeout", "0.5", "--handshake-timeout", "0.2"], ["--msl", "0"])
# AFL's hit-count buckets: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128-255, each its own bit.
BUCKETS = bytes([0, 1, 2, 4] + [8] * 4 + [16] * 8 + [32] * 16 + [64] * 96 + [128] * 128)


class Coverage:
    """The fuzz build's edge map (tests/fuzz/cov.c), through ctypes on the loaded extension."""

    def __init__(self) -> None:
        from analyzer import _engine

        lib = ctypes.CDLL(_engine.__file__)
        lib.synfin_cov_map.restype = ctypes.POINTER(ctypes.c_ubyte)
        lib.synfin_cov_blocks.restype = ctypes.POINTER(ctypes.c_ubyte)
        lib.synfin_cov_size.restype = ctypes.c_size_t
        self._lib = lib
        self.size = lib.synfin_cov_size()
        self._map = lib.synfin_cov_map()
        self._blocks = lib.synfin_cov_blocks()
        self.seen = 0  # every (edge, bucket) seen so far, as the bits of one big integer
        self.blocks_seen = 0  # every block slot reached so far, likewise

    @staticmethod
    def present() -> bool:
        """Whether the loaded engine is the fuzz build (it exports the coverage map)."""
        if not engine.available():
            return False
        from analyzer import _engine

        return hasattr(ctypes.CDLL(_engine.__file__), "synfin_cov_map")

    def reset(self) -> None:
        self._lib.synfin_cov_reset()

    def snapshot(self) -> bytes:
        """The map after an input: hit counts per edge slot (and the blocks reached are added up)."""
        self.blocks_seen |= int.from_bytes(ctypes.string_at(self._blocks, self.size), "little")
        return ctypes.string_at(self._map, self.size)

    def merge(self, snapshot: bytes) -> bool:
        """Add an input's (edge, hit-count bucket) pairs to what was seen; True if any was new."""
        bits = int.from_bytes(snapshot.translate(BUCKETS), "little")
        new = bits & ~self.seen
        self.seen |= bits
        return bool(new)

    def edges(self) -> int:
        """Edge slots hit by any input so far."""
        return self.size - self.seen.to_bytes(self.size, "little").count(0)

    def blocks(self) -> int:
        """Block slots reached by any input so far."""
        return self.size - self.blocks_seen.to_bytes(self.size, "little").count(0)


@dataclass(frozen=True)
class Input:
    content: bytes
    options: tuple[str, ...] = ()
    origin: str = "seed"

    def digest(self) -> str:
        return hashlib.sha1(self.content + "\0".join(self.options).encode()).hexdigest()[:12]


@dataclass
class Finding:
    kind: str  # "mismatch" or "traceback"
    input: Input
    detail: str
    saved: Path | None = None


@dataclass
class Stats:
    executions: int = 0
    accepted: int = 0  # inputs the engines read to the end (exit status 0)
    corpus: int = 0
    edges: int = 0
    blocks: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    def line(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        return (f"{self.executions} executions ({rate:.1f}/s), {self.accepted} accepted, corpus {self.corpus}, "
                f"edges {self.edges}, blocks {self.blocks}, findings {len(self.findings)}")


def seeds(crafted_count: int = 480, damaged: bool = True) -> Iterator[Input]:
    """The samples, the crafted captures of tests/crafting.py (with their options) and the damaged files of
    tests/test_engine.py, each at most MAX_INPUT bytes (busy.pcap is cut to its first records)."""
    from tests.crafting import crafted

    for path in sorted(SAMPLES.iterdir()):
        if path.name.endswith((".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz")):
            yield Input(_cut(path.read_bytes()), (), f"sample {path.name}")
    for seed in range(crafted_count):
        made = crafted(seed)
        if len(made.content) <= MAX_INPUT:
            yield Input(made.content, tuple(made.options), f"crafted {seed}")
    if damaged:
        yield from _damaged()


def _damaged() -> Iterator[Input]:
    from tests.test_engine import BAD_FILES

    for name, (content, _) in BAD_FILES.items():
        if len(content) <= MAX_INPUT:
            yield Input(content, (), f"damaged: {name}")


def _cut(data: bytes) -> bytes:
    """A sample cut at a record boundary to at most MAX_INPUT bytes (pcap only; others are small)."""
    if len(data) <= MAX_INPUT or data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        return data
    at = 24
    while at + 16 <= len(data):
        step = 16 + int.from_bytes(data[at + 8:at + 12], "little")
        if at + step > MAX_INPUT:
            break
        at += step
    return data[:at]


class Fuzzer:
    """The loop: run an input through both engines, keep it if it reached new edges, mutate the corpus."""

    def __init__(self, workdir: Path, rng_seed: int = 0, findings_dir: Path | None = None,
                 corpus_dir: Path | None = None, log: bool = False) -> None:
        self.workdir = workdir
        self.rng = random.Random(rng_seed)
        self.findings_dir = findings_dir
        self.corpus_dir = corpus_dir
        self.log = log
        self.coverage = Coverage() if Coverage.present() else None
        self.corpus: list[Input] = []
        self.stats = Stats()
        self.current = workdir / "current.pcap"
        self._known: set[str] = set()
        self._start = time.monotonic()

    def execute(self, item: Input) -> bool:
        """Run one input through the oracle; True if it grew coverage (or, unguided, was kept)."""
        self.current.write_bytes(item.content)
        (self.workdir / "current.options").write_text(" ".join(item.options))
        if self.coverage is not None:
            self.coverage.reset()
        compiled = {fmt: self._run("compiled", fmt, item) for fmt in ("json", "table")}
        snapshot = self.coverage.snapshot() if self.coverage is not None else b""
        reference = {fmt: self._run("reference", fmt, item) for fmt in ("json", "table")}
        self.stats.executions += 1
        self.stats.accepted += compiled["json"].status == 0
        for fmt in ("json", "table"):
            self._judge(item, fmt, reference[fmt], compiled[fmt])
        grew = self.coverage.merge(snapshot) if self.coverage is not None else not item.origin.startswith("mutant")
        if grew:
            self._keep(item)
        return grew

    def _run(self, which: str, fmt: str, item: Input) -> Outcome:
        """The JSON run writes to an -o file (the engine's writer thread), the table to standard output (its
        callback path)."""
        target = self.workdir / f"out-{which}.json" if fmt == "json" else None
        if target is not None:
            target.unlink(missing_ok=True)
        return run_cli(["analyze", "--engine", which, "-f", fmt, *item.options, str(self.current)], target)

    def _judge(self, item: Input, fmt: str, reference: Outcome, compiled: Outcome) -> None:
        raised = [o.status for o in (reference, compiled)
                  if isinstance(o.status, str) and o.status.startswith("raised")]
        if raised:
            self._report(Finding("traceback", item, f"-f {fmt}: {raised[0]}"))
            return
        found = difference(reference, compiled, fmt)
        if found:
            self._report(Finding("mismatch", item, f"-f {fmt}: {found}"))

    def _report(self, finding: Finding) -> None:
        key = f"{finding.kind}:{finding.detail.splitlines()[0][:80]}"
        if self.findings_dir is not None:
            self.findings_dir.mkdir(parents=True, exist_ok=True)
            name = f"{finding.kind}-{finding.input.digest()}"
            finding.saved = self.findings_dir / f"{name}.pcap"
            finding.saved.write_bytes(finding.input.content)
            (self.findings_dir / f"{name}.txt").write_text(
                f"options: {' '.join(finding.input.options)}\norigin: {finding.input.origin}\n{finding.detail}\n")
        self.stats.findings.append(finding)
        if self.log and key not in self._known:
            print(f"FINDING {finding.kind} ({finding.input.origin}) saved as {finding.saved}:\n{finding.detail}",
                  flush=True)
        self._known.add(key)

    def _keep(self, item: Input) -> None:
        self.corpus.append(item)
        self.stats.corpus = len(self.corpus)
        if self.corpus_dir is not None:
            self.corpus_dir.mkdir(parents=True, exist_ok=True)
            (self.corpus_dir / f"{item.digest()}.pcap").write_bytes(item.content)

    def seed(self, inputs: Iterator[Input]) -> None:
        for item in inputs:
            self.execute(item)
        if not self.corpus:  # nothing grew coverage (unguided and no seeds): fall back to the given inputs
            raise RuntimeError("no seed reached the corpus")
        self._update()

    def step(self) -> None:
        parent = self.rng.choice(self.corpus)
        others = [c.content for c in self.rng.sample(self.corpus, min(4, len(self.corpus)))]
        content, how = mutate(self.rng, parent.content, others)
        options = parent.options if self.rng.random() < 0.9 else self._options()
        self.execute(Input(content[:MAX_INPUT], options, f"mutant ({how}) of {parent.origin}"[:300]))

    def _options(self) -> tuple[str, ...]:
        """Timing options: one of the usual sets, or timers drawn from their edges (zero, tiny, huge)."""
        if self.rng.random() < 0.5:
            return tuple(self.rng.choice(OPTION_SETS))
        values = ("0", "1e-9", "0.000105", "0.01", "1", "30", "1e9")
        return tuple(word for option in ("--msl", "--idle-timeout", "--handshake-timeout")
                     if self.rng.random() < 0.7 for word in (option, self.rng.choice(values)))

    def run(self, seconds: float | None = None, executions: int | None = None, report_every: float = 30.0) -> Stats:
        """Mutate until `seconds` have passed or `executions` (counting the seeds) were made."""
        start, last = time.monotonic(), time.monotonic()
        while True:
            now = time.monotonic()
            if seconds is not None and now - start >= seconds:
                break
            if executions is not None and self.stats.executions >= executions:
                break
            self.step()
            if self.log and now - last >= report_every:
                last = now
                self._update()
                print(f"[{now - start:6.0f} s] {self.stats.line()}", flush=True)
        self._update()
        return self.stats

    def _update(self) -> None:
        self.stats.corpus = len(self.corpus)
        self.stats.edges = self.coverage.edges() if self.coverage is not None else 0
        self.stats.blocks = self.coverage.blocks() if self.coverage is not None else 0
        self.stats.seconds = time.monotonic() - self._start

"""Render the README's ladder pictures from three bundled samples into docs/img/.

    python3 docs/make_pictures.py            # writes docs/img/ladder-*.png
    python3 docs/make_pictures.py --out DIR

Each picture is connection 0 of its capture, drawn exactly as
`synfin ladder CAPTURE --conn 0 -o FILE.png` draws it. The samples are
regenerated now and then (new ISNs, ports and times), so rerun this script
after `make samples` and commit the PNGs with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.ladder import build  # noqa: E402
from analyzer.ladder_plot import save  # noqa: E402
from analyzer.pipeline import analyze  # noqa: E402

#: capture in samples/ -> picture name: a plain connection, crossing FINs, a lost SYN and a cut pause
PICTURES = {
    "handshake_fourway_client_close.pcap": "ladder-handshake-fourway-close.png",
    "simultaneous_close.pcap": "ladder-simultaneous-close.png",
    "syn_lost_once.pcap": "ladder-syn-lost-once.png",
}


def render(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for capture, name in PICTURES.items():
        conn = next(iter(analyze(ROOT / "samples" / capture, keep_segments=True)))
        written.append(save(build(conn), out / name))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="directory (default docs/img)")
    args = parser.parse_args(argv)
    for path in render(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`synfin report --format html` in a real browser: headless Chromium (Debian's `chromium`) loads it.

The report must be one self-contained file: no URL to fetch (pictures are data:
URLs), every picture decodes (a copy of the file gets a script that writes each
image's decoded width into the title, read back with --dump-dom), and the
findings are on the page. Skipped where Chromium is not installed (make apt-deps).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = ("<script>window.addEventListener('load', () => { document.title = 'widths:' + "
         "[...document.images].map(i => i.naturalWidth).join(','); });</script>")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "busy.html"
    subprocess.run([sys.executable, "-m", "analyzer", "report", "-f", "html", "-o", str(out),
                    str(SAMPLES / "busy.pcap")], check=True, timeout=300)
    return out


def test_self_contained(page: Path) -> None:
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert text.count('src="data:image/png;base64,') >= 2  # the states over time and at least one ladder


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make apt-deps)")
def test_chromium_loads_it_and_shows_the_findings(page: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = chromium("--dump-dom", probe.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    widths = re.search(r"<title>widths:([0-9,]*)</title>", result.stdout)
    assert widths is not None, result.stdout[:500]
    assert widths.group(1) and all(int(w) > 0 for w in widths.group(1).split(","))
    for kind in ("time-wait-pile", "refused", "aborts"):
        assert f'<span class="kind">{kind}</span>' in result.stdout
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
    assert errors == []
    shot = tmp_path / "shot.png"
    assert chromium(f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()).returncode == 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

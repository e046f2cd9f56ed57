"""Read a capture through tcpdump's own dissector: an oracle independent of ours.

`frames(path)` runs `tcpdump -tt -nn -r` and returns one `Line` per frame
with the fields tcpdump prints: time, endpoints, flags, payload length and
the options of SYN segments.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(
    r"^(?P<ts>\d+\.\d+) (?:\S+\s+(?:In|Out|B|M|P)\s+)?IP6? (?P<src>\S+)\.(?P<sport>\d+) > "
    r"(?P<dst>\S+)\.(?P<dport>\d+): Flags \[(?P<flags>[^\]]*)\](?P<rest>.*), length (?P<length>\d+)")


@dataclass
class Line:
    frame: int
    ts: float
    src: str
    dst: str
    flags: str
    length: int
    options: dict[str, int | bool] = field(default_factory=dict)


def endpoint(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def frames(path: Path) -> list[Line]:
    out = subprocess.run(["tcpdump", "-tt", "-nn", "-r", str(path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = []
    for number, text in enumerate(out.splitlines(), start=1):
        match = LINE.match(text)
        assert match, f"tcpdump line {number} not understood: {text}"
        lines.append(Line(number, float(match["ts"]), endpoint(match["src"], match["sport"]),
                          endpoint(match["dst"], match["dport"]), match["flags"], int(match["length"]),
                          syn_options(match["rest"]) if "S" in match["flags"] else {}))
    return lines


def syn_options(rest: str) -> dict[str, int | bool]:
    found: dict[str, int | bool] = {}
    listed = re.search(r"options \[([^\]]*)\]", rest)
    for option in (listed[1].split(",") if listed else []):
        words = option.split()
        if words[:1] == ["mss"]:
            found["mss"] = int(words[1])
        elif words[:1] == ["wscale"]:
            found["wscale"] = int(words[1])
        elif words[:1] == ["sackOK"]:
            found["sack"] = True
        elif words[:1] == ["TS"]:
            found["timestamps"] = True
        elif words[:1] == ["tfo"]:
            found["fastopen"] = True
    return found

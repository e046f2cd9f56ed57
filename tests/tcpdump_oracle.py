"""Read a capture through tcpdump's own dissector: an oracle independent of ours.

`frames(path)` runs `tcpdump -tt -nn -e -r` and returns one `Line` per TCP
frame with the fields tcpdump prints: time, endpoints, flags, payload length,
the options of SYN segments, and the VLAN ids on the way. A frame tcpdump
prints on several lines (a tunnel: the inner frame on a line of its own) is
read at its innermost line; frames without TCP are left out.
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
    vlan: list[int] | None = None  # the first two VLAN ids, as the record's "vlan"




def _per_frame(out: str) -> list[str]:
    """tcpdump's lines joined per frame (a line not starting with a time continues the frame)."""
    joined: list[str] = []
    for text in out.splitlines():
        if re.match(r"^\d+\.\d+ ", text) or not joined:
            joined.append(text)
        else:
            joined[-1] += " || " + text.strip()
    return joined


def endpoint(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


TCP_LINE = re.compile(r"(?<![\w:.])((?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]*:[0-9a-f:]+)\.\d+ > \S+: Flags \[.*)")


def _innermost(text: str) -> str:
    """The frame's time and its TCP part, in the format tcpdump prints for plain IP ("IP src.port > ...")."""
    found = TCP_LINE.search(text)
    assert found, f"no TCP in {text}"
    address = found[1].split(" > ")[0]
    return f"{text.split()[0]} {'IP6' if ':' in address else 'IP'} {found[1]}"


def frames(path: Path) -> list[Line]:
    out = subprocess.run(["tcpdump", "-tt", "-nn", "-e", "-r", str(path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = []
    for number, full in enumerate(_per_frame(out), start=1):
        if "Flags [" not in full:
            continue
        vlans = [int(v) for v in re.findall(r"vlan (\d+), p \d", full) if int(v)][:2]
        text = _innermost(full)
        match = LINE.match(text)
        assert match, f"tcpdump line {number} not understood: {full}"
        lines.append(Line(number, float(match["ts"]), endpoint(match["src"], match["sport"]),
                          endpoint(match["dst"], match["dport"]), match["flags"], int(match["length"]),
                          syn_options(match["rest"]) if "S" in match["flags"] else {}, vlans or None))
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

"""Bad input: one clear line naming the file, exit status 2, never a traceback.

Damage inside a readable capture is counted and named by frame, and the rest
of the file is still analyzed.
"""

import gzip
import json
import struct

import pytest

from analyzer.cli import main
from tests.pcapwrite import LINKTYPE_ETHERNET, frame, handshake_packets, write_pcap


def run(capsys, *args):
    status = main(["analyze", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return status, captured.out, captured.err


def good_frames():
    return [frame(p, LINKTYPE_ETHERNET) for p in handshake_packets()]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty, not a capture"),
    (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap or pcapng capture"),
    (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "pcap file header is cut short (8 of 24 bytes)"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00", "section header"),
    (gzip.compress(b"hello, not a capture"), "not a pcap or pcapng capture"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
])
def test_unreadable_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    status, _out, err = run(capsys, path)
    assert status == 2
    assert str(path) in err and message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_file(tmp_path, capsys):
    status, _, err = run(capsys, tmp_path / "nope.pcap")
    assert status == 2 and "nope.pcap: cannot open" in err


def test_a_directory(tmp_path, capsys):
    status, _, err = run(capsys, tmp_path)
    assert status == 2 and str(tmp_path) in err


def test_bad_file_among_good_ones_still_analyzes_the_good(tmp_path, capsys):
    good = write_pcap(tmp_path / "good.pcap", good_frames(), LINKTYPE_ETHERNET)
    bad = tmp_path / "bad.pcap"
    bad.write_text("nothing here")
    status, out, _err = run(capsys, bad, good, "--format", "json")
    assert status == 2
    assert [json.loads(line)["open"] for line in out.splitlines()] == ["handshake"]


def test_truncated_last_record(tmp_path, capsys):
    path = write_pcap(tmp_path / "cut.pcap", good_frames(), LINKTYPE_ETHERNET)
    path.write_bytes(path.read_bytes()[:-20])
    status, out, err = run(capsys, path, "--format", "json")
    assert status == 0
    record = json.loads(out)
    assert record["open"] == "handshake" and record["last_frame"] == 6
    assert "bad frames: 1" in err and "frame 7: record cut short" in err


def test_garbled_record_header_mid_file(tmp_path, capsys):
    frames = good_frames()
    path = write_pcap(tmp_path / "garbled.pcap", frames, LINKTYPE_ETHERNET)
    data = bytearray(path.read_bytes())
    offset = 24 + sum(16 + len(f) for f in frames[:3])  # the 4th record header
    data[offset + 8:offset + 12] = struct.pack("<I", 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    status, out, err = run(capsys, path, "--format", "json")
    assert status == 0
    assert json.loads(out)["last_frame"] == 3
    assert "frame 4: garbled record header" in err


def test_snaplen_cut_before_the_tcp_header(tmp_path, capsys):
    frames = good_frames()
    frames[4] = frames[4][:30]  # Ethernet + 16 bytes of IPv4: cut by a 30-byte snaplen
    wire = [len(f) for f in good_frames()]
    path = write_pcap(tmp_path / "snap.pcap", frames, LINKTYPE_ETHERNET, snaplen=30, wire_lens=wire)
    status, out, err = run(capsys, path, "--format", "json")
    assert status == 0
    assert json.loads(out)["open"] == "handshake"
    assert "frame 5: cut by the snaplen before the end of the IPv4 header" in err


def test_snaplen_cut_payload_is_fine(tmp_path, capsys):
    frames = [f[:54] for f in good_frames()]  # headers intact, options/payload cut
    wire = [len(f) for f in good_frames()]
    path = write_pcap(tmp_path / "snap.pcap", frames, LINKTYPE_ETHERNET, snaplen=54, wire_lens=wire)
    status, out, err = run(capsys, path, "--format", "json")
    assert status == 0 and json.loads(out)["close"] == "four-way"
    assert "bad frames" not in err


def test_ipv4_header_length_under_20(tmp_path, capsys):
    frames = good_frames()
    broken = bytearray(frames[2])
    broken[14] = 0x44  # version 4, IHL 4 words = 16 bytes
    frames[2] = bytes(broken)
    status, out, err = run(capsys, write_pcap(tmp_path / "ihl.pcap", frames, LINKTYPE_ETHERNET),
                           "--format", "json")
    assert status == 0
    assert "frame 3: IPv4 header length 16 is under 20" in err
    assert json.loads(out)["packets"] == {"client": 3, "server": 3}


def test_tcp_data_offset_under_5(tmp_path, capsys):
    frames = good_frames()
    broken = bytearray(frames[4])
    broken[14 + 20 + 12] = 0x30  # data offset 3 words
    frames[4] = bytes(broken)
    status, out, err = run(capsys, write_pcap(tmp_path / "doff.pcap", frames, LINKTYPE_ETHERNET),
                           "--format", "json")
    assert status == 0
    assert "frame 5: TCP data offset 3 is under 5" in err
    assert json.loads(out)["open"] == "handshake"


def test_only_the_first_few_bad_frames_are_named_but_all_are_counted(tmp_path, capsys):
    frames = good_frames() + [b"\x02" * 12 + b"\x08\x00" + b"\x45"] * 12
    status, _, err = run(capsys, write_pcap(tmp_path / "many.pcap", frames, LINKTYPE_ETHERNET))
    assert status == 0
    assert "bad frames: 12" in err or "bad frames: 12" in _
    assert "frame 8:" in (err + _) and "frame 19:" not in (err + _)


def test_usage_errors_are_argparse_messages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze"])
    assert exit_info.value.code == 2
    assert "CAPTURE" in capsys.readouterr().err

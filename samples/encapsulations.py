"""Every encapsulation and link type synfin reads, as functions that wrap an IP packet.

Used twice: tests/tunnelled.py wraps a short crafted connection in each (and
checks the result by hand), samples/crafted.py re-wraps the kernel's
connections of handshake_fourway_client_close.pcap and ipv6.pcap into
crafted_encapsulations.pcapng, for the encapsulations this kernel cannot make.
scapy builds the headers it knows (VXLAN, GRE, Geneve, GTP-U, MPLS, PPPoE,
802.11, radiotap, ERSPAN, PBB), and the rest are packed here by their
specifications (VN-Tag, Teredo, AYIYA, FDDI, NFLOG, GRE in UDP), so the
decoders are checked against builders that are not their own. The outer
addresses follow the direction: client to server goes 192.0.2.1 > 192.0.2.2
(2001:db8::1 > 2001:db8::2), the answers come back the other way.

Each case names the tunnel text and VLAN ids the record should show, worked
out by hand from the headers below, not copied from synfin's output.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header
from scapy.contrib.mpls import MPLS
from scapy.layers.dot11 import Dot11, Dot11QoS, RadioTap
from scapy.layers.inet import GRE, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import LLC, SNAP, Dot1AD, Dot1AH, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

A4, B4, A6, B6 = "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"
MAC_C, MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"

Wrap = Callable[[Packet, bool], bytes]  # (inner IP packet, client to server?) -> frame


@dataclass(frozen=True)
class Case:
    name: str
    linktype: int
    wrap: Wrap
    tunnel: str | None          # the record's "tunnel"
    vlan: list[int] | None      # the record's "vlan"
    kinds: dict[str, int]       # the summary's per-kind counts (7 segments)
    v6: bool = False            # the inner connection's IP version


def _outer4(fwd: bool) -> IP:
    return IP(src=A4, dst=B4) if fwd else IP(src=B4, dst=A4)


def _outer6(fwd: bool) -> IPv6:
    return IPv6(src=A6, dst=B6) if fwd else IPv6(src=B6, dst=A6)


def _eth(fwd: bool) -> Ether:
    return Ether(src=MAC_C, dst=MAC_S) if fwd else Ether(src=MAC_S, dst=MAC_C)


def _vntag(inner: Packet, fwd: bool) -> bytes:
    """Cisco VN-Tag (EtherType 0x8926): 4 bytes (direction, pointer, vifs), then the next EtherType."""
    kind = 0x86DD if inner.version == 6 else 0x0800
    head = bytes(_eth(fwd))[:12]
    return head + struct.pack("!HIH", 0x8926, 0x00050007, kind) + bytes(inner)


def _gre_udp(inner: Packet, fwd: bool) -> bytes:
    """RFC 8086: a GRE header (key present: 0x2000, key 77) in UDP to port 4754."""
    gre = struct.pack("!HHI", 0x2000, 0x0800, 77)
    return bytes(_eth(fwd) / _outer4(fwd) / UDP(sport=40001, dport=4754) / Raw(gre + bytes(inner)))


def _teredo(inner: Packet, fwd: bool) -> bytes:
    """RFC 4380: an origin indication (0x0000, port and address obfuscated), then IPv6, in UDP port 3544."""
    origin = struct.pack("!HH4s", 0, 0x1234 ^ 0xFFFF, bytes(4))
    ports = dict(sport=3544, dport=50000) if fwd else dict(sport=50000, dport=3544)
    return bytes(_eth(fwd) / _outer4(fwd) / UDP(**ports) / Raw(origin + bytes(inner)))


def _ayiya(inner: Packet, fwd: bool) -> bytes:
    """AYIYA: IDLen 4 (16-byte identity), IDType 1; SigLen 5 (20 bytes), HshMeth 2; AutMeth 2,
    OpCode 1 (forward); next header 41; epoch; identity; signature."""
    head = bytes([0x41, 0x52, 0x21, 41]) + struct.pack("!I", 1700000000) + bytes(16) + bytes(20)
    return bytes(_eth(fwd) / _outer4(fwd) / UDP(sport=5072, dport=5072) / Raw(head + bytes(inner)))


def _fddi(inner: Packet, fwd: bool) -> bytes:
    """FDDI: frame control 0x50 (async LLC), destination, source; then LLC/SNAP with the EtherType."""
    macs = bytes.fromhex("020000000002020000000001" if fwd else "020000000001020000000002")
    return b"\x50" + macs + bytes(LLC() / SNAP(code=0x0800)) + bytes(inner)


def _nflog(inner: Packet, fwd: bool) -> bytes:
    """Linux NFLOG, little-endian TLVs: family AF_INET, version 0, group 5; a prefix TLV (type 10,
    "in\\0", padded to 8), then the payload TLV (type 9)."""
    prefix = struct.pack("<HH", 7, 10) + b"in\0" + b"\0"
    payload = bytes(inner)
    tlv = struct.pack("<HH", 4 + len(payload), 9) + payload
    return bytes([2, 0]) + struct.pack("!H", 5) + prefix + tlv


def _wifi(inner: Packet, fwd: bool) -> Packet:
    """An 802.11 QoS data frame (type 2, subtype 8), to the AP (ToDS) or from it (FromDS), LLC/SNAP."""
    addrs = dict(addr1="02:00:00:00:00:aa", addr2=MAC_C, addr3=MAC_S, FCfield=1) if fwd else \
        dict(addr1=MAC_C, addr2="02:00:00:00:00:aa", addr3=MAC_S, FCfield=2)
    return Dot11(type=2, subtype=8, **addrs) / Dot11QoS() / LLC() / SNAP(code=0x0800) / inner


def _pptp_frame(inner: Packet, fwd: bool) -> bytes:
    """_pptp's frame with the outer IPv4 header's protocol set to GRE (47)."""
    ppp = b"\xff\x03\x00\x21" + bytes(inner)
    gre = struct.pack("!HHHHI", 0x3001, 0x880B, len(ppp), 5 if fwd else 6, 1)
    outer = IP(src=A4, dst=B4, proto=47) if fwd else IP(src=B4, dst=A4, proto=47)
    return bytes(_eth(fwd) / outer / Raw(gre + ppp))


def _over(version: int = 4) -> str:
    return f"over {A4}>{B4}" if version == 4 else f"over {A6}>{B6}"


CASES = [
    Case("vlan_qinq", 1, lambda p, f: bytes(_eth(f) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p), None, [100, 200], {}),
    Case("vlan_priority_tag", 1, lambda p, f: bytes(_eth(f) / Dot1Q(vlan=0, prio=5) / p), None, None, {}),
    Case("mpls", 1, lambda p, f: bytes(_eth(f) / MPLS(label=16, s=0) / MPLS(label=1000, s=1) / p),
         "mpls 16/1000", None, {"mpls": 7}),
    Case("pbb", 1, lambda p, f: bytes(_eth(f) / Dot1AD(vlan=30, type=0x88E7) / Dot1AH(isid=0x10203)
                                      / Ether(src=MAC_C, dst=MAC_S) / p),
         "pbb isid 66051", [30], {"pbb": 7}),
    Case("vntag", 1, _vntag, "vn-tag", None, {"vn-tag": 7}),
    Case("pppoe", 1, lambda p, f: bytes(_eth(f) / PPPoE(sessionid=0x2a) / PPP(proto=0x0021) / p),
         "pppoe session 42", None, {"pppoe": 7}),
    Case("gre", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / GRE(key_present=1, key=9) / p),
         f"gre key 9 {_over()}", None, {"gre": 7}),
    Case("pptp", 1, lambda p, f: _pptp_frame(p, f), f"gre pptp call 5 {_over()}", None, {"gre": 7}),
    Case("gretap_vlan", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / GRE(proto=0x6558) / _eth(f) / Dot1Q(vlan=7) / p),
         f"gre {_over()}", [7], {"gre": 7}),
    Case("erspan_ii", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / GRE(seqnum_present=1, sequence_number=1)
                                            / ERSPAN_II(session_id=12) / _eth(f) / p),
         f"erspan ii session 12 {_over()}", None, {"erspan": 7}),
    Case("erspan_iii", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / GRE(seqnum_present=1, sequence_number=1)
                                             / ERSPAN_III(session_id=13) / _eth(f) / p),
         f"erspan iii session 13 {_over()}", None, {"erspan": 7}),
    Case("gre_udp", 1, _gre_udp, f"gre-udp 4754 key 77 {_over()}", None, {"gre-udp": 7}),
    Case("vxlan", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / UDP(sport=50000 if f else 50001, dport=4789)
                                        / VXLAN(vni=42) / _eth(f) / p),
         f"vxlan 4789 vni 42 {_over()}", None, {"vxlan": 7}),
    Case("geneve", 1, lambda p, f: bytes(_eth(f) / _outer6(f) / UDP(sport=50000, dport=6081)
                                         / GENEVE(vni=4242, proto=0x6558) / _eth(f) / p),
         f"geneve 6081 vni 4242 {_over(6)}", None, {"geneve": 7}),
    Case("gtpu", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / UDP(sport=2152, dport=2152)
                                       / GTP_U_Header(teid=0x1000 if f else 0x2000) / p),
         f"gtp-u 2152 teid 4096 {_over()}", None, {"gtp-u": 7}),
    Case("teredo", 1, _teredo, f"teredo 3544 {_over()}", None, {"teredo": 7}, v6=True),
    Case("ayiya", 1, _ayiya, f"ayiya 5072 {_over()}", None, {"ayiya": 7}, v6=True),
    Case("ipip", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / p), f"4in4 {_over()}", None, {"4in4": 7}),
    Case("sit", 1, lambda p, f: bytes(_eth(f) / _outer4(f) / p), f"6in4 {_over()}", None, {"6in4": 7}, v6=True),
    Case("ip4in6", 1, lambda p, f: bytes(_eth(f) / _outer6(f) / p), f"4in6 {_over(6)}", None, {"4in6": 7}),
    Case("ip6in6", 1, lambda p, f: bytes(_eth(f) / _outer6(f) / p), f"6in6 {_over(6)}", None, {"6in6": 7}, v6=True),
    Case("nested", 1, lambda p, f: bytes(_eth(f) / Dot1Q(vlan=5) / MPLS(label=17, s=1) / _outer4(f)
                                         / UDP(sport=50000, dport=4789) / VXLAN(vni=7) / _eth(f) / _outer6(f) / p),
         f"mpls 17 / vxlan 4789 vni 7 {_over()} / 4in6 {_over(6)}", [5], {"mpls": 7, "vxlan": 7, "4in6": 7}),
    Case("ppp", 9, lambda p, f: bytes(PPP(proto=0x0021) / p), None, None, {}),
    Case("ppp_hdlc", 50, lambda p, f: b"\xff\x03" + bytes(PPP(proto=0x0021) / p), None, None, {}),
    Case("wifi", 105, lambda p, f: bytes(_wifi(p, f)), None, None, {}),
    Case("radiotap", 127, lambda p, f: bytes(RadioTap() / _wifi(p, f)), None, None, {}),
    Case("fddi", 10, _fddi, None, None, {}),
    Case("nflog", 239, _nflog, None, None, {}),
]

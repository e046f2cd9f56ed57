"""Two throw-away network namespaces joined by a veth pair, for live tests and benchmarks.

    [client ns] c0 10.88.0.1/24 ==== veth ==== s0 10.88.0.2/24 [server ns]

Names carry a ``synfin-live-<pid>-<n>`` prefix, so parallel runs never clash;
addresses exist only inside the namespaces. Offloads are off, so the frames
on the wire are the segments the stacks sent. `NetnsPair.close` removes
everything, and is called however the ``with`` block ends.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Protocol, TypeVar

CLIENT_ADDR, SERVER_ADDR = "10.88.0.1", "10.88.0.2"
_counter = itertools.count(1)


class NetnsError(RuntimeError):
    """A namespace could not be set up (not root, `ip netns` not allowed, ...)."""


def namespaces_unavailable(*tools: str) -> str | None:
    """Why tests cannot make network namespaces here (and run `tools`), or None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", *tools):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    probe = f"synfin-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces are not allowed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class _SetUp(Protocol):
    def __enter__(self) -> object: ...
    def close(self) -> None: ...


SetUp = TypeVar("SetUp", bound=_SetUp)


def set_up_for_test(make: Callable[[], SetUp], tests: str, what: str, *tools: str) -> Iterator[SetUp]:
    """A fixture's body: `make()` entered for the test and closed after it; the `tests` skipped, saying why,
    where namespaces (or `tools`) are missing or `what` cannot be created (NetnsError)."""
    import pytest  # only the tests need it, not the benchmarks that use this module

    reason = namespaces_unavailable(*tools)
    if reason:
        pytest.skip(f"{tests}: {reason}")
    made = make()
    try:
        made.__enter__()
    except NetnsError as err:
        pytest.skip(f"cannot create {what} here: {err}")
    try:
        yield made
    finally:
        made.close()


def run_command(cmd: Sequence[str]) -> None:
    """Run a setup command (ip, ethtool, ...); NetnsError with its message if it cannot run or fails."""
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetnsError(f"{' '.join(cmd)}: {err}") from None
    if result.returncode:
        raise NetnsError(f"{' '.join(cmd)}: {result.stderr.strip()}")


class NetnsPair:
    """A client and a server namespace on one veth link."""

    def __init__(self) -> None:
        prefix = f"synfin-live-{os.getpid()}-{next(_counter)}"
        self.client, self.server = f"{prefix}-c", f"{prefix}-s"
        self.client_if, self.server_if = "c0", "s0"

    def __enter__(self) -> NetnsPair:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _build(self) -> None:
        run_command(["ip", "netns", "add", self.client])
        run_command(["ip", "netns", "add", self.server])
        run_command(["ip", "-n", self.client, "link", "add", self.client_if, "type", "veth",
              "peer", "name", self.server_if, "netns", self.server])
        for ns, dev, addr in ((self.client, self.client_if, CLIENT_ADDR),
                              (self.server, self.server_if, SERVER_ADDR)):
            run_command(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            run_command(["ip", "-n", ns, "link", "set", dev, "up"])
            run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
            run_command(self.exec(ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
                           "gro", "off", "sg", "off"))
        run_command(self.exec(self.client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"))

    @staticmethod
    def exec(ns: str, *cmd: str) -> list[str]:
        """The command line that runs `cmd` inside namespace `ns`."""
        return ["ip", "netns", "exec", ns, *cmd]

    def close(self) -> None:
        for ns in (self.client, self.server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)

"""The compiled engine (analyzer/_engine/*.c); everything else is in pyproject.toml.

The extension is optional: without a C compiler the package installs without
it and `synfin analyze` falls back to the reference pipeline.

libpcap is optional too: when pcap.h and libpcap are found (Debian: libpcap-dev),
the engine is linked with it and runs BPF filters (analyzer/_engine/filter.c);
without them it builds without filters, and `synfin analyze --filter` runs the
reference pipeline, which filters through the libpcap shared library
(analyzer/bpf.py). SYNFIN_NO_PCAP=1 builds without libpcap even if it is there.
"""

import os
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup

PCAP_PROBE = "#include <pcap.h>\nint main(void) { return pcap_open_dead(1, 65535) == 0; }\n"


def have_pcap() -> bool:
    """Whether a program using libpcap compiles and links here (the header and the library are both there)."""
    if os.environ.get("SYNFIN_NO_PCAP"):
        return False
    compiler = (sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "probe.c"
        source.write_text(PCAP_PROBE)
        try:
            done = subprocess.run([*compiler, str(source), "-lpcap", "-o", str(Path(scratch) / "probe")],
                                  capture_output=True)
        except OSError:
            return False
    return done.returncode == 0


PCAP = have_pcap()

SOURCES = sorted(str(p) for p in Path("analyzer/_engine").glob("*.c"))

setup(
    ext_modules=[
        Extension(
            "analyzer._engine",
            sources=SOURCES,
            depends=sorted(str(p) for p in Path("analyzer/_engine").glob("*.h")),
            define_macros=[("SYNFIN_HAVE_PCAP", "1")] if PCAP else [],
            libraries=["pcap"] if PCAP else [],
            # -ffp-contract=off: no fused multiply-add, so timestamps are computed
            # with exactly the roundings Python uses (see output.c).
            extra_compile_args=["-O2", "-ffp-contract=off", "-std=gnu11", "-Wall", "-Wextra",
                                "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
            optional=True,
        )
    ],
)

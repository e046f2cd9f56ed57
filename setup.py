"""The compiled engine (analyzer/_engine/*.c); everything else is in pyproject.toml.

The extension is optional: without a C compiler the package installs without
it and `synfin analyze` falls back to the reference pipeline.
"""

from pathlib import Path

from setuptools import Extension, setup

SOURCES = sorted(str(p) for p in Path("analyzer/_engine").glob("*.c"))

setup(
    ext_modules=[
        Extension(
            "analyzer._engine",
            sources=SOURCES,
            depends=["analyzer/_engine/engine.h", "analyzer/_engine/reader.h", "analyzer/_engine/halfopen.h"],
            # -ffp-contract=off: no fused multiply-add, so timestamps are computed
            # with exactly the roundings Python uses (see output.c).
            extra_compile_args=["-O2", "-ffp-contract=off", "-std=gnu11", "-Wall", "-Wextra",
                                "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
            optional=True,
        )
    ],
)

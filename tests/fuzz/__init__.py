"""synfin's fuzz harness for the compiled engine (issue 11): `python -m tests.fuzz`, `make fuzz`, `make sanitize`.

layout.py finds the fields of a capture, mutate.py edits them, harness.py runs
both engines on every input and keeps what reaches new edges of the engine,
build.py makes the instrumented (ASan+UBSan, trace-pc) engine with cov.c's
edge map, and __main__.py supervises a run so a crash still leaves its input.
"""

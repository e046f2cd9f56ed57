"""The teaching notebook runs clean from a fresh kernel, and is what its generator writes.

The kernel is the `python3` kernel spec; jupyter_client starts it with the
interpreter running the tests when the spec says plain `python` (as
ipykernel's own spec does, also in a venv), so the kernel sees the same
packages. The notebook runs with notebooks/ as its working directory and
finds the repository from there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK = NOTEBOOKS / "tcp_handshake_and_teardown.ipynb"


def generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_notebook", NOTEBOOKS / "build_notebook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebook_is_what_the_generator_writes_without_outputs() -> None:
    committed = nbformat.read(NOTEBOOK, as_version=4)
    fresh = generator().build_notebook()
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells], \
        "run python3 notebooks/build_notebook.py"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "outputs are not committed"


def test_notebook_runs_clean_from_a_fresh_kernel() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    ladder_calls = sum(c.source.count("ladder(") for c in nb.cells if c.cell_type == "code") - 1  # - the def
    assert len(pictures) >= ladder_calls  # one per call (the port_reuse loop draws one per connection)
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) >= 8
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "SYN+ACK: ack = " in text and "= x + 1" in text
    assert "SYN_SENT ─┤── SYN  seq 0" in text

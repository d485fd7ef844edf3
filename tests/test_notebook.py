"""notebooks/quickstart.ipynb executes from top to bottom on a small demo corpus."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTMILL_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("TEXTMILL_DEMO_SCALE", "0.15")
    path = ROOT / "notebooks" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs"
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    classifier = [line for line in printed.splitlines() if "quality classifier" in line]
    assert classifier and "precision 0.000" not in classifier[0], classifier
    assert os.listdir(tmp_path / "out" / "tokens")

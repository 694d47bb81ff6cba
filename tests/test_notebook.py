"""notebooks/explore.ipynb runs top to bottom against a smoke project's outputs."""

import json
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.projects import REPO

NOTEBOOK = REPO / "notebooks" / "explore.ipynb"


def test_notebook_is_saved_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code, "no code cell"
    stored = [(i, cell["outputs"]) for i, cell in enumerate(code) if cell["outputs"]]
    counts = [cell["execution_count"] for cell in code if cell["execution_count"] is not None]
    assert not stored and not counts, (stored, counts)


@pytest.mark.slow
def test_notebook_runs_against_the_smoke_outputs(smoke_copy, monkeypatch):
    project = smoke_copy
    notebook = project / "notebooks" / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)
    # the kernel inherits the environment: the smoke outputs, no telemetry prompt
    monkeypatch.setenv("KEDRO_ENV", "smoke")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, errors
    text = "\n".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "7 runs in 3 studies" in text, text
    assert "7 child runs" in text, text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 1, [out.output_type for out in outputs]
    # pandas tables (Kedro's rich log lines are HTML too)
    tables = [
        out for out in outputs if 'class="dataframe"' in out.get("data", {}).get("text/html", "")
    ]
    assert len(tables) == 2, len(tables)  # the runs table and the child runs

"""A real Jupyter kernel (nbclient + ipykernel) runs the example notebook: build, submit, RunDetails."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "pipeline_run_details.ipynb"


def _html(output) -> str:
    return output.get("data", {}).get("text/html", "")


def test_the_notebook_runs_and_shows_the_run_live(ws, tmp_path):
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()

    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
    details = [o for o in cells[3].outputs if o.output_type == "display_data"]
    assert len(details) == 1  # one table, updated in place (update_display_data) until the run ended
    table = _html(details[0])
    assert "Pipeline run" in table and "count.py" in table and "total.py" in table
    assert table.count("Finished") == 3  # the run and both steps: the updates reached the end
    assert "/runs/task-run/" in table  # links to the Prefect UI
    metrics = cells[4].outputs[-1]["data"]["text/plain"]
    assert "'total': 45" in metrics
    assert "notebook-demo" in _html(cells[5].outputs[-1])  # PipelineRun renders as HTML
    step_html = _html(cells[6].outputs[-1])
    assert "count.py" in step_html and "Finished" in step_html and "numbers" in step_html  # StepRun too

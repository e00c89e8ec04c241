"""`RunDetails(run).show()`: a pipeline run's steps, live, in a notebook or a terminal.

```python
from azureml.widgets import RunDetails      # or: from prefect_aml.widgets import RunDetails
RunDetails(pipeline_run).show()
```

In Jupyter it displays an HTML table (step, status, duration, reused, a link to the step in the
Prefect UI) and updates it in place until the run ends, without blocking the cell; in a terminal it
draws the same table with rich, refreshing until the run ends. `PipelineRun` and `StepRun` render
as HTML in notebooks too (`_repr_html_`).
"""

from __future__ import annotations

import html
import threading
import time
from datetime import UTC, datetime
from typing import Any

from prefect_aml.runs import TERMINAL, PipelineRun, StepRun, _status

_COLORS = {"Finished": "#2e7d32", "Failed": "#c62828", "Canceled": "#6d4c41", "Running": "#1565c0",
           "Queued": "#757575", "NotStarted": "#9e9e9e"}


def _duration(start, end) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def step_rows(run: PipelineRun) -> list[dict[str, Any]]:
    """One row per step of the run, in the order they started; steps not started yet come last."""
    from prefect_aml.flows.submit import load_spec

    ui = run.experiment.workspace.ui_url
    rows = []
    seen = set()
    task_runs = sorted(run._task_runs(), key=lambda t: (t.start_time or t.expected_start_time or t.created))
    for tr in task_runs:
        seen.add(tr.name)
        state = tr.state
        rows.append({"step": tr.name, "status": _status(state), "duration": _duration(tr.start_time, tr.end_time),
                     "reused": bool(state is not None and state.name == "Cached"),
                     "link": f"{ui}/runs/task-run/{tr.id}"})
    try:
        names = load_spec(run._default_store(), run._parameters["spec_path"]).order()
    except Exception:  # the run is not readable yet: show what there is
        names = []
    rows += [{"step": n, "status": "NotStarted", "duration": "", "reused": False, "link": ""}
             for n in names if n not in seen]
    return rows


def html_table(run: PipelineRun, rows: list[dict[str, Any]] | None = None, status: str | None = None) -> str:
    rows = step_rows(run) if rows is None else rows
    status = status or run.get_status()
    cells = []
    for r in rows:
        color = _COLORS.get(r["status"], "#000")
        link = f'<a href="{html.escape(r["link"])}" target="_blank">open</a>' if r["link"] else ""
        cells.append(f"<tr><td>{html.escape(r['step'])}</td><td style=\"color:{color}\"><b>"
                     f"{html.escape(r['status'])}</b></td><td>{r['duration']}</td>"
                     f"<td>{'yes' if r['reused'] else 'no'}</td><td>{link}</td></tr>")
    head = (f'<p><b>Pipeline run</b> <a href="{html.escape(run.get_portal_url())}" target="_blank">'
            f"{html.escape(run.id)}</a> · experiment <code>{html.escape(run.experiment.name)}</code> · "
            f"status <b style=\"color:{_COLORS.get(status, '#000')}\">{html.escape(status)}</b></p>")
    return (head + '<table class="prefect-aml-run-details"><thead><tr><th>Step</th><th>Status</th>'
            "<th>Duration</th><th>Reused</th><th>Prefect UI</th></tr></thead><tbody>" + "".join(cells)
            + "</tbody></table>")


def rich_table(run: PipelineRun, rows: list[dict[str, Any]] | None = None, status: str | None = None):
    from rich.table import Table

    rows = step_rows(run) if rows is None else rows
    table = Table(title=f"Pipeline run {run.id} ({run.experiment.name}): {status or run.get_status()}")
    for col in ("Step", "Status", "Duration", "Reused", "Prefect UI"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["step"], f"[{_COLORS.get(r['status'], 'white')}]{r['status']}", r["duration"],
                      "yes" if r["reused"] else "no", r["link"])
    return table


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class RunDetails:
    """A live view of a pipeline run's steps (Azure ML's `azureml.widgets.RunDetails`)."""

    def __init__(self, run_instance: PipelineRun | StepRun):
        if isinstance(run_instance, StepRun):
            run_instance = run_instance.pipeline_run
        if not isinstance(run_instance, PipelineRun):
            from prefect_aml.exceptions import UserErrorException

            raise UserErrorException(f"RunDetails takes a PipelineRun (or a StepRun), got {run_instance!r}.")
        self.run_instance = run_instance
        self._thread: threading.Thread | None = None

    def get_rows(self) -> list[dict[str, Any]]:
        return step_rows(self.run_instance)

    def _repr_html_(self) -> str:
        return html_table(self.run_instance)

    def show(self, refresh_seconds: float = 2.0, wait: bool | None = None) -> None:
        """Display the table and keep it current until the run ends.

        In a notebook the updates happen in the background (the cell returns at once; `wait=True`
        blocks instead); in a terminal it blocks until the run ends (`wait=False` prints it once)."""
        if _in_notebook():
            from IPython.display import HTML, display

            handle = display(HTML(html_table(self.run_instance)), display_id=True)

            def follow() -> None:
                while True:
                    status = self.run_instance.get_status()
                    handle.update(HTML(html_table(self.run_instance, status=status)))
                    if status in TERMINAL:
                        return
                    time.sleep(refresh_seconds)

            if wait:
                follow()
            else:
                self._thread = threading.Thread(target=follow, daemon=True, name="prefect-aml-run-details")
                self._thread.start()
            return
        from rich.console import Console
        from rich.live import Live

        console = Console()
        if wait is False:
            console.print(rich_table(self.run_instance))
            return
        with Live(rich_table(self.run_instance), console=console, refresh_per_second=4) as live:
            while True:
                status = self.run_instance.get_status()
                live.update(rich_table(self.run_instance, status=status))
                if status in TERMINAL:
                    return
                time.sleep(refresh_seconds)

    def wait(self, timeout: float | None = None) -> None:
        """In a notebook, wait until the background updates have seen the run end."""
        if self._thread is not None:
            self._thread.join(timeout)

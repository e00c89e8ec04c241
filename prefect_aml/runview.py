"""How a pipeline run looks: Azure ML's status names for Prefect states, and its steps as a table.

The table is HTML in a notebook (`PipelineRun._repr_html_`, `RunDetails`) and rich in a terminal
(`RunDetails`, `wait_for_completion`). Runs are read through their own methods (`_task_runs`,
`get_status`, ...), so this module needs none of their classes.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from prefect_aml.records import load_spec

STATUS = {
    "SCHEDULED": "NotStarted", "PENDING": "Queued", "RUNNING": "Running", "COMPLETED": "Finished",
    "FAILED": "Failed", "CRASHED": "Failed", "CANCELLED": "Canceled", "CANCELLING": "Canceling", "PAUSED": "Paused",
}
TERMINAL = {"Finished", "Failed", "Canceled"}
COLORS = {"Finished": "#2e7d32", "Failed": "#c62828", "Canceled": "#6d4c41", "Running": "#1565c0",
          "Queued": "#757575", "NotStarted": "#9e9e9e"}


def status_of(state) -> str:
    """Azure ML's status name for a Prefect state (NotStarted for none)."""
    if state is None:
        return "NotStarted"
    return STATUS.get(state.type.value, state.type.value.title())


def duration(start, end) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def step_rows(run) -> list[dict[str, Any]]:
    """One row per step of the run, in the order they started; steps not started yet come last."""
    ui = run.experiment.workspace.ui_url
    rows = []
    seen = set()
    task_runs = sorted(run._task_runs(), key=lambda t: (t.start_time or t.expected_start_time or t.created))
    for tr in task_runs:
        seen.add(tr.name)
        state = tr.state
        rows.append({"step": tr.name, "status": status_of(state), "duration": duration(tr.start_time, tr.end_time),
                     "reused": bool(state is not None and state.name == "Cached"),
                     "link": f"{ui}/runs/task-run/{tr.id}"})
    try:
        names = load_spec(run._default_store(), run._parameters["spec_path"]).order()
    except Exception:  # the run is not readable yet: show what there is
        names = []
    rows += [{"step": n, "status": "NotStarted", "duration": "", "reused": False, "link": ""}
             for n in names if n not in seen]
    return rows


def html_table(run, rows: list[dict[str, Any]] | None = None, status: str | None = None) -> str:
    rows = step_rows(run) if rows is None else rows
    status = status or run.get_status()
    cells = []
    for r in rows:
        color = COLORS.get(r["status"], "#000")
        link = f'<a href="{html.escape(r["link"])}" target="_blank">open</a>' if r["link"] else ""
        cells.append(f"<tr><td>{html.escape(r['step'])}</td><td style=\"color:{color}\"><b>"
                     f"{html.escape(r['status'])}</b></td><td>{r['duration']}</td>"
                     f"<td>{'yes' if r['reused'] else 'no'}</td><td>{link}</td></tr>")
    head = (f'<p><b>Pipeline run</b> <a href="{html.escape(run.get_portal_url())}" target="_blank">'
            f"{html.escape(run.id)}</a> · experiment <code>{html.escape(run.experiment.name)}</code> · "
            f"status <b style=\"color:{COLORS.get(status, '#000')}\">{html.escape(status)}</b></p>")
    return (head + '<table class="prefect-aml-run-details"><thead><tr><th>Step</th><th>Status</th>'
            "<th>Duration</th><th>Reused</th><th>Prefect UI</th></tr></thead><tbody>" + "".join(cells)
            + "</tbody></table>")


def step_html(step_run) -> str:
    """One step run as a small HTML table (`StepRun._repr_html_`)."""
    status = step_run.get_status()
    tr = step_run._task_run
    link = f"{step_run.pipeline_run.experiment.workspace.ui_url}/runs/task-run/{step_run.id}"
    outs = ", ".join(html.escape(n) for n in step_run._load_record().get("outputs", {}))
    return (f"<table><tr><th>Step</th><td>{html.escape(step_run.name)}</td></tr><tr><th>Status</th><td style="
            f"\"color:{COLORS.get(status, '#000')}\"><b>{html.escape(status)}</b></td></tr><tr><th>Duration</th>"
            f"<td>{duration(tr.start_time, tr.end_time)}</td></tr><tr><th>Reused</th><td>"
            f"{'yes' if step_run.reused else 'no'}</td></tr><tr><th>Outputs</th><td>{outs}</td></tr><tr><th>Pipeline "
            f"run</th><td>{html.escape(step_run.pipeline_run.id)}</td></tr><tr><th>Prefect UI</th><td><a href=\""
            f"{html.escape(link)}\" target=\"_blank\">open</a></td></tr></table>")


def rich_table(run, rows: list[dict[str, Any]] | None = None, status: str | None = None) -> Table:
    rows = step_rows(run) if rows is None else rows
    table = Table(title=f"Pipeline run {run.id} ({run.experiment.name}): {status or run.get_status()}")
    for col in ("Step", "Status", "Duration", "Reused", "Prefect UI"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["step"], f"[{COLORS.get(r['status'], 'white')}]{r['status']}", r["duration"],
                      "yes" if r["reused"] else "no", r["link"])
    return table

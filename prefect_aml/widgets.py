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

import threading
import time
from typing import Any

from rich.console import Console
from rich.live import Live

from prefect_aml.exceptions import UserErrorException
from prefect_aml.runs import PipelineRun, StepRun
from prefect_aml.runview import TERMINAL, html_table, rich_table, step_rows


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # IPython only where it is installed (a notebook's kernel)
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
            from IPython.display import HTML, display  # in a notebook, IPython is there

            handle = display(HTML(html_table(self.run_instance)), display_id=True)

            def follow() -> None:
                with self.run_instance.experiment.workspace.prefect():  # in this thread too: the workspace's API
                    watch()

            def watch() -> None:
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

"""Datastore triggers: run a published pipeline when files under a datastore path are added or changed.

```python
Schedule.create(ws, name="on-new-data", pipeline_id=published.id, experiment_name="iris",
                datastore=store, path_on_datastore="incoming", polling_interval=5,
                data_path_parameter_name="input_data")
# then keep a watcher running: `prefect-aml triggers watch` (or `prefect-aml serve`, which runs one)
```

The watcher lists the files under the path (subfolders included) every `polling_interval` minutes
and compares them with what it saw last (size and ETag/mtime). A poll that finds changes emits one
Prefect event, `prefect-aml.datastore.changed`, with the changed paths in its payload; a Prefect
automation made for the schedule reacts to it by running the pipeline's deployment, once per
batch. The DataPath parameter named `data_path_parameter_name` receives the changed file, or their
common folder when a batch has several; the event (in the UI's event feed) lists every path.
Files present when the schedule is created do not fire it.
"""

from __future__ import annotations

import posixpath
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect.automations import Automation
from prefect.events import Event, Resource
from prefect.events.actions import RunDeployment
from prefect.events.clients import get_events_client
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_aml.blocks.published import ScheduleRecord, list_records
from prefect_aml.datastore import Datastore
from prefect_aml.deployments.endpoint import PipelineEndpoint
from prefect_aml.deployments.published import PublishedPipeline
from prefect_aml.exceptions import UserErrorException
from prefect_aml.names import SCHEDULE_SLUG_PREFIX, trigger_seen_path
from prefect_aml.records import read_json, write_json

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

EVENT = "prefect-aml.datastore.changed"


def _resource_id(schedule_id: str) -> str:
    return f"prefect-aml.schedule.{schedule_id}"


def _listing(store, path: str) -> dict[str, str]:
    """Every file under `path` on `store` -> a signature of its content (size and ETag or mtime)."""
    fs = store.filesystem()
    root = store.full_path(path.strip("/"))
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    prefix = store.full_path("").rstrip("/") + "/"
    for full, info in found.items():
        if info.get("type") == "directory":
            continue
        rel = full[len(prefix):] if full.startswith(prefix) else full
        stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("last_modified") or ""
        out[rel] = f"{info.get('size')}:{stamp}"
    return out


def create_trigger(workspace: Workspace, record: ScheduleRecord, published, datastore, path_on_datastore,
                   polling_interval, data_path_parameter_name) -> None:
    """Check the trigger's settings, note the files already there, and create its automation."""
    store = datastore if not isinstance(datastore, str) else Datastore.get(workspace, datastore)
    if not hasattr(store, "filesystem"):
        raise UserErrorException(f"Schedule {record.name!r}: datastore must be a Datastore or its name, got "
                                 f"{datastore!r}.")
    if not isinstance(polling_interval, int | float) or isinstance(polling_interval, bool) or polling_interval <= 0:
        raise UserErrorException(f"Schedule {record.name!r}: polling_interval {polling_interval!r} is not valid; "
                                 "use a number of minutes above 0.")
    if data_path_parameter_name is not None:
        p = published._record.parameters.get(data_path_parameter_name)
        if p is None or p["type"] != "DataPath":
            dps = [n for n, q in published._record.parameters.items() if q["type"] == "DataPath"]
            raise UserErrorException(
                f"Schedule {record.name!r}: data_path_parameter_name={data_path_parameter_name!r} is not a DataPath "
                f"parameter of published pipeline {published.name!r}; its DataPath parameters: {dps or 'none'}.")
    record.datastore = store.name
    record.path_on_datastore = (path_on_datastore or "").strip("/")
    record.polling_interval = float(polling_interval)
    record.data_path_parameter_name = data_path_parameter_name
    _write_seen(workspace, record, _listing(store, record.path_on_datastore))
    record.automation_id = _create_automation(workspace, record)


def _write_seen(workspace: Workspace, record: ScheduleRecord, listing: dict[str, str]) -> None:
    write_json(workspace.get_default_datastore(), trigger_seen_path(record.schedule_id), listing)


def _create_automation(workspace: Workspace, record: ScheduleRecord) -> str:
    parameters: dict[str, Any] = dict(record.pipeline_parameters)
    if record.data_path_parameter_name:
        parameters[record.data_path_parameter_name] = {
            "datastore": record.datastore,
            "path": {"__prefect_kind": "jinja", "template": "{{ event.payload.path }}"}}
    automation = Automation(
        name=f"{SCHEDULE_SLUG_PREFIX}{record.schedule_id}",
        description=f"prefect-aml datastore trigger {record.name!r}: runs the pipeline when files under "
                    f"{record.datastore}:{record.path_on_datastore or '/'} change.",
        enabled=record.status == "Active",
        trigger=EventTrigger(expect={EVENT}, match={"prefect.resource.id": _resource_id(record.schedule_id)},
                             posture=Posture.Reactive, threshold=1),
        actions=[RunDeployment(source="selected", deployment_id=uuid.UUID(record.deployment_id),
                               parameters=parameters)])
    with workspace.prefect():
        return str(automation.create(_sync=True).id)


def update_trigger(workspace: Workspace, record: ScheduleRecord, datastore=None, polling_interval=None,
                   data_path_parameter_name=None, path_on_datastore=None) -> None:
    """Apply changed settings: the automation is replaced (its id changes), the seen files re-noted."""
    published = PublishedPipeline.get(workspace, record.pipeline_id) if record.pipeline_id else None
    if published is None:
        published = PipelineEndpoint.get(workspace, id=record.pipeline_endpoint_id).get_pipeline()
    with workspace.client() as client:
        delete_trigger(client, record)
    create_trigger(workspace, record, published, datastore or record.datastore,
                   record.path_on_datastore if path_on_datastore is None else path_on_datastore,
                   polling_interval or record.polling_interval,
                   data_path_parameter_name or record.data_path_parameter_name)


def delete_trigger(client, record: ScheduleRecord) -> None:
    if record.automation_id:
        try:
            client.delete_automation(uuid.UUID(record.automation_id))
        except Exception:  # already gone
            pass


def _emit(workspace: Workspace, event: Event) -> None:
    """Send one event to the workspace's API, now (a client of its own: no background worker to outlive)."""
    async def send() -> None:
        async with client:
            await client.emit(event)

    with workspace.prefect():
        client = get_events_client()
    run_coro_as_sync(send())


def common_folder(paths: list[str]) -> str:
    return paths[0] if len(paths) == 1 else posixpath.commonpath(paths) if paths else ""


def poll_once(workspace: Workspace, record: ScheduleRecord) -> list[str]:
    """One poll of one trigger: emit the event when files were added or changed; returns the changed paths."""
    store = Datastore.get(workspace, record.datastore)
    default = workspace.get_default_datastore()
    seen = read_json(default, trigger_seen_path(record.schedule_id)) or {}
    now = _listing(store, record.path_on_datastore or "")
    changed = sorted(p for p, sig in now.items() if seen.get(p) != sig)
    if changed:
        _emit(workspace, Event(event=EVENT, resource=Resource({"prefect.resource.id": _resource_id(record.schedule_id),
                                                               "prefect.resource.name": record.name}),
                               payload={"datastore": record.datastore, "path": common_folder(changed),
                                        "paths": changed[:1000], "count": len(changed), "schedule": record.name}))
    if now != seen:
        _write_seen(workspace, record, now)
    return changed


def watch(workspace: Workspace, stop: threading.Event | None = None, log=print) -> None:
    """Poll every active datastore trigger at its interval until `stop` is set (the `triggers watch` command)."""
    stop = stop or threading.Event()
    due: dict[str, float] = {}
    while not stop.is_set():
        try:
            records = [r for r in list_records(ScheduleRecord, workspace)
                       if r.recurrence is None and r.status == "Active"]
        except Exception as err:  # the API blinked: try again shortly
            log(f"prefect-aml triggers: cannot list schedules ({err}); retrying")
            stop.wait(5)
            continue
        now = time.monotonic()
        for rec in records:
            if now < due.get(rec.schedule_id, 0.0):
                continue
            due[rec.schedule_id] = now + rec.polling_interval * 60
            try:
                changed = poll_once(workspace, rec)
            except Exception as err:
                log(f"prefect-aml triggers: schedule {rec.name!r}: {err}")
                continue
            if changed:
                log(f"{datetime.now(UTC):%H:%M:%S} schedule {rec.name!r}: {len(changed)} changed file(s) under "
                    f"{rec.datastore}:{rec.path_on_datastore or '/'}; run requested")
        # wake for the next due poll, and at least every 10 s to notice new or changed schedules
        next_due = min((due[r.schedule_id] for r in records), default=time.monotonic() + 10.0)
        stop.wait(min(max(next_due - time.monotonic(), 0.2), 10.0))

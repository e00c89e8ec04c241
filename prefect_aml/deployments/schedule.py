"""Schedules: run a published pipeline (or an endpoint's default version) on a recurrence.

```python
recurrence = ScheduleRecurrence(frequency="Week", interval=1, week_days=["Monday"], time_of_day="09:30",
                                time_zone="Europe/Stockholm")
schedule = Schedule.create(ws, name="weekly", pipeline_id=published.id, experiment_name="iris",
                           recurrence=recurrence, pipeline_parameters={"n_estimators": 100})
```

A recurrence becomes an RRule schedule on the pipeline's deployment (with its own parameters and a
slug naming the schedule), so the Prefect scheduler creates the runs and the UI shows them. Azure
ML's rules for a recurrence are checked when it is built, before anything is created.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as _rr
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import RRuleSchedule
from prefect.client.schemas.sorting import FlowRunSort

from prefect_aml.blocks.published import (
    ScheduleRecord,
    delete_record,
    list_records,
    load_record,
    resolve_values,
    save_record,
)
from prefect_aml.deployments.endpoint import DEFAULT_DEPLOYMENT, PipelineEndpoint
from prefect_aml.deployments.published import PublishedPipeline, check_name
from prefect_aml.deployments.trigger import create_trigger, delete_trigger, poll_once, update_trigger
from prefect_aml.exceptions import UserErrorException
from prefect_aml.names import SCHEDULE_SLUG_PREFIX, automation_of
from prefect_aml.runs import Experiment, PipelineRun

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

_FREQ = {"Minute": "MINUTELY", "Hour": "HOURLY", "Day": "DAILY", "Week": "WEEKLY", "Month": "MONTHLY"}
_DAYS = {"Monday": "MO", "Tuesday": "TU", "Wednesday": "WE", "Thursday": "TH", "Friday": "FR", "Saturday": "SA",
         "Sunday": "SU"}


class TimeZone:
    """Azure ML's time zone names (Windows names) for `ScheduleRecurrence(time_zone=...)`; IANA names work too."""

    UTC = "UTC"
    GMTStandardTime = "GMT Standard Time"
    WEuropeStandardTime = "W. Europe Standard Time"
    CentralEuropeStandardTime = "Central Europe Standard Time"
    RomanceStandardTime = "Romance Standard Time"
    FLEStandardTime = "FLE Standard Time"
    EasternStandardTime = "Eastern Standard Time"
    CentralStandardTime = "Central Standard Time"
    MountainStandardTime = "Mountain Standard Time"
    PacificStandardTime = "Pacific Standard Time"
    IndiaStandardTime = "India Standard Time"
    ChinaStandardTime = "China Standard Time"
    TokyoStandardTime = "Tokyo Standard Time"
    AUSEasternStandardTime = "AUS Eastern Standard Time"


_WINDOWS_ZONES = {
    "UTC": "UTC", "GMT Standard Time": "Europe/London", "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest", "Romance Standard Time": "Europe/Paris",
    "FLE Standard Time": "Europe/Helsinki", "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago", "Mountain Standard Time": "America/Denver",
    "Pacific Standard Time": "America/Los_Angeles", "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai", "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
}


def _iana(time_zone: str | None) -> str | None:
    return None if time_zone is None else _WINDOWS_ZONES.get(str(time_zone), str(time_zone))


class ScheduleException(UserErrorException):
    """A schedule or recurrence is not valid, or not found."""


class ScheduleRecurrence:
    """How often a schedule runs, with Azure ML's rules (checked here, when it is built)."""

    def __init__(self, frequency: str, interval: int, start_time: datetime | str | None = None,
                 time_zone: str | None = None, hours: list[int] | None = None, minutes: list[int] | None = None,
                 week_days: list[str] | None = None, time_of_day: str | None = None):
        self.frequency, self.interval, self.start_time, self.time_zone = frequency, interval, start_time, time_zone
        self.hours, self.minutes, self.week_days, self.time_of_day = hours, minutes, week_days, time_of_day
        self.validate()

    def __repr__(self) -> str:
        return f"ScheduleRecurrence({self.to_dict()})"

    def validate(self) -> None:
        def bad(msg: str):
            raise ScheduleException(f"ScheduleRecurrence: {msg}")

        if self.frequency not in _FREQ:
            bad(f"frequency {self.frequency!r} is not valid; use one of {list(_FREQ)}.")
        if type(self.interval) is not int or self.interval < 1:
            bad(f"interval {self.interval!r} is not valid; use a whole number of at least 1.")
        if self.frequency in ("Minute", "Hour", "Month") and any(
                v is not None for v in (self.hours, self.minutes, self.week_days, self.time_of_day)):
            bad(f"hours, minutes, week_days and time_of_day can only be set with frequency 'Day' or 'Week' "
                f"(frequency is {self.frequency!r}).")
        if self.frequency == "Day" and self.week_days is not None:
            bad("week_days can only be set with frequency 'Week'.")
        if self.time_of_day is not None and (self.hours is not None or self.minutes is not None):
            bad("set either time_of_day or hours/minutes, not both.")
        for name, values, top in (("hours", self.hours, 23), ("minutes", self.minutes, 59)):
            if values is not None and (not isinstance(values, list) or not values or any(
                    type(v) is not int or not 0 <= v <= top for v in values)):
                bad(f"{name} {values!r} is not valid; use a non-empty list of whole numbers from 0 to {top}.")
        if self.week_days is not None and (not isinstance(self.week_days, list) or not self.week_days
                                           or any(d not in _DAYS for d in self.week_days)):
            bad(f"week_days {self.week_days!r} is not valid; use a non-empty list of {list(_DAYS)}.")
        if self.time_of_day is not None and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", str(self.time_of_day)):
            bad(f"time_of_day {self.time_of_day!r} is not valid; use 'HH:MM' (24-hour clock).")
        if self.time_zone is not None:
            try:
                ZoneInfo(_iana(self.time_zone))
            except (ZoneInfoNotFoundError, ValueError):
                bad(f"time_zone {self.time_zone!r} is not a known time zone: use an IANA name (e.g. 'UTC', "
                    "'Europe/Stockholm') or a TimeZone value (e.g. TimeZone.PacificStandardTime).")
        self._start()

    def _start(self) -> datetime:
        start = self.start_time
        if start is None:
            return datetime.now(UTC).replace(second=0, microsecond=0)
        if isinstance(start, str):
            try:
                start = datetime.fromisoformat(start)
            except ValueError:
                raise ScheduleException(
                    f"ScheduleRecurrence: start_time {self.start_time!r} is not an ISO 8601 time "
                    "(e.g. '2026-12-01T09:00:00').") from None
        if not isinstance(start, datetime):
            raise ScheduleException(f"ScheduleRecurrence: start_time {start!r} is not a datetime.")
        return start

    def to_dict(self) -> dict[str, Any]:
        start = self.start_time.isoformat() if isinstance(self.start_time, datetime) else self.start_time
        return {"frequency": self.frequency, "interval": self.interval, "start_time": start,
                "time_zone": self.time_zone, "hours": self.hours, "minutes": self.minutes,
                "week_days": self.week_days, "time_of_day": self.time_of_day}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ScheduleRecurrence:
        return ScheduleRecurrence(**data)

    def to_rrule(self):
        """Prefect's RRuleSchedule for this recurrence."""
        start = self._start()
        if start.tzinfo is not None and self.time_zone is None:
            tz = str(start.tzinfo) if str(start.tzinfo) != "UTC+00:00" else "UTC"
        else:
            tz = _iana(self.time_zone) or "UTC"
        start = start.replace(tzinfo=None)
        parts = [f"FREQ={_FREQ[self.frequency]}", f"INTERVAL={self.interval}"]
        hours, minutes = self.hours, self.minutes
        if self.time_of_day is not None:
            h, m = str(self.time_of_day).split(":")
            hours, minutes = [int(h)], [int(m)]
        if self.week_days:
            parts.append("BYDAY=" + ",".join(_DAYS[d] for d in self.week_days))
        if hours is not None:
            parts.append("BYHOUR=" + ",".join(map(str, sorted(hours))))
        if hours is not None or minutes is not None:
            parts.append("BYMINUTE=" + ",".join(map(str, sorted(minutes or [0]))))
            parts.append("BYSECOND=0")
        return RRuleSchedule(rrule=f"DTSTART:{start:%Y%m%dT%H%M%S}\nRRULE:" + ";".join(parts), timezone=tz)

    def next_run_times(self, count: int = 5, after: datetime | None = None) -> list[datetime]:
        sched = self.to_rrule()
        rule = _rr.rrulestr(sched.rrule, dtstart=None)
        tz = ZoneInfo(sched.timezone or "UTC")
        after_local = (after or datetime.now(UTC)).astimezone(tz).replace(tzinfo=None)
        out: list[datetime] = []
        current = after_local
        while len(out) < count:
            nxt = rule.after(current)
            if nxt is None:
                break
            out.append(nxt.replace(tzinfo=tz))
            current = nxt
        return out


def _records(workspace: Workspace) -> list[ScheduleRecord]:
    return list_records(ScheduleRecord, workspace)


class Schedule:
    """A schedule of a published pipeline or pipeline endpoint."""

    def __init__(self, workspace: Workspace, record: ScheduleRecord):
        self.workspace = workspace
        self._record = record

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, id={self.id!r}, status={self.status!r})"

    id = property(lambda self: self._record.schedule_id)
    name = property(lambda self: self._record.name)
    description = property(lambda self: self._record.description)
    status = property(lambda self: self._record.status)
    pipeline_id = property(lambda self: self._record.pipeline_id)
    pipeline_endpoint_id = property(lambda self: self._record.pipeline_endpoint_id)
    experiment_name = property(lambda self: self._record.experiment_name)
    pipeline_parameters = property(lambda self: dict(self._record.pipeline_parameters))
    datastore_name = property(lambda self: self._record.datastore)
    path_on_datastore = property(lambda self: self._record.path_on_datastore)
    polling_interval = property(lambda self: self._record.polling_interval)
    data_path_parameter_name = property(lambda self: self._record.data_path_parameter_name)

    @property
    def recurrence(self) -> ScheduleRecurrence | None:
        r = self._record.recurrence
        return ScheduleRecurrence.from_dict(r) if r else None

    # -- create and find
    @staticmethod
    def create(workspace: Workspace, name: str, pipeline_id: str | None = None, experiment_name: str | None = None,
               recurrence: ScheduleRecurrence | None = None, description: str | None = None,
               pipeline_parameters: dict | None = None, wait_for_provisioning: bool = False,
               wait_timeout: int = 3600, datastore=None, polling_interval: float = 5,
               data_path_parameter_name: str | None = None, continue_on_step_failure=None,
               path_on_datastore: str | None = None, pipeline_endpoint_id: str | None = None,
               _workflow_provider=None, _service_endpoint=None) -> Schedule:
        """A recurrence (a deployment schedule) or, with `datastore`, a trigger on new or changed files."""
        check_name("Schedule", name)
        if experiment_name is None:
            raise ScheduleException(f"Schedule {name!r}: experiment_name is required (the runs' experiment).")
        Experiment(workspace, experiment_name)  # validates the name
        if (pipeline_id is None) == (pipeline_endpoint_id is None):
            raise ScheduleException(f"Schedule {name!r}: pass exactly one of pipeline_id= or pipeline_endpoint_id=.")
        if (recurrence is None) == (datastore is None):
            raise ScheduleException(
                f"Schedule {name!r}: pass either recurrence=ScheduleRecurrence(...) (a time schedule) or "
                "datastore=... (runs when files under path_on_datastore are added or changed), not both or neither.")
        if recurrence is not None and not isinstance(recurrence, ScheduleRecurrence):
            raise ScheduleException(f"Schedule {name!r}: recurrence must be a ScheduleRecurrence, got {recurrence!r}.")
        if any(r.name == name for r in _records(workspace)):
            raise ScheduleException(f"Schedule {name!r} already exists; update it (Schedule.update) or pick another "
                                    "name.")
        published, deployment_id = _target(workspace, pipeline_id, pipeline_endpoint_id)
        params = resolve_values(published._record, pipeline_parameters)  # bad parameters fail here
        given = {k: params[k] for k in (pipeline_parameters or {})}
        record = ScheduleRecord(
            schedule_id=str(uuid.uuid4()), name=name, pipeline_id=pipeline_id,
            pipeline_endpoint_id=pipeline_endpoint_id, experiment_name=experiment_name, description=description,
            recurrence=recurrence.to_dict() if recurrence else None, pipeline_parameters=_for_api(given),
            deployment_id=deployment_id, created=datetime.now(UTC).isoformat())
        if datastore is not None:
            create_trigger(workspace, record, published, datastore, path_on_datastore, polling_interval,
                           data_path_parameter_name)
        else:
            with workspace.client() as client:
                created = client.create_deployment_schedules(
                    uuid.UUID(deployment_id), [(recurrence.to_rrule(), True)],
                    parameters=record.pipeline_parameters, slug=SCHEDULE_SLUG_PREFIX + record.schedule_id)
            record.deployment_schedule_id = str(created[0].id)
        schedule = Schedule(workspace, record)
        schedule._save()
        return schedule

    @staticmethod
    def create_for_pipeline_endpoint(workspace: Workspace, name: str, pipeline_endpoint_id: str,
                                     experiment_name: str, **kwargs) -> Schedule:
        return Schedule.create(workspace, name, experiment_name=experiment_name,
                               pipeline_endpoint_id=pipeline_endpoint_id, **kwargs)

    @staticmethod
    def get(workspace: Workspace, id: str, _workflow_provider=None, _service_endpoint=None) -> Schedule:
        record = load_record(ScheduleRecord, workspace, id)
        if record is None:
            raise ScheduleException(f"Schedule id {id!r} was not found in workspace {workspace.name!r}; "
                                    f"Schedule.list(ws) shows the schedules.")
        return Schedule(workspace, record)

    @staticmethod
    def list(workspace: Workspace, active_only: bool = True, pipeline_id: str | None = None,
             pipeline_endpoint_id: str | None = None, _workflow_provider=None,
             _service_endpoint=None) -> list[Schedule]:
        return [Schedule(workspace, r) for r in _records(workspace)
                if (not active_only or r.status == "Active")
                and (pipeline_id is None or r.pipeline_id == pipeline_id)
                and (pipeline_endpoint_id is None or r.pipeline_endpoint_id == pipeline_endpoint_id)]

    @staticmethod
    def get_schedules_for_pipeline_id(workspace: Workspace, pipeline_id: str, **_kw) -> list[Schedule]:
        return Schedule.list(workspace, active_only=False, pipeline_id=pipeline_id)

    @staticmethod
    def get_schedules_for_pipeline_endpoint_id(workspace: Workspace, pipeline_endpoint_id: str,
                                               **_kw) -> list[Schedule]:
        return Schedule.list(workspace, active_only=False, pipeline_endpoint_id=pipeline_endpoint_id)

    def _refresh(self) -> ScheduleRecord:
        self._record = load_record(ScheduleRecord, self.workspace, self.id) or self._record
        return self._record

    def _save(self) -> None:
        save_record(self.workspace, self._record)

    def _deployment_schedule(self, client):
        """Our deployment schedule (found by slug: re-created schedules get new ids)."""
        for sched in client.read_deployment_schedules(uuid.UUID(self._record.deployment_id)):
            if sched.slug == SCHEDULE_SLUG_PREFIX + self.id:
                return sched
        return None

    # -- change
    def update(self, name: str | None = None, description: str | None = None, recurrence=None,
               pipeline_parameters: dict | None = None, status: str | None = None, wait_for_provisioning=False,
               wait_timeout: int = 3600, datastore=None, polling_interval=None, data_path_parameter_name=None,
               continue_on_step_failure=None, path_on_datastore=None) -> None:
        record = self._refresh()
        if status is not None and status not in ("Active", "Disabled"):
            raise ScheduleException(f"Schedule {record.name!r}: status {status!r} is not valid; use 'Active' or "
                                    "'Disabled'.")
        if recurrence is not None and record.recurrence is None:
            raise ScheduleException(f"Schedule {record.name!r} is a datastore trigger; it has no recurrence.")
        if recurrence is not None and not isinstance(recurrence, ScheduleRecurrence):
            raise ScheduleException(f"Schedule {record.name!r}: recurrence must be a ScheduleRecurrence.")
        if pipeline_parameters is not None:
            published, _ = _target(self.workspace, record.pipeline_id, record.pipeline_endpoint_id)
            params = resolve_values(published._record, pipeline_parameters)
            record.pipeline_parameters = _for_api({k: params[k] for k in pipeline_parameters})
        if name is not None:
            check_name("Schedule", name)
            record.name = name
        if description is not None:
            record.description = description
        if recurrence is not None:
            record.recurrence = recurrence.to_dict()
        if status is not None:
            record.status = status
        if record.recurrence is not None:
            with self.workspace.client() as client:
                sched = self._deployment_schedule(client)
                if sched is None:
                    raise ScheduleException(f"Schedule {record.name!r}: its deployment schedule is gone (was the "
                                            "deployment deleted?). Create the schedule again.")
                client.update_deployment_schedule(
                    uuid.UUID(record.deployment_id), sched.id, active=record.status == "Active",
                    schedule=ScheduleRecurrence.from_dict(record.recurrence).to_rrule(),
                    parameters=record.pipeline_parameters)
        else:
            update_trigger(self.workspace, record, datastore=datastore, polling_interval=polling_interval,
                           data_path_parameter_name=data_path_parameter_name, path_on_datastore=path_on_datastore)
        self._save()

    def enable(self, wait_for_provisioning: bool = False, wait_timeout: int = 3600) -> None:
        self.update(status="Active")

    def disable(self, wait_for_provisioning: bool = False, wait_timeout: int = 3600) -> None:
        self.update(status="Disabled")

    def poll(self) -> list[str]:
        """A datastore trigger: look for new or changed files now, as the watcher does every polling_interval.

        Returns the changed paths (a run is requested when there are any)."""
        record = self._refresh()
        if record.recurrence is not None:
            raise ScheduleException(f"Schedule {record.name!r} runs on a recurrence; only datastore triggers poll.")
        if record.status != "Active":
            raise ScheduleException(f"Schedule {record.name!r} is disabled; enable it first.")
        return poll_once(self.workspace, record)

    # -- runs
    def get_next_run_times(self, count: int = 5) -> list[datetime]:
        """When the next runs start (a recurrence only), computed from the same RRule the scheduler uses."""
        if self._refresh().recurrence is None or self.status != "Active":
            return []
        return self.recurrence.next_run_times(count)

    def get_pipeline_runs(self) -> list[PipelineRun]:
        """The runs this schedule started, newest first (not the ones still waiting for their time)."""
        record = self._refresh()
        with self.workspace.client() as client:
            ids = {record.deployment_schedule_id, record.automation_id} - {None}
            if record.recurrence is not None:
                sched = self._deployment_schedule(client)
                if sched is not None:
                    ids.add(str(sched.id))
            runs = [r for r in client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[uuid.UUID(record.deployment_id)])),
                sort=FlowRunSort.START_TIME_DESC, limit=200)
                if (r.created_by is not None and str(r.created_by.id) in ids) or automation_of(r) in ids]
        started = [r for r in runs if r.state_type != StateType.SCHEDULED]
        experiment = Experiment(self.workspace, record.experiment_name)
        return [PipelineRun(experiment, str(r.id), _flow_run=r) for r in started]

    def get_last_pipeline_run(self) -> PipelineRun | None:
        runs = self.get_pipeline_runs()
        return runs[0] if runs else None

    def delete(self) -> None:
        """Remove the schedule (its deployment schedule or trigger, then its record)."""
        record = self._refresh()
        with self.workspace.client() as client:
            if record.recurrence is not None:
                sched = self._deployment_schedule(client)
                if sched is not None:
                    client.delete_deployment_schedule(uuid.UUID(record.deployment_id), sched.id)
            else:
                delete_trigger(client, record)
        delete_record(ScheduleRecord, self.workspace, self.id)


def _for_api(values: dict[str, Any]) -> dict[str, Any]:
    """Parameter values as a deployment run takes them (a DataPath as {"datastore", "path"})."""
    return {k: ({"datastore": v["datastore"], "path": v["path"]} if isinstance(v, dict) and "datastore" in v else v)
            for k, v in values.items()}


def _target(workspace: Workspace, pipeline_id: str | None, endpoint_id: str | None) -> tuple[PublishedPipeline, str]:
    """The published pipeline a schedule runs and the deployment its runs come from."""
    if pipeline_id is not None:
        published = PublishedPipeline.get(workspace, pipeline_id)
        return published, published.deployment_id
    endpoint = PipelineEndpoint.get(workspace, id=endpoint_id)
    with workspace.client() as client:
        dep = client.read_deployment_by_name(f"{endpoint.name}/{DEFAULT_DEPLOYMENT}")
    return endpoint.get_pipeline(), str(dep.id)


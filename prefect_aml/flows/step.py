"""A step on a work pool: the `aml-step` flow, one deployment of it per pool, and the wait for it.

A step whose compute is a work pool (an `AmlCompute` or `DockerCompute`) is still one task run of
the pipeline flow: after its reuse check (a reused step is never sent anywhere) the task creates a
flow run of `aml-step/<pool>` (a subflow of the step's task run, so the Prefect UI nests it) and
waits for it: it reads the run's state when Prefect's events stream says it changed (every 0.25 s
while the stream is down), and the heartbeat the step flow writes on the default datastore.
The pool's worker starts it; it runs the step exactly as the pipeline flow would, and commits the
outputs. The task then returns the planned outputs, or fails with the step's own error, or with a
clear message when no worker takes the run (`PREFECT_AML_WORKER_WAIT_SECONDS`) or the worker dies
mid-step (no heartbeat; nothing is committed: outputs are written last, with their manifest).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import ExitStack
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType, WorkerStatus
from prefect.context import get_run_context
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Crashed
from prefect.utilities.callables import parameter_schema

from prefect_aml import envbuild
from prefect_aml._home import aml_home
from prefect_aml.compute import DEFAULT_WORKER_WAIT_S, WORKER_WAIT_ENV
from prefect_aml.exceptions import StepFailedError
from prefect_aml.flows.cancel import watch_for_cancel
from prefect_aml.flows.events import CHECK_S, RunEvents
from prefect_aml.names import COMPUTE_TAG, HEARTBEAT_FILE, STEP_FLOW, STEP_TAG, run_dir
from prefect_aml.pipeline.spec import StepSpec
from prefect_aml.records import read_json, write_json
from prefect_aml.tasks.context import RunContext, StepPlan, StepResult
from prefect_aml.tasks.step import execute_step, wait_for_scratch_removal

HEARTBEAT_ENV = "PREFECT_AML_STEP_HEARTBEAT_SECONDS"
DEFAULT_HEARTBEAT_S = 10.0
API_PATIENCE_S = 300.0  # how long a step waits through an unreachable Prefect API before it gives up


def heartbeat_seconds() -> float:
    return float(os.environ.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S)


def worker_wait_seconds() -> float:
    return float(os.environ.get(WORKER_WAIT_ENV) or DEFAULT_WORKER_WAIT_S)


@flow(name=STEP_FLOW, persist_result=False, validate_parameters=False)
def aml_step(step: dict, plan: dict, ctx: dict, upstream: dict, task_run_id: str, heartbeat_s: float = 10.0) -> dict:
    """Run one pipeline step on this worker (started by the pool's worker, not by hand)."""
    run_ctx = RunContext.model_validate(ctx)
    # this machine's home for caches and locks; the submitter's home may not exist here
    run_ctx.workspace = {**run_ctx.workspace, "home": str(aml_home())}
    spec = StepSpec.model_validate(step)
    store = run_ctx.default_store
    path = f"{run_dir(run_ctx.run_id, spec.name)}/{HEARTBEAT_FILE}"
    stop = threading.Event()

    flow_run_id = get_run_context().flow_run.id

    def beat() -> None:
        """Heartbeats for the pipeline that waits: one now, then one every `heartbeat_s`."""
        n = 0
        while True:
            try:
                write_json(store, path, {"beat": n, "host": socket.gethostname(), "pid": os.getpid()})
            except Exception:  # a missed beat is tolerated; many in a row mean we are gone anyway
                pass
            n += 1
            if stop.wait(heartbeat_s):
                return

    threading.Thread(target=beat, daemon=True, name="aml-step-heartbeat").start()
    # a cancelled run (the pipeline's, the UI, the CLI) stops the script
    threading.Thread(target=watch_for_cancel, args=(flow_run_id, stop, True), daemon=True,
                     name="aml-step-cancel").start()
    try:
        result = execute_step(spec, StepPlan.model_validate(plan), run_ctx,
                              {k: StepResult.model_validate(v) for k, v in upstream.items()}, task_run_id)
        return result.model_dump(mode="json")
    finally:
        stop.set()
        wait_for_scratch_removal()


def ensure_step_deployment(client, pool: str):
    """The `aml-step/<pool>` deployment its workers run steps from (created or updated; idempotent)."""
    return ensure_deployment(client, STEP_FLOW, pool, aml_step)


def ensure_deployment(client, flow_name: str, pool: str, fn):
    """The `<flow_name>/<pool>` deployment of one of prefect-aml's own flows (created or updated)."""
    flow_id = client.create_flow_from_name(flow_name)
    # the code is prefect-aml itself (installed on the worker, or in the image); the step's own code comes
    # from its snapshot. A pull step is needed all the same: without one, Prefect copies the run's working
    # directory as "flow code", and a container's working directory is its whole filesystem.
    pull_steps = [{"prefect.deployments.steps.set_working_directory": {"directory": "/tmp"}}]
    return client.create_deployment(
        flow_id=flow_id, name=pool, work_pool_name=pool, entrypoint=f"{fn.fn.__module__}.{fn.fn.__name__}",
        pull_steps=pull_steps, parameter_openapi_schema=parameter_schema(fn).model_dump(),
        enforce_parameter_schema=False, tags=[flow_name],
        description=f"Runs prefect-aml {flow_name} flow runs on work pool {pool!r}; created by prefect-aml.")


def _job_variables(compute: dict, environment: dict) -> dict[str, Any]:
    if compute["type"] != "DockerCompute":
        return {}
    image = environment.get("image") or compute.get("image")
    jv: dict[str, Any] = {k: compute[k] for k in ("volumes", "network_mode", "mem_limit") if compute.get(k)}
    if image:
        jv["image"] = image
    built = envbuild.docker_job_variables(environment)
    if built:  # the step builds its environment in the container, onto a volume of the engine that keeps it
        jv["volumes"] = [*jv.get("volumes", []), *built["volumes"]]
        jv["env"] = built["env"]
    return jv


def _failure_message(state) -> str:
    msg = state.message or state.name
    for prefix in ("Flow run encountered an exception: ", "StepFailedError: "):
        msg = msg.removeprefix(prefix)
    return msg


def run_on_pool(spec: StepSpec, plan: StepPlan, ctx: RunContext, upstream: dict[str, StepResult], task_run_id: str,
                logger) -> StepResult:
    """Send a step to its compute's work pool and wait for it; returns what the step task returns."""
    compute = spec.compute
    pool = compute["pool"]
    beat_s = heartbeat_seconds()
    wait_s = worker_wait_seconds()
    store = ctx.default_store
    hb_path = f"{run_dir(ctx.run_id, spec.name)}/{HEARTBEAT_FILE}"
    with get_client(sync_client=True) as client, ExitStack() as stack:
        try:
            deployment = client.read_deployment_by_name(f"{STEP_FLOW}/{pool}")
        except ObjectNotFound:  # e.g. the pool was made before this version: make it now
            deployment = client.read_deployment(ensure_step_deployment(client, pool))
        for attempt in range(60):
            try:
                run = client.create_flow_run_from_deployment(
                    deployment.id, name=f"{spec.name}", tags=[STEP_TAG, f"{COMPUTE_TAG}{compute['name']}"],
                    parameters={"step": spec.model_dump(mode="json"), "plan": plan.model_dump(mode="json"),
                                "ctx": ctx.model_dump(mode="json"),
                                "upstream": {k: v.model_dump(mode="json") for k, v in upstream.items()},
                                "task_run_id": task_run_id, "heartbeat_s": beat_s},
                    job_variables=_job_variables(compute, spec.environment), parent_task_run_id=UUID(task_run_id))
                break
            except PrefectHTTPStatusError as err:
                # the step's task run reaches the server as an event, a moment after it starts; the link to
                # it (a foreign key) fails until then
                if err.response.status_code != 409 or attempt == 59:
                    raise
                time.sleep(0.25)
        ui = ctx.ui_url
        logger.info(f"Step {spec.name!r} sent to compute {compute['name']!r} (work pool {pool!r}) as flow run "
                    f"{run.id}" + (f": {ui}/runs/flow-run/{run.id}" if ui else ""))
        created = time.monotonic()
        last_beat, last_change, next_beat_check = None, None, 0.0
        next_check = created + wait_s
        unreachable_since = None
        state, first = None, True
        events = stack.enter_context(RunEvents(run.id))
        while True:
            if first:
                first = False
            elif state is None or not events.ok:
                time.sleep(0.25)
            else:  # woken by the step run's state changes, or when a heartbeat or worker check is due
                due = next_beat_check if state.type == StateType.RUNNING else next_check
                events.wait(min(CHECK_S, max(0.0, due - time.monotonic())))
            try:
                state = client.read_flow_run(run.id).state
            except Exception as err:  # the API blinked: look again, for a while
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > API_PATIENCE_S:
                    raise StepFailedError(f"Step {spec.name!r}: the Prefect API did not answer for "
                                          f"{API_PATIENCE_S:.0f} s while waiting for flow run {run.id}: {err}") from err
                continue
            unreachable_since = None
            now = time.monotonic()
            if state.is_final():
                if state.is_completed():
                    return StepResult(step=spec.name, key=plan.key, out_key=plan.out_key, outputs=plan.outputs,
                                      task_run_id=task_run_id, pipeline_run_id=ctx.run_id)
                raise StepFailedError(f"Step {spec.name!r} on compute {compute['name']!r} ended {state.name}: "
                                      f"{_failure_message(state)}")
            if state.type == StateType.RUNNING:
                if last_change is not None and now < next_beat_check:
                    continue
                next_beat_check = now + beat_s / 2  # the heartbeat file is read twice a beat, not every poll
                beat = read_json(store, hb_path)
                if beat != last_beat or last_change is None:
                    last_beat, last_change = beat, now
                elif now - last_change > max(4 * beat_s, 5.0):
                    client.set_flow_run_state(run.id, Crashed(
                        message=f"No heartbeat for {now - last_change:.0f} s: the worker running it is gone."),
                        force=True)
                    raise StepFailedError(
                        f"Step {spec.name!r} on compute {compute['name']!r} stopped sending heartbeats for "
                        f"{now - last_change:.0f} s (its worker or machine went away); its outputs were not committed. "
                        f"Flow run {run.id} is marked Crashed. Submit the pipeline again to re-run it.")
                continue
            if now < next_check:
                continue
            workers = client.read_workers_for_work_pool(pool)
            if not any(w.status == WorkerStatus.ONLINE for w in workers):
                client.set_flow_run_state(run.id, Cancelled(message="No worker took this step run."), force=True)
                raise StepFailedError(
                    f"Step {spec.name!r} waited {now - created:.0f} s for compute {compute['name']!r} (work pool "
                    f"{pool!r}), which has no online worker. Start one with `prefect-aml worker start "
                    f"{compute['name']}` on a machine that reaches this Prefect API, or wait longer with "
                    f"PREFECT_AML_WORKER_WAIT_SECONDS (now {wait_s:.0f}).")
            next_check = now + max(wait_s / 4, 1.0)  # workers are there but busy: the pool's limit queues it


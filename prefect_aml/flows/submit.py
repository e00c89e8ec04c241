"""Submitting a pipeline: validate, snapshot the sources, store the spec, create the flow run, start it.

`Experiment.submit` lands here (through the verbs, `prefect_aml/verbs.py`). Everything is checked and
written before the flow run exists (`flows/prepare.py`); the run itself happens in a background runner
process (`flows/launch.py`), or on a worker of `pipeline_compute`, so submit returns at once.
`explain_reuse` plans the same way without creating anything.
"""

from __future__ import annotations

from typing import Any

from prefect_aml.compute import resolve_compute
from prefect_aml.exceptions import ComputeTargetException
from prefect_aml.flows.launch import LocalRunner, start_runner
from prefect_aml.flows.pipeline import aml_pipeline
from prefect_aml.flows.prepare import (
    check_spec,
    default_store,
    prepare_sources,
    resolve_computes,
    store_getter,
    workspace_fields,
)
from prefect_aml.flows.step import ensure_deployment
from prefect_aml.names import EXPERIMENT_TAG, PIPELINE_FLOW, PIPELINE_TAG, tags_from_dict
from prefect_aml.pipeline.spec import PipelineSpec
from prefect_aml.pipeline.steps import _compute_name
from prefect_aml.records import store_spec
from prefect_aml.tasks.reuse import plan_pipeline


def _explanations(spec: PipelineSpec, values: dict, store, ws, run_id: str, regenerate_outputs: bool) -> dict:
    plans = plan_pipeline(spec, values, run_id, regenerate_outputs, store_getter(store, ws))
    return {name: plan.explanation for name, plan in plans.items()}


def explain_reuse(pipeline, pipeline_parameters: dict | None = None, regenerate_outputs: bool = False) -> dict:
    """For each step, whether a submit now would reuse it or run it, and why; nothing is run or written."""
    ws = pipeline.workspace
    spec = pipeline._build_spec()
    values = pipeline._resolve_parameters(pipeline._closure(), pipeline_parameters)
    store = default_store(ws, spec)
    prepare_sources(spec, store, ws.home)
    return _explanations(spec, values, store, ws, "explain0", regenerate_outputs)


def _runner_pool(ws, spec: PipelineSpec, pipeline_compute) -> str | None:
    """The work pool whose worker runs the pipeline flow (None: a runner here)."""
    if pipeline_compute is None:
        return None
    where = resolve_compute(ws, _compute_name(pipeline_compute), "(the pipeline flow)")
    if not where or not where.get("pool"):
        raise ComputeTargetException(
            f"pipeline_compute={_compute_name(pipeline_compute)!r}: the pipeline flow runs on a work pool "
            "compute (AmlCompute or DockerCompute); Dask computes run steps only.")
    sharing = [s.name for s in spec.steps if (s.compute or {}).get("pool") == where["pool"]]
    if sharing and (where.get("max_nodes") or 1) < 2:
        raise ComputeTargetException(
            f"pipeline_compute={where['name']!r} has max_nodes={where.get('max_nodes')}: the pipeline flow would "
            f"hold its only slot while its steps {sharing} wait for one. Give the pipeline flow another compute, "
            "or raise max_nodes.")
    return where["pool"]


def submit_pipeline(ws, experiment_name: str, pipeline, pipeline_parameters: dict | None, tags: dict | None,
                    regenerate_outputs: bool, continue_on_step_failure: bool, show_plan: bool = True,
                    pipeline_compute=None) -> tuple[Any, LocalRunner | None]:
    """Create and start a pipeline run; returns its flow run and the runner started here (None on a worker)."""
    spec = pipeline._build_spec()  # validates: nothing has been written yet
    values = pipeline._resolve_parameters(pipeline._closure(), pipeline_parameters)
    resolve_computes(spec, ws)
    runner_pool = _runner_pool(ws, spec, pipeline_compute)
    store = default_store(ws, spec)
    check_spec(spec, store, ws)
    prepare_sources(spec, store, ws.home)
    spec_path = store_spec(store, spec)  # flow-run parameters are size-limited: the spec lives on the datastore
    parameters = {"spec_path": spec_path, "parameters": values, "experiment_name": experiment_name,
                  "workspace": workspace_fields(ws), "default_datastore": store.name,
                  "regenerate_outputs": regenerate_outputs, "continue_on_step_failure": continue_on_step_failure}
    run_tags = [EXPERIMENT_TAG + experiment_name, PIPELINE_TAG, *tags_from_dict(tags)]
    with ws.client() as client:
        if runner_pool:  # a worker of that compute starts it
            deployment_id = ensure_deployment(client, PIPELINE_FLOW, runner_pool, aml_pipeline)
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters, tags=run_tags)
        else:
            flow_run = client.create_flow_run(aml_pipeline, parameters=parameters, tags=run_tags)
    runner = None if runner_pool else start_runner(ws, str(flow_run.id))
    if show_plan:  # the runner needs a moment to start; meanwhile say what will run and why
        print(f"Submitted pipeline run {flow_run.id} (experiment {experiment_name!r}):")
        for name, why in _explanations(spec, values, store, ws, str(flow_run.id), regenerate_outputs).items():
            print(f"  step {name}: {why}")
    return flow_run, runner

"""Steps on Dask computes: the clusters a pipeline run uses, and a step's work sent to one.

Each Dask compute of a run gets one `prefect_dask.DaskTaskRunner` (its cluster and client), started
while the run is planned and closed at its end. A compute with an address is an existing scheduler;
otherwise a `LocalCluster` (a `LocalCUDACluster` for `gpu=True`) lives as long as the run. Each step
keeps its Prefect task run in the pipeline flow, and only its work (`execute_on_dask_worker`) is sent
to the cluster, where Prefect's task engine would rebuild its settings and context for every step
(~0.2 s each). Steps on a `gpu=True` compute ask for a `GPU` worker resource, so Dask places them only
on workers that offer one; no more steps are sent than the cluster has slots (`capacity`), so a
step's task run starts when its work does.
"""

from __future__ import annotations

import importlib
import threading
from contextlib import ExitStack
from typing import Any

from prefect.logging.configuration import ensure_logging_setup
from prefect.logging.loggers import PrefectLogAdapter, get_logger

from prefect_aml.pipeline.spec import StepSpec
from prefect_aml.tasks.context import RunContext, StepPlan, StepResult
from prefect_aml.tasks.step import execute_step

# what a Dask worker's first step would import (~2 s in a fresh worker process): imported ahead
DASK_WORKER_MODULES = ("prefect.task_engine", "prefect.artifacts", "prefect_aml.tasks.step",
                       "prefect_aml.tasks.snapshots", "prefect_aml._transfer")


class DaskClusters:
    """The Dask computes of one pipeline run: a `DaskTaskRunner` each, opened on first use, closed together."""

    def __init__(self, run_id: str):
        self._stack = ExitStack()
        self._runners: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.run_id = run_id
        _RUNS[run_id] = self

    def start(self, computes: list[dict]) -> None:
        """Connect to (or start) the clusters a run will use, before its first step is ready.

        GPU clusters start on first use: they are costly, and a fully reused run needs none."""
        for compute in computes:
            if not compute.get("gpu") or compute.get("address"):
                self.client(compute)

    def client(self, compute: dict):
        with self._lock:
            runner = self._runners.get(compute["name"])
            if runner is None:
                runner = self._stack.enter_context(_dask_runner(compute))
                self._runners[compute["name"]] = runner
                client = runner.client  # connects to (or starts) the cluster now: DaskTaskRunner does it lazily
                if compute.get("address"):  # workers that have not run a step yet import Prefect now
                    client.run(_warm_dask_worker, wait=False, on_error="ignore")
            return runner.client

    def capacity(self, compute: dict) -> int:
        """How many of this compute's steps the cluster can run at once (its threads, or its GPUs)."""
        workers = self.client(compute).scheduler_info().get("workers", {}).values()
        if compute.get("gpu"):
            return max(1, sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers))
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def close(self) -> None:
        _RUNS.pop(self.run_id, None)
        self._stack.close()


_RUNS: dict[str, DaskClusters] = {}  # pipeline run id -> its clusters, for its step tasks


def run_on_dask(compute: dict, spec: StepSpec, plan: StepPlan, ctx: RunContext, upstream: dict[str, StepResult],
                task_run_id: str, log_extra: dict) -> StepResult:
    """From a step's task run: run its work on the compute's cluster and wait for it."""
    clusters = _RUNS.get(ctx.run_id)
    if clusters is None:
        raise RuntimeError(f"Step {spec.name!r}: no Dask clusters are open for pipeline run {ctx.run_id}.")
    if compute.get("address"):  # a remote worker keeps caches and built environments in its own home
        ctx = ctx.model_copy(update={"workspace": {**ctx.workspace, "home": None}})
    future = clusters.client(compute).submit(
        execute_on_dask_worker, spec, plan, ctx, upstream, task_run_id, log_extra, key=f"aml-step-{task_run_id}",
        pure=False, resources={"GPU": 1} if compute.get("gpu") else None)
    return future.result()


def execute_on_dask_worker(spec: StepSpec, plan: StepPlan, ctx: RunContext, upstream: dict[str, StepResult],
                           task_run_id: str, log_extra: dict) -> StepResult:
    """A step's work on a Dask worker. Its Prefect task run lives in the pipeline flow; its log lines go to
    that task run by id, and its metrics come back with the result (or the error) to be published there."""
    ensure_logging_setup()
    logger = PrefectLogAdapter(get_logger("prefect.task_runs"), extra=log_extra)
    return execute_step(spec, plan, ctx, upstream, task_run_id, logger=logger, flow_run_id=log_extra["flow_run_id"],
                        publish=False)


def _warm_dask_worker() -> None:
    for name in DASK_WORKER_MODULES:
        importlib.import_module(name)


def _dask_runner(compute: dict):
    # Dask is imported by runs that use it (~0.5 s): a runner process of another run does not pay for it
    from prefect_dask import DaskTaskRunner

    if compute.get("address"):
        return DaskTaskRunner(address=compute["address"])
    kwargs = {"n_workers": compute.get("n_workers") or 2, "threads_per_worker": compute.get("threads_per_worker") or 1}
    if compute.get("gpu"):
        return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster",
                              cluster_kwargs={**kwargs, "resources": {"GPU": 1}})
    # in-process workers: each step's script is a subprocess anyway, so threads give the same parallelism
    # and the cluster is up in a fraction of the time worker processes take to start
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={**kwargs, "processes": False, "dashboard_address": None})

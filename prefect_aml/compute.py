"""Compute targets the Azure ML way: `ComputeTarget`, `AmlCompute`, `DockerCompute`, `DaskCompute`.

    from prefect_aml import AmlCompute, ComputeTarget, ComputeTargetException
    try:
        cpu = ComputeTarget(workspace=ws, name="cpu-cluster")
    except ComputeTargetException:
        config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", min_nodes=0, max_nodes=4)
        cpu = ComputeTarget.create(ws, "cpu-cluster", config)
        cpu.wait_for_completion(show_output=True)

An `AmlCompute` is a Prefect work pool of type `process` whose concurrency limit is `max_nodes`;
its nodes are the workers polling the pool (`prefect-aml worker start cpu-cluster`). A
`DockerCompute` is a pool of type `docker` (prefect-docker): each step runs in a container of the
step's environment image. A `DaskCompute` is a Dask cluster: one started for each pipeline run
(`provisioning_configuration(n_workers, threads_per_worker, gpu)`), or an existing scheduler
(`attach_configuration(address="tcp://...")`). Steps name their compute (`compute_target=`) and
each runs where it says; steps without one run beside the pipeline flow.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import WorkerStatus
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from prefect_aml.blocks import saved_blocks
from prefect_aml.blocks.computes import ComputeTargetBlock, compute_block_name
from prefect_aml.exceptions import ComputeTargetException
from prefect_aml.names import PIPELINE_FLOW, STEP_FLOW

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

# memory of common Azure VM sizes (GiB), used as the container memory limit on Docker computes
_VM_MEMORY_GB = {
    "STANDARD_D1_V2": 3.5, "STANDARD_D2_V2": 7, "STANDARD_D3_V2": 14, "STANDARD_D4_V2": 28, "STANDARD_D5_V2": 56,
    "STANDARD_DS11_V2": 14, "STANDARD_DS12_V2": 28, "STANDARD_DS13_V2": 56, "STANDARD_DS14_V2": 112,
    "STANDARD_D2S_V3": 8, "STANDARD_D4S_V3": 16, "STANDARD_D8S_V3": 32, "STANDARD_D16S_V3": 64,
    "STANDARD_NC6": 56, "STANDARD_NC12": 112, "STANDARD_NC24": 224, "STANDARD_NC6S_V3": 112,
}
# when a pipeline step waits for a work pool that has no online worker, it fails after this long
WORKER_WAIT_ENV = "PREFECT_AML_WORKER_WAIT_SECONDS"
DEFAULT_WORKER_WAIT_S = 120.0


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ComputeTargetException(f"{what} must be an integer >= {minimum} (got {value!r}).")
    return value


class ComputeTargetProvisioningConfiguration:
    """What `ComputeTarget.create` makes: the settings of one compute."""

    compute_type = "AmlCompute"

    def __init__(self, **settings: Any):
        self.settings = settings

    def validate_configuration(self) -> None:
        s = self.settings
        if "min_nodes" in s:
            _check_int(s["min_nodes"], "min_nodes", 0)
        if s.get("max_nodes") is not None:
            _check_int(s["max_nodes"], "max_nodes", 1)
            if s.get("min_nodes", 0) > s["max_nodes"]:
                raise ComputeTargetException(
                    f"min_nodes ({s['min_nodes']}) is larger than max_nodes ({s['max_nodes']}): lower min_nodes.")
        if s.get("idle_seconds_before_scaledown") is not None:
            _check_int(s["idle_seconds_before_scaledown"], "idle_seconds_before_scaledown", 0)
        if s.get("n_workers") is not None:
            _check_int(s["n_workers"], "n_workers", 1)
        if s.get("threads_per_worker") is not None:
            _check_int(s["threads_per_worker"], "threads_per_worker", 1)
        address = s.get("address")
        if address is not None and (not isinstance(address, str) or "://" not in address):
            raise ComputeTargetException(
                f"Dask scheduler address {address!r} is not valid: give e.g. 'tcp://10.0.0.5:8786'.")


class ComputeTarget:
    """A compute target of the workspace; `ComputeTarget(ws, name)` returns the right subclass."""

    _type = "ComputeTarget"

    def __new__(cls, workspace: Workspace | None = None, name: str | None = None):
        if workspace is None or name is None:
            return super().__new__(cls)
        block = _load(workspace, name)
        if block is None:
            names = [b.compute_name for b in _all(workspace)]
            near = difflib.get_close_matches(name, names, n=1)
            raise ComputeTargetException(
                f"Compute target {name!r} was not found in workspace {workspace.name!r}."
                + (f" Did you mean {near[0]!r}?" if near else f" Known: {names}." if names else "")
                + f" Create it with ComputeTarget.create(ws, {name!r}, AmlCompute.provisioning_configuration(...)).")
        klass = _TYPES[block.compute_type]
        if not issubclass(klass, cls):
            raise ComputeTargetException(
                f"Compute target {name!r} is a {block.compute_type}, not a {cls.__name__}: use "
                f"ComputeTarget(ws, {name!r}) or {block.compute_type}(ws, {name!r}).")
        obj = super().__new__(klass)
        obj._bind(workspace, block)
        return obj

    def __init__(self, workspace: Workspace | None = None, name: str | None = None):
        if workspace is None or name is None:
            raise ComputeTargetException("Give the workspace and the compute's name: ComputeTarget(ws, 'cpu-cluster').")

    def _bind(self, workspace: Workspace, block: ComputeTargetBlock) -> None:
        self.workspace = workspace
        self._block = block
        self.name = block.compute_name
        self.type = block.compute_type
        self.vm_size = block.vm_size
        self.description = block.description
        self.tags = dict(block.tags)
        self.provisioning_state = "Succeeded"

    @property
    def work_pool(self) -> str | None:
        """The Prefect work pool whose workers run this compute's steps (None for Dask)."""
        return self._block.work_pool

    # -- create / attach / list
    @staticmethod
    def create(workspace: Workspace, name: str, provisioning_configuration) -> ComputeTarget:
        if not isinstance(provisioning_configuration, ComputeTargetProvisioningConfiguration):
            raise ComputeTargetException(
                f"ComputeTarget.create({name!r}, ...) needs a provisioning configuration, e.g. "
                "AmlCompute.provisioning_configuration(vm_size='STANDARD_D2_V2', max_nodes=4).")
        provisioning_configuration.validate_configuration()
        compute_block_name(name)
        block = provisioning_configuration._block(name)
        existing = _load(workspace, name)
        if existing is not None:
            same = _comparable(existing) == _comparable(block)
            if not same:
                raise ComputeTargetException(
                    f"Compute target {name!r} already exists with other settings ({existing.compute_type}); "
                    f"delete it first (ComputeTarget(ws, {name!r}).delete()) or choose another name.")
            return ComputeTarget(workspace, name)
        block.created = datetime.now(UTC).isoformat()
        if block.compute_type in ("AmlCompute", "DockerCompute"):
            block.work_pool = name
            _create_pool(workspace, block)
        with workspace.prefect():
            block.save(compute_block_name(name), overwrite=True, _sync=True)
        return ComputeTarget(workspace, name)

    @staticmethod
    def attach(workspace: Workspace, name: str, attach_configuration) -> ComputeTarget:
        return ComputeTarget.create(workspace, name, attach_configuration)

    @staticmethod
    def list(workspace: Workspace) -> list[ComputeTarget]:
        return [ComputeTarget(workspace, b.compute_name) for b in _all(workspace)]

    # -- state
    def get_status(self) -> ComputeStatus:
        return ComputeStatus(self._status())

    @property
    def status(self) -> ComputeStatus:
        return self.get_status()

    def _status(self) -> dict[str, Any]:
        return {"provisioningState": self.provisioning_state, "computeType": self.type, "vmSize": self.vm_size}

    def wait_for_completion(self, show_output: bool = False, min_node_count: int | None = None,
                            timeout_in_minutes: float = 20, is_delete_operation: bool = False) -> None:
        """Creation is immediate; with `min_node_count`, wait until that many nodes (workers) are online."""
        deadline = time.monotonic() + 60 * timeout_in_minutes
        while min_node_count:
            online = self._status().get("currentNodeCount", 0)
            if online >= min_node_count:
                break
            if time.monotonic() > deadline:
                raise ComputeTargetException(
                    f"Compute target {self.name!r} has {online} node(s) online after {timeout_in_minutes} min, "
                    f"fewer than min_node_count={min_node_count}. Start workers: {self._start_hint()}")
            time.sleep(1)
        if show_output:
            print(f"{self.name}: {self.provisioning_state}; " + json.dumps(self._status()))

    def _start_hint(self) -> str:
        return f"`prefect-aml worker start {self.name}`"

    def delete(self) -> None:
        with self.workspace.client() as client:
            if self.work_pool:
                for flow_name in (STEP_FLOW, PIPELINE_FLOW):  # prefect-aml's own deployments on the pool
                    try:
                        dep = client.read_deployment_by_name(f"{flow_name}/{self.work_pool}")
                        client.delete_deployment(dep.id)
                    except ObjectNotFound:
                        pass
                try:
                    client.delete_work_pool(self.work_pool)
                except ObjectNotFound:
                    pass
            try:
                client.delete_block_document(self._block._block_document_id)
            except ObjectNotFound:
                pass
        self.provisioning_state = "Deleting"

    def detach(self) -> None:
        self.delete()

    def serialize(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, **self._block.model_dump(
            exclude={"compute_name", "compute_type"}, exclude_none=True)}

    def _run_definition(self) -> dict[str, Any]:
        """What a pipeline run needs to send a step here (kept in the run's spec)."""
        b = self._block
        return {"name": b.compute_name, "type": b.compute_type, "pool": b.work_pool, "address": b.address,
                "n_workers": b.n_workers, "threads_per_worker": b.threads_per_worker, "gpu": b.gpu,
                "image": b.image, "volumes": list(b.volumes), "network_mode": b.network_mode, "max_nodes": b.max_nodes,
                "mem_limit": _mem_limit(b.vm_size) if b.compute_type == "DockerCompute" else None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workspace={self.workspace.name!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ComputeTarget) and (self.name, self.type) == (other.name, other.type)

    def __hash__(self) -> int:
        return hash((self.name, self.type))


class ComputeStatus:
    """`compute.get_status()`: a snapshot of the compute's state; `.serialize()` gives a dict."""

    def __init__(self, data: dict[str, Any]):
        self._data = data
        self.provisioning_state = data.get("provisioningState")
        self.current_node_count = data.get("currentNodeCount")
        self.node_state_counts = data.get("nodeStateCounts")

    def serialize(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return json.dumps(self._data, indent=2)


class AmlCompute(ComputeTarget):
    """A cluster of process workers: a Prefect work pool of type `process`."""

    _type = "AmlCompute"

    @staticmethod
    def provisioning_configuration(vm_size: str = "", vm_priority: str = "dedicated", min_nodes: int = 0,
                                   max_nodes: int | None = None, idle_seconds_before_scaledown: int | None = None,
                                   admin_username=None, admin_user_password=None, admin_user_ssh_key=None,
                                   vnet_resourcegroup_name=None, vnet_name=None, subnet_name=None, tags=None,
                                   description: str | None = None, remote_login_port_public_access="NotSpecified",
                                   identity_type=None, identity_id=None, location=None,
                                   enable_node_public_ip=True) -> PoolProvisioningConfiguration:
        return PoolProvisioningConfiguration(
            "AmlCompute", vm_size=vm_size or None, vm_priority=vm_priority, min_nodes=min_nodes,
            max_nodes=4 if max_nodes is None else max_nodes,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown, description=description, tags=tags or {})

    def _status(self) -> dict[str, Any]:
        return {**super()._status(), **_pool_status(self.workspace, self._block)}

    @staticmethod
    def supported_vmsizes(workspace: Workspace, location: str | None = None) -> list[dict[str, Any]]:
        return [{"name": k, "memoryGB": v} for k, v in sorted(_VM_MEMORY_GB.items())]


class DockerCompute(AmlCompute):
    """A cluster of Docker workers: a Prefect work pool of type `docker` (prefect-docker).

    Each step runs in a container of its environment's `docker.base_image` (else the compute's
    `image`); `volumes` and `network_mode` are the containers' (e.g. `"host"` to reach a server on
    loopback)."""

    _type = "DockerCompute"

    @staticmethod
    def provisioning_configuration(image: str | None = None, vm_size: str = "", min_nodes: int = 0,
                                   max_nodes: int | None = None, volumes: list[str] | None = None,
                                   network_mode: str | None = None, description: str | None = None,
                                   tags=None) -> PoolProvisioningConfiguration:
        return PoolProvisioningConfiguration(
            "DockerCompute", image=image, vm_size=vm_size or None, min_nodes=min_nodes,
            max_nodes=4 if max_nodes is None else max_nodes, volumes=list(volumes or []),
            network_mode=network_mode, description=description, tags=tags or {})


class DaskCompute(ComputeTarget):
    """A Dask cluster; steps on it run through `prefect_dask.DaskTaskRunner`.

    `provisioning_configuration` starts a `distributed.LocalCluster` (`dask_cuda.LocalCUDACluster`
    with `gpu=True`) for each pipeline run; `attach_configuration` uses a running scheduler. A step
    whose environment needs a GPU (`gpu=True` compute) asks Dask for a `GPU` worker resource, so it
    only lands on workers started with `--resources GPU=1`."""

    _type = "DaskCompute"

    @staticmethod
    def provisioning_configuration(n_workers: int = 2, threads_per_worker: int = 1, gpu: bool = False,
                                   description: str | None = None, tags=None) -> PoolProvisioningConfiguration:
        return PoolProvisioningConfiguration("DaskCompute", n_workers=n_workers, threads_per_worker=threads_per_worker,
                                             gpu=bool(gpu), description=description, tags=tags or {})

    @staticmethod
    def attach_configuration(address: str, gpu: bool = False, description: str | None = None,
                             tags=None) -> PoolProvisioningConfiguration:
        return PoolProvisioningConfiguration("DaskCompute", address=address, gpu=bool(gpu), description=description,
                                             tags=tags or {})

    def _status(self) -> dict[str, Any]:
        b = self._block
        status = {**super()._status(), "scaleSettings": {"n_workers": b.n_workers,
                                                         "threads_per_worker": b.threads_per_worker},
                  "gpu": b.gpu, "address": b.address}
        if not b.address:  # a cluster per pipeline run: nothing runs between runs
            return {**status, "currentNodeCount": 0}
        from distributed import Client  # Dask's client only when an attached cluster is asked (it is heavy)

        try:
            with Client(b.address, timeout=5) as client:
                workers = client.scheduler_info(n_workers=-1)["workers"]
        except Exception as err:  # refused, timed out, or something that is not a Dask scheduler answered
            return {**status, "provisioningState": "Unreachable", "currentNodeCount": 0,
                    "error": f"{type(err).__name__}: {err}"[:500]}
        return {**status, "currentNodeCount": len(workers),
                "workers": [{"address": a, "resources": w.get("resources", {})} for a, w in workers.items()]}

    def _start_hint(self) -> str:
        return f"`dask worker {self._block.address}`"


class PoolProvisioningConfiguration(ComputeTargetProvisioningConfiguration):
    def __init__(self, compute_type: str, **settings: Any):
        super().__init__(**settings)
        self.compute_type = compute_type

    def _block(self, name: str) -> ComputeTargetBlock:
        fields = {k: v for k, v in self.settings.items() if v is not None}
        return ComputeTargetBlock(compute_name=name, compute_type=self.compute_type, **fields)


_TYPES: dict[str, type[ComputeTarget]] = {"AmlCompute": AmlCompute, "DockerCompute": DockerCompute,
                                          "DaskCompute": DaskCompute}


def _comparable(block: ComputeTargetBlock) -> dict[str, Any]:
    skip = {"created", "work_pool", "description", "tags"}
    return {k: getattr(block, k) for k in ComputeTargetBlock.model_fields if k not in skip}


def _mem_limit(vm_size: str | None) -> str | None:
    gb = _VM_MEMORY_GB.get((vm_size or "").upper())
    return f"{int(gb * 1024)}m" if gb else None


def _load(workspace: Workspace, name: str) -> ComputeTargetBlock | None:
    block_name = compute_block_name(name)
    with workspace.client() as client:
        try:
            doc = client.read_block_document_by_name(block_name, ComputeTargetBlock.get_block_type_slug())
        except ObjectNotFound:
            return None
    return ComputeTargetBlock._from_block_document(doc)


def _all(workspace: Workspace) -> list[ComputeTargetBlock]:
    with workspace.client() as client:
        return sorted(saved_blocks(client, ComputeTargetBlock), key=lambda b: b.compute_name)


def _create_pool(workspace: Workspace, block: ComputeTargetBlock) -> None:
    """The compute's work pool (its concurrency limit is max_nodes); the deployments that send prefect-aml's
    flows to it are made when a step or pipeline is first sent there."""
    # the worker classes only to read their job templates (they load Prefect's worker machinery)
    if block.compute_type == "DockerCompute":
        from prefect_docker.worker import DockerWorker as worker
    else:
        from prefect.workers.process import ProcessWorker as worker
    template = worker.get_default_base_job_template()
    props = template["variables"]["properties"]
    if block.compute_type == "DockerCompute":
        for key, value in (("image", block.image), ("volumes", block.volumes or None),
                           ("network_mode", block.network_mode), ("mem_limit", _mem_limit(block.vm_size)),
                           ("image_pull_policy", "IfNotPresent" if block.image else None)):
            if value is not None and key in props:
                props[key]["default"] = value
    description = (block.description or f"prefect-aml compute {block.compute_name}") + (
        f" (vm_size {block.vm_size})" if block.vm_size else "")
    with workspace.client() as client:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=block.work_pool, type=worker.type, base_job_template=template, description=description,
                concurrency_limit=block.max_nodes))
        except ObjectAlreadyExists:
            pool = client.read_work_pool(block.work_pool)
            if pool.type != worker.type:
                raise ComputeTargetException(
                    f"A Prefect work pool named {block.work_pool!r} already exists with type {pool.type!r}; a "
                    f"{block.compute_type} needs type {worker.type!r}. Delete the pool or choose another name."
                ) from None
            client.update_work_pool(block.work_pool, WorkPoolUpdate(concurrency_limit=block.max_nodes,
                                                                    description=description))


def _pool_status(workspace: Workspace, block: ComputeTargetBlock) -> dict[str, Any]:
    with workspace.client() as client:
        try:
            pool = client.read_work_pool(block.work_pool)
        except ObjectNotFound:
            return {"provisioningState": "Failed", "error": f"work pool {block.work_pool!r} is missing",
                    "currentNodeCount": 0}
        workers = client.read_workers_for_work_pool(block.work_pool)
    online = [w for w in workers if w.status == WorkerStatus.ONLINE]
    return {"workPool": block.work_pool, "poolType": pool.type, "poolStatus": str(getattr(pool.status, "value", "")),
            "currentNodeCount": len(online), "targetNodeCount": block.max_nodes,
            "scaleSettings": {"minNodeCount": block.min_nodes, "maxNodeCount": block.max_nodes,
                              "nodeIdleTimeBeforeScaleDown": block.idle_seconds_before_scaledown},
            "nodeStateCounts": {"idleNodeCount": len(online), "offlineNodeCount": len(workers) - len(online)},
            "workers": [w.name for w in online]}


def list_compute_targets(workspace: Workspace) -> dict[str, ComputeTarget]:
    return {t.name: t for t in ComputeTarget.list(workspace)}


def resolve_compute(workspace: Workspace, name: str | None, step_name: str) -> dict[str, Any] | None:
    """The run definition of a step's compute (None: beside the pipeline flow); unknown names fail here."""
    if name in (None, "", "local"):
        return None
    try:
        definition = ComputeTarget(workspace, name)._run_definition()
    except ComputeTargetException as err:
        raise ComputeTargetException(f"Step {step_name!r}: {err}") from None
    if definition["type"] == "DaskCompute" and definition["gpu"] and not definition["address"]:
        if importlib.util.find_spec("dask_cuda") is None:  # the cluster starts beside the pipeline flow, here
            raise ComputeTargetException(
                f"Step {step_name!r}: compute {name!r} starts a GPU Dask cluster (gpu=True), which needs dask-cuda "
                "and an NVIDIA GPU on this machine: pip install 'prefect-aml[gpu]', or attach a running GPU "
                "cluster with DaskCompute.attach_configuration(address=..., gpu=True).")
    return definition

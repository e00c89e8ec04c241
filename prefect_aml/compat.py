"""Azure ML (SDK v1) module paths, resolved to prefect_aml: v1 code runs with one added line.

```python
import prefect_aml.compat          # the one line; or `prefect-aml compat enable` for a whole environment
from azureml.core import Workspace, Experiment, Datastore, Dataset
from azureml.pipeline.steps import PythonScriptStep
```

An import hook (a `sys.meta_path` finder) serves `azureml.core`, `azureml.pipeline.core`,
`azureml.pipeline.steps`, `azureml.data`, ... as modules whose names are prefect_aml's classes, under
the v1 names. Step scripts get the same aliases without the line: their `PYTHONPATH` starts with a
tiny `azureml` package (`prefect_aml/_shim/`) that installs the hook on first import, and
`prefect-aml compat enable` puts that folder on the environment's path with a `.pth` file.

Azure-only services (AutoML, HyperDrive, Databricks, Data Lake Analytics, Kusto, Azure Batch, MPI,
...) import fine and raise `UnsupportedFeatureError` naming what to use instead when constructed.
If the real Azure ML SDK is installed, nothing is shadowed: importing this module says so and stops.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any

import prefect_aml
from prefect_aml import environment
from prefect_aml._azureml import SHIM_DIR, real_sdk
from prefect_aml.deployments import endpoint, schedule
from prefect_aml.exceptions import UserErrorException
from prefect_aml.pipeline.data import InputPort
from prefect_aml.runs import PortDataReference
from prefect_aml.widgets import RunDetails

__all__ = ["MODULES", "SHIM_DIR", "UNSUPPORTED", "RealAzureMLInstalledError", "UnsupportedFeatureError", "install",
           "real_sdk"]


class UnsupportedFeatureError(UserErrorException):
    """An Azure-only service or configuration that prefect-aml does not run; the message says what to use."""


class RealAzureMLInstalledError(ImportError):
    """The Azure ML SDK itself is installed here; prefect_aml.compat does not shadow it."""


def _unsupported(name: str, what: str, instead: str) -> type:
    """A class that imports fine and fails clearly when used."""

    def fail(*_a: Any, **_k: Any):
        raise UnsupportedFeatureError(f"{name}: {what} is an Azure service and is not supported by prefect-aml; "
                                      f"{instead}.")

    def init(self, *a: Any, **k: Any) -> None:
        fail()

    attrs: dict[str, Any] = {"__init__": init, "__doc__": f"Not supported here ({what}): {instead}.",
                             "__module__": "prefect_aml.compat"}
    for method in ("attach_configuration", "provisioning_configuration", "create", "get", "list", "submit"):
        attrs[method] = staticmethod(fail)
    return type(name, (), attrs)


_STEP_INSTEAD = "use a PythonScriptStep or CommandStep running the equivalent code on an AmlCompute or DaskCompute"
_COMPUTE_INSTEAD = "use an AmlCompute (a Prefect work pool), a DockerCompute or a DaskCompute"
UNSUPPORTED: dict[str, tuple[str, str]] = {
    # steps
    "AutoMLStep": ("Automated ML", "train with your own library in a PythonScriptStep (e.g. FLAML or "
                                   "scikit-learn's search) on any compute"),
    "HyperDriveStep": ("HyperDrive tuning", "run a search library (e.g. Optuna) in a PythonScriptStep, or fan "
                                            "trials out as steps on a DaskCompute"),
    "DatabricksStep": ("Azure Databricks", _STEP_INSTEAD),
    "AdlaStep": ("Azure Data Lake Analytics", _STEP_INSTEAD),
    "KustoStep": ("Azure Data Explorer (Kusto)", _STEP_INSTEAD),
    "AzureBatchStep": ("Azure Batch", _STEP_INSTEAD),
    "DataTransferStep": ("Azure Data Factory transfer", "copy with Datastore.upload/download (fsspec) in a "
                                                        "PythonScriptStep"),
    "MpiStep": ("MPI jobs", "use a DaskCompute, or one step per worker"),
    "EstimatorStep": ("Estimators (deprecated in v1)", "use a PythonScriptStep with a RunConfiguration"),
    "ParallelRunStep": ("ParallelRunStep", "fan the work out over a DaskCompute, one step per partition"),
    "ModuleStep": ("Modules", "use a PythonScriptStep"),
    "SynapseSparkStep": ("Azure Synapse Spark", _STEP_INSTEAD),
    # computes
    "DatabricksCompute": ("Azure Databricks", _COMPUTE_INSTEAD),
    "AdlaCompute": ("Azure Data Lake Analytics", _COMPUTE_INSTEAD),
    "KustoCompute": ("Azure Data Explorer (Kusto)", _COMPUTE_INSTEAD),
    "BatchCompute": ("Azure Batch", _COMPUTE_INSTEAD),
    "HDInsightCompute": ("Azure HDInsight", _COMPUTE_INSTEAD),
    "AksCompute": ("Azure Kubernetes Service", _COMPUTE_INSTEAD),
    "SynapseCompute": ("Azure Synapse", _COMPUTE_INSTEAD),
    "RemoteCompute": ("remote VMs over SSH", "start `prefect-aml worker start <compute>` on that machine"),
    "ComputeInstance": ("compute instances", "use an AmlCompute and start a worker on your machine"),
    # distributed configurations
    "MpiConfiguration": ("MPI distribution", "use a DaskCompute, or one step per worker"),
    "PyTorchConfiguration": ("PyTorch distribution", "use a DaskCompute, or one step per worker"),
    "TensorflowConfiguration": ("TensorFlow distribution", "use a DaskCompute, or one step per worker"),
}


def _pa():
    return prefect_aml


def _names(*names: str) -> Callable[[], dict[str, Any]]:
    """Attributes taken from prefect_aml (and its submodules) by name; unsupported names become stubs."""

    def build() -> dict[str, Any]:
        pa = _pa()
        extra = {"ScriptRunConfig": environment.ScriptRunConfig, "PortDataReference": PortDataReference,
                 "PipelineVersion": endpoint.PipelineVersion, "TimeZone": schedule.TimeZone,
                 "Dataset": pa.Dataset, "DatasetConsumptionConfig": InputPort,
                 "RunDetails": RunDetails, "UnsupportedFeatureError": UnsupportedFeatureError}
        out: dict[str, Any] = {}
        for name in names:
            if name in UNSUPPORTED:
                out[name] = _unsupported(name, *UNSUPPORTED[name])
            elif name in extra:
                out[name] = extra[name]
            else:
                out[name] = getattr(pa, name)
        return out

    return build


_CORE = ("Workspace", "Experiment", "Datastore", "Dataset", "Environment", "Run", "RunConfiguration",
         "ScriptRunConfig", "ComputeTarget", "PipelineRun", "StepRun")
_STEPS = ("PythonScriptStep", "CommandStep", *[n for n in UNSUPPORTED if n.endswith("Step")])
_COMPUTES = ("ComputeTarget", "AmlCompute", "DockerCompute", "DaskCompute",
             *[n for n in UNSUPPORTED if n.endswith("Compute") or n == "ComputeInstance"])
_EXCEPTIONS = ("AzureMLException", "UserErrorException", "ComputeTargetException", "WorkspaceException",
               "DatastoreException", "ActivityFailedException", "PipelineValidationError", "StepFailedError",
               "DatasetChangedError", "EnvironmentException", "UnsupportedFeatureError")
_PIPELINE_CORE = ("Pipeline", "PipelineData", "PipelineParameter", "StepSequence", "PublishedPipeline",
                  "PipelineEndpoint", "PipelineVersion", "Schedule", "ScheduleRecurrence", "TimeZone", "PipelineRun",
                  "StepRun", "PortDataReference")

MODULES: dict[str, Callable[[], dict[str, Any]]] = {
    "azureml": lambda: {},
    "azureml.core": lambda: {**_names(*_CORE)(), "VERSION": _pa().VERSION, "__version__": _pa().VERSION},
    "azureml.core.workspace": _names("Workspace"),
    "azureml.core.experiment": _names("Experiment"),
    "azureml.core.run": _names("Run"),
    "azureml.core.compute": _names(*_COMPUTES),
    "azureml.core.compute_target": lambda: {"ComputeTargetException": _pa().ComputeTargetException},
    "azureml.core.runconfig": lambda: {**_names("RunConfiguration", "MpiConfiguration", "PyTorchConfiguration",
                                                "TensorflowConfiguration")(),
                                       "DEFAULT_CPU_IMAGE": _pa().DEFAULT_CPU_IMAGE,
                                       "DEFAULT_GPU_IMAGE": _pa().DEFAULT_GPU_IMAGE},
    "azureml.core.script_run_config": _names("ScriptRunConfig"),
    "azureml.core.conda_dependencies": _names("CondaDependencies"),
    "azureml.core.environment": _names("Environment"),
    "azureml.core.datastore": _names("Datastore"),
    "azureml.core.dataset": _names("Dataset"),
    "azureml.data": _names("OutputFileDatasetConfig", "FileDataset", "TabularDataset"),
    "azureml.data.output_dataset_config": _names("OutputFileDatasetConfig", "OutputTabularDatasetConfig"),
    "azureml.data.data_reference": _names("DataReference"),
    "azureml.data.datapath": _names("DataPath", "DataPathComputeBinding"),
    "azureml.data.dataset_consumption_config": _names("DatasetConsumptionConfig"),
    "azureml.data.file_dataset": _names("FileDataset"),
    "azureml.data.tabular_dataset": _names("TabularDataset"),
    "azureml.pipeline": lambda: {},
    "azureml.pipeline.core": _names(*_PIPELINE_CORE),
    "azureml.pipeline.core.graph": _names("PipelineParameter", "PipelineData"),
    "azureml.pipeline.core.schedule": _names("Schedule", "ScheduleRecurrence", "TimeZone"),
    "azureml.pipeline.core.pipeline": _names("Pipeline"),
    "azureml.pipeline.core.run": _names("PipelineRun", "StepRun"),
    "azureml.pipeline.steps": _names(*_STEPS),
    "azureml.exceptions": _names(*_EXCEPTIONS),
    "azureml.widgets": _names("RunDetails"),
}


_MODULE_HINTS = {
    "azureml.train": " azureml.train (estimators, Automated ML, HyperDrive) is Azure-only: run your script in a "
                     "PythonScriptStep or ScriptRunConfig, and any tuning or AutoML library inside a step.",
    "azureml.contrib": " The contrib packages are Azure-only.",
    "azureml.opendatasets": " Download the data and register it with Dataset.File / Dataset.Tabular instead.",
    "azureml.dataprep": " Datasets are read with pyarrow and pandas here: use Dataset.Tabular / Dataset.File.",
}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the modules in MODULES; any other `azureml.*` name is not found (a clear ImportError)."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname in MODULES:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        if fullname.startswith("azureml."):
            hint = next((h for prefix, h in _MODULE_HINTS.items() if fullname.startswith(prefix)), "")
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: prefect_aml.compat serves the Azure ML v1 pipeline modules "
                f"({', '.join(m for m in MODULES if m.count('.') >= 1)}), not this one.{hint}", name=fullname)
        return None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []  # a package: its submodules come from this finder too
        module.__dict__.update(MODULES[module.__name__]())
        module.__doc__ = f"{module.__name__}, served by prefect_aml.compat (Azure ML v1 names on Prefect)."


_FINDER = _Finder()


def install() -> None:
    """Make `azureml.*` imports resolve to prefect_aml (idempotent). Refuses when the real SDK is installed."""
    found = real_sdk()
    if found:
        raise RealAzureMLInstalledError(
            f"The Azure ML SDK ({found}) is installed in this Python environment; prefect_aml.compat does not "
            "shadow it. Use prefect_aml's own imports here, or a separate environment without the SDK.")
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    shim = sys.modules.get("azureml")
    if shim is not None and getattr(shim, "__spec__", None) is not None and shim.__spec__.loader is not _FINDER:
        # the shim package was imported first (a step script, or the .pth): its submodules come from the finder
        shim.__path__ = []


install()

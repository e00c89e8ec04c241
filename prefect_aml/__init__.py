"""prefect-aml: Azure Machine Learning (SDK v1) pipelines on Prefect 3.

    from prefect_aml import Workspace, Datastore, Experiment, Pipeline, PythonScriptStep, OutputFileDatasetConfig
    ws = Workspace.from_config()
    prepped = OutputFileDatasetConfig()
    prep = PythonScriptStep("prepare.py", source_directory="src", arguments=["--out", prepped])
    train = PythonScriptStep("train.py", source_directory="src", arguments=["--data", prepped.as_input()])
    run = Experiment(ws, "demo").submit(Pipeline(ws, [prep, train]))
    run.wait_for_completion()
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
VERSION = __version__

# every public name and the module it lives in: imported when first used (PEP 562), so that a step's
# process, an engine or a script that needs one name does not load Prefect's whole client side
_PUBLIC: dict[str, str] = {name: module for module, names in {
    "prefect_aml.blocks.datastores": ("AzureBlobDatastore", "AzureDataLakeGen2Datastore", "LocalDatastore",
        "S3Datastore"),
    "prefect_aml.compute": ("AmlCompute", "ComputeTarget", "DaskCompute", "DockerCompute"),
    "prefect_aml.dataset": ("Dataset", "FileDataset", "MountContext", "TabularDataset"),
    "prefect_aml.datastore": ("Datastore",),
    "prefect_aml.deployments.endpoint": ("PipelineEndpoint", "PipelineVersion"),
    "prefect_aml.deployments.published": ("PublishedPipeline",),
    "prefect_aml.deployments.schedule": ("Schedule", "ScheduleException", "ScheduleRecurrence"),
    "prefect_aml.environment": ("CondaDependencies", "DEFAULT_CPU_IMAGE", "DEFAULT_GPU_IMAGE",
        "Environment", "EnvironmentException", "RunConfiguration"),
    "prefect_aml.exceptions": ("ActivityFailedException", "AzureMLException", "CircularDependencyError",
        "ComputeTargetException", "DatasetChangedError", "DatastoreException", "OutputNotUniqueError",
        "PipelineValidationError", "PublishedPipelineDisabledError", "StepFailedError",
        "UserErrorException", "WorkspaceException"),
    "prefect_aml.pipeline": ("CommandStep", "DataPath", "DataPathComputeBinding", "DataReference",
        "OutputFileDatasetConfig", "OutputTabularDatasetConfig", "Pipeline", "PipelineData",
        "PipelineParameter", "PythonScriptStep", "StepSequence"),
    "prefect_aml.runs": ("Experiment", "PipelineRun", "Run", "StepRun"),
    "prefect_aml.workspace": ("Workspace",),
}.items() for name in names
}
__all__ = ["VERSION", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_aml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})

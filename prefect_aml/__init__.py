"""prefect-aml: Azure Machine Learning (SDK v1) pipelines on Prefect 3.

    from prefect_aml import Workspace, Datastore, Experiment, Pipeline, PythonScriptStep, OutputFileDatasetConfig
    ws = Workspace.from_config()
    prepped = OutputFileDatasetConfig()
    prep = PythonScriptStep("prepare.py", source_directory="src", arguments=["--out", prepped])
    train = PythonScriptStep("train.py", source_directory="src", arguments=["--data", prepped.as_input()])
    run = Experiment(ws, "demo").submit(Pipeline(ws, [prep, train]))
    run.wait_for_completion()
"""

from prefect_aml import _tls
from prefect_aml.blocks.datastores import (
    AzureBlobDatastore,
    AzureDataLakeGen2Datastore,
    LocalDatastore,
    S3Datastore,
)
from prefect_aml.compute import AmlCompute, ComputeTarget, DaskCompute, DockerCompute
from prefect_aml.dataset import Dataset, FileDataset, MountContext, TabularDataset
from prefect_aml.datastore import Datastore
from prefect_aml.deployments.endpoint import PipelineEndpoint, PipelineVersion
from prefect_aml.deployments.published import PublishedPipeline
from prefect_aml.deployments.schedule import Schedule, ScheduleException, ScheduleRecurrence
from prefect_aml.environment import (
    DEFAULT_CPU_IMAGE,
    DEFAULT_GPU_IMAGE,
    CondaDependencies,
    Environment,
    EnvironmentException,
    RunConfiguration,
)
from prefect_aml.exceptions import (
    ActivityFailedException,
    AzureMLException,
    CircularDependencyError,
    ComputeTargetException,
    DatasetChangedError,
    DatastoreException,
    OutputNotUniqueError,
    PipelineValidationError,
    PublishedPipelineDisabledError,
    StepFailedError,
    UserErrorException,
    WorkspaceException,
)
from prefect_aml.pipeline import (
    CommandStep,
    DataPath,
    DataPathComputeBinding,
    DataReference,
    OutputFileDatasetConfig,
    OutputTabularDatasetConfig,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PythonScriptStep,
    StepSequence,
    port,
)
from prefect_aml.runs import Experiment, PipelineRun, Run, StepRun
from prefect_aml.workspace import Workspace

__version__ = "0.1.0"
VERSION = __version__

__all__ = [
    "DEFAULT_CPU_IMAGE", "DEFAULT_GPU_IMAGE", "VERSION", "ActivityFailedException", "AmlCompute",
    "AzureBlobDatastore", "ComputeTarget", "CondaDependencies", "DaskCompute", "DockerCompute", "Environment",
    "EnvironmentException", "RunConfiguration", "AzureDataLakeGen2Datastore", "AzureMLException",
    "CircularDependencyError", "CommandStep", "ComputeTargetException", "DataPath", "DataPathComputeBinding",
    "DataReference", "Dataset", "DatasetChangedError", "Datastore", "DatastoreException", "Experiment",
    "FileDataset", "LocalDatastore", "MountContext", "OutputFileDatasetConfig", "OutputNotUniqueError",
    "OutputTabularDatasetConfig", "Pipeline", "PipelineData", "PipelineParameter", "PipelineRun",
    "PipelineValidationError", "PythonScriptStep", "Run", "S3Datastore", "StepFailedError", "StepRun",
    "StepSequence", "TabularDataset", "UserErrorException", "Workspace", "WorkspaceException",
    "PipelineEndpoint", "PipelineVersion", "PublishedPipeline", "PublishedPipelineDisabledError", "Schedule",
    "ScheduleException", "ScheduleRecurrence",
]

_tls.share()  # Prefect's API clients share one TLS context per CA bundle (see _tls)
port.install("prefect_aml.verbs")  # Pipeline.submit/publish/explain_reuse: the Prefect side, loaded on first use

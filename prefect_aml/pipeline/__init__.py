"""What the user builds: pipelines, steps, parameters and data references. No network calls here."""

from prefect_aml.pipeline import port
from prefect_aml.pipeline.data import (
    DataPath,
    DataPathComputeBinding,
    DataReference,
    InputPort,
    OutputFileDatasetConfig,
    OutputTabularDatasetConfig,
    PipelineData,
)
from prefect_aml.pipeline.params import PipelineParameter
from prefect_aml.pipeline.pipeline import Pipeline, StepSequence
from prefect_aml.pipeline.spec import PipelineSpec, StepSpec
from prefect_aml.pipeline.steps import CommandStep, PipelineStep, PythonScriptStep

__all__ = [
    "CommandStep", "DataPath", "DataPathComputeBinding", "DataReference", "InputPort", "OutputFileDatasetConfig",
    "OutputTabularDatasetConfig", "Pipeline", "PipelineData", "PipelineParameter", "PipelineSpec", "PipelineStep",
    "PythonScriptStep", "StepSequence", "StepSpec", "port",
]

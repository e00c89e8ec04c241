"""`prefect_aml.compat`: v1 module paths, the .pth switch, and never shadowing a real Azure ML SDK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _py(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd="/")


def test_v1_module_paths_resolve_to_prefect_aml():
    out = _py("import prefect_aml, prefect_aml.compat\n"
              "from azureml.core import Workspace, Experiment, Datastore, Dataset, Environment, Run, RunConfiguration, "
              "ScriptRunConfig, VERSION\n"
              "from azureml.core.compute import ComputeTarget, AmlCompute\n"
              "from azureml.core.compute_target import ComputeTargetException\n"
              "from azureml.core.runconfig import DEFAULT_CPU_IMAGE\n"
              "from azureml.core.conda_dependencies import CondaDependencies\n"
              "from azureml.data import OutputFileDatasetConfig\n"
              "from azureml.data.datapath import DataPath, DataPathComputeBinding\n"
              "from azureml.data.data_reference import DataReference\n"
              "from azureml.data.dataset_consumption_config import DatasetConsumptionConfig\n"
              "from azureml.pipeline.core import Pipeline, PipelineData, PublishedPipeline, PipelineEndpoint\n"
              "from azureml.pipeline.core.graph import PipelineParameter\n"
              "from azureml.pipeline.core.schedule import Schedule, ScheduleRecurrence, TimeZone\n"
              "from azureml.pipeline.steps import PythonScriptStep, CommandStep\n"
              "from azureml.exceptions import ComputeTargetException as E\n"
              "from azureml.widgets import RunDetails\n"
              "assert Workspace is prefect_aml.Workspace and E is ComputeTargetException and VERSION == prefect_aml.VERSION\n"
              "assert Pipeline is prefect_aml.Pipeline and PythonScriptStep is prefect_aml.PythonScriptStep\n"
              "try:\n    import azureml.train.automl\nexcept ImportError as err:\n    print(err)\n")
    assert out.returncode == 0, out.stderr
    assert "prefect_aml.compat serves" in out.stdout and "Azure-only" in out.stdout


def test_compat_enable_makes_azureml_importable_everywhere_and_disable_undoes_it():
    probe = "import azureml.core, prefect_aml; print(azureml.core.Workspace is prefect_aml.Workspace)"
    assert _py(probe).returncode != 0  # nothing added: no azureml
    enabled = subprocess.run([str(BIN / "prefect-aml"), "compat", "enable"], capture_output=True, text=True)
    try:
        assert enabled.returncode == 0, enabled.stderr
        out = _py(probe)
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    finally:
        disabled = subprocess.run([str(BIN / "prefect-aml"), "compat", "disable"], capture_output=True, text=True)
    assert "disabled" in disabled.stdout
    assert _py(probe).returncode != 0


def test_a_real_azure_ml_sdk_is_never_shadowed(tmp_path):
    """With azureml-core installed, compat refuses (and so do step scripts' shim and `compat enable`)."""
    dist = tmp_path / "azureml_core-1.57.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: azureml-core\nVersion: 1.57.0\n")
    env = {"PYTHONPATH": str(tmp_path)}
    out = _py("import prefect_aml.compat", **env)
    assert out.returncode != 0 and "azureml-core 1.57.0" in out.stderr and "does not shadow it" in out.stderr
    out = _py("from prefect_aml.tasks.step import _azureml_shim; print(_azureml_shim())", **env)
    assert out.stdout.strip() == "None"  # steps get no alias either
    enabled = subprocess.run([str(BIN / "prefect-aml"), "compat", "enable"], capture_output=True, text=True,
                             env={**os.environ, **env})
    assert enabled.returncode == 2 and "does not shadow it" in enabled.stderr


def test_script_run_config_and_unsupported_services():
    from prefect_aml import CommandStep, UserErrorException
    from prefect_aml.compat import UNSUPPORTED, UnsupportedFeatureError, _unsupported
    from prefect_aml.environment import RunConfiguration, ScriptRunConfig
    from prefect_aml.pipeline.steps import _compute_name

    src = ScriptRunConfig(source_directory="src", script="train.py", arguments=["--lr", 0.1], compute_target="cpu")
    step = CommandStep(name="train", runconfig=src)
    assert step.command == ["python", "train.py", "--lr", 0.1] and step.source_directory == "src"
    assert _compute_name(step._compute()) == "cpu"
    assert isinstance(src.run_config, RunConfiguration) and src.target == "cpu"
    with pytest.raises(UserErrorException, match="not both"):
        ScriptRunConfig("src", script="a.py", command="python a.py")
    for name, (what, instead) in UNSUPPORTED.items():
        cls = _unsupported(name, what, instead)
        with pytest.raises(UnsupportedFeatureError, match=f"{name}: .* not supported by prefect-aml; "):
            cls()

"""Built environments without building: the specification of a definition, the interpreter chosen, a step
process's variables, and the light step runtime (run with this interpreter, only the runtime on its path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from prefect_aml import CondaDependencies, Environment, envbuild
from prefect_aml._runctx import collect_metrics
from prefect_aml.exceptions import EnvironmentException
from prefect_aml.pipeline.spec import StepSpec
from prefect_aml.runs import Run as FullRun
from prefect_aml.tasks.reuse import components_of, explain, key_of


def _definition(pip=None, conda=None, python=None, user_managed=False, name="demo") -> dict:
    env = Environment(name)
    env.python.user_managed_dependencies = user_managed
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=pip, conda_packages=conda,
                                                             python_version=python)
    return env._definition()


def test_spec_maps_conda_names_skips_azureml_and_keeps_what_the_runtime_needs():
    spec = envbuild.spec_of(_definition(
        pip=["azureml-sdk", "azureml-dataprep[fuse,pandas]", "tabulate==0.9.0", "--extra-index-url https://x/simple"],
        conda=["pandas", "scikit-learn", "pytorch=2.1", "pip", "python=3.8"]))
    assert spec.requirements == ("--extra-index-url https://x/simple", "pandas", "pyarrow", "scikit-learn",
                                 "tabulate==0.9.0", "torch==2.1.*")
    assert spec.skipped == ("azureml-sdk", "azureml-dataprep[fuse,pandas]")
    assert spec.python == "3.8" and spec.origins["torch==2.1.*"] == "pytorch=2.1"
    assert spec.describe("torch==2.1.*") == "conda package 'pytorch=2.1' (PyPI 'torch==2.1.*')"
    # the same packages in another order (or given twice) are the same environment
    again = envbuild.spec_of(_definition(pip=["tabulate==0.9.0", "azureml-dataprep[pandas]", "--extra-index-url "
                                              "https://x/simple", "scikit-learn"], conda=["pytorch=2.1", "pandas",
                                                                                          "pandas"], python="3.8.13"))
    assert again.hash == spec.hash
    assert envbuild.spec_of(_definition(pip=["tabulate==0.8.10"])).hash != envbuild.spec_of(
        _definition(pip=["tabulate==0.9.0"])).hash


def test_nothing_to_build_runs_in_the_workers_python():
    assert envbuild.spec_of(_definition(pip=["tabulate"], user_managed=True)) is None
    assert envbuild.spec_of(_definition(pip=["azureml-defaults", "azureml-core"])) is None
    assert envbuild.spec_of(Environment("empty")._definition()) is None
    assert envbuild.spec_of({"name": "x", "variables": {}}) is None  # a runconfig without an Environment
    assert envbuild.docker_job_variables(Environment("empty")._definition()) == {}


@pytest.mark.parametrize("conda, pypi", [
    ("numpy", "numpy"), ("numpy=1.21", "numpy==1.21.*"), ("numpy=1.21.0=py39h5d0ccc0_0", "numpy==1.21.0.*"),
    ("numpy==1.21.0", "numpy==1.21.0"), ("numpy==1.21.0=py39h_0", "numpy==1.21.0"), ("numpy >=1.20,<2", "numpy>=1.20,<2"),
    ("numpy 1.21", "numpy==1.21.*"), ("conda-forge::numpy=1.21.*", "numpy==1.21.*"), ("py-xgboost", "xgboost"),
    ("msgpack-python=1.0", "msgpack==1.0.*"),
])
def test_conda_match_specs_become_pypi_requirements(conda, pypi):
    assert envbuild.spec_of(_definition(conda=[conda])).requirements == (pypi,)


def test_a_conda_only_package_is_refused_naming_it():
    with pytest.raises(EnvironmentException, match=r"'demo': conda package 'cudatoolkit=11.3' has no PyPI "
                                                   r"equivalent.*torch"):
        envbuild.spec_of(_definition(conda=["numpy", "cudatoolkit=11.3"]))


def test_the_nearest_python_is_chosen_and_strict_refuses(monkeypatch):
    here = [("3.11.7", "/py311"), ("3.12.1", "/py312"), ("3.8.18", "/py38")]
    nearest = envbuild.nearest_python
    assert nearest(None, here) == ("3.11.7", "/py311", True)
    assert nearest(("==", (3, 12)), here) == ("3.12.1", "/py312", True)
    assert nearest(("==", (3, 6)), here) == ("3.8.18", "/py38", False)
    assert nearest(("==", (3, 9)), here) == ("3.8.18", "/py38", False)
    assert nearest(("==", (3, 10)), here) == ("3.11.7", "/py311", False)
    assert nearest((">=", (3, 9)), here) == ("3.11.7", "/py311", True)  # the first that fits: this interpreter
    assert nearest(("==", (3, 13)), here) == ("3.12.1", "/py312", False)

    current = ".".join(map(str, sys.version_info[:3]))
    monkeypatch.setattr(envbuild, "available_pythons", lambda: [(current, sys.executable)])
    spec = envbuild.spec_of(_definition(pip=["tabulate"], python="3.6.2"))
    path, version, note = envbuild.choose_python(spec, strict=False)
    assert (path, version) == (sys.executable, current)
    assert "asks for Python 3.6.2" in note and f"nearest available, Python {current}" in note and "3.8 or newer" in note
    with pytest.raises(EnvironmentException, match=r"'demo' asks for Python 3.6.2, which is not available.*strict"):
        envbuild.choose_python(spec, strict=True)
    monkeypatch.setenv(envbuild.STRICT_ENV, "1")
    with pytest.raises(EnvironmentException, match="strict mode"):
        envbuild.choose_python(spec)
    own = envbuild.spec_of(_definition(pip=["tabulate"], python=".".join(map(str, sys.version_info[:2]))))
    assert envbuild.choose_python(own) == (sys.executable, current, None)  # no look-up, no note


def test_a_step_process_sees_the_environment_and_the_runtime_not_the_workers_path(tmp_path):
    built = envbuild.BuiltEnv(tmp_path / "env", {"hash": "h", "name": "demo"})
    env = {"PYTHONPATH": "/worker/site", "PATH": "/usr/bin", "PYTHONHOME": "/x", "VIRTUAL_ENV": "/worker/venv"}
    python = envbuild.step_process(built, env, {"PYTHONPATH": "/my/code"})
    assert python == str(tmp_path / "env" / "bin" / "python")
    assert env == {"PYTHONPATH": f"{envbuild.RUNTIME_DIR}{os.pathsep}/my/code", "VIRTUAL_ENV": str(tmp_path / "env"),
                   "PATH": f"{tmp_path / 'env' / 'bin'}{os.pathsep}/usr/bin"}


def test_docker_steps_keep_their_environments_on_a_volume_of_the_engine():
    jv = envbuild.docker_job_variables(_definition(pip=["tabulate"]))
    assert jv == {"volumes": [f"{envbuild.DOCKER_VOLUME}:{envbuild.DOCKER_CACHE}"],
                  "env": {"PREFECT_AML_ENVS_DIR": f"{envbuild.DOCKER_CACHE}/envs",
                          "UV_CACHE_DIR": f"{envbuild.DOCKER_CACHE}/uv"}}


# -- the light step runtime ----------------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import json, sys
    from azureml.core import Run
    run = Run.get_context()
    run.log("accuracy", 0.5)
    run.log("accuracy", 0.75)
    run.log_list("losses", [3, 2, 1])
    run.log_row("per-class", cls="a", f1=0.9)
    run.log_row("per-class", cls="b", f1=0.8)
    run.log_table("table", {"x": [1, 2], "y": [3, 4]})
    run.tag("stage", "train")
    run.set_tags({"n": 3, "none": None})
    with open("report.txt", "w") as f:
        f.write("hello")
    run.upload_file("report.txt", "report.txt")
    run.log_image("curve", path="report.txt")
    print(json.dumps({"id": run.id, "name": run.name, "parent": run.parent.id if run.parent else None,
                      "experiment": run.experiment.name, "workspace": run.experiment.workspace.name,
                      "outputs": run.output_datasets, "inputs": sorted(run.input_datasets),
                      "prefect_aml": "prefect_aml" in sys.modules, "tags": run.get_tags()}))
""")


def _context(folder: Path, inputs: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    ctx = {"run_id": "step-1", "parent_run_id": "pipe-1", "experiment_name": "exp", "step_name": "train.py",
           "workspace": {"workspace_name": "ws", "subscription_id": None, "resource_group": None, "home": "/h"},
           "default_datastore": "store", "input_datasets": inputs or {"raw": "/data/raw"},
           "outputs": {"model": "/out/model"}, "dir": str(folder)}
    (folder / "context.json").write_text(json.dumps(ctx))
    return folder / "context.json"


def _run_light(script: str, ctx: Path, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "s.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(envbuild.RUNTIME_DIR), AZUREML_RUN_CONTEXT=str(ctx))
    return subprocess.run([sys.executable, "s.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_light_runtime_writes_what_prefect_amls_run_writes(tmp_path, monkeypatch):
    light, full = tmp_path / "light", tmp_path / "full"
    out = _run_light(SCRIPT, _context(light / "run"), light)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {"id": "step-1", "name": "train.py", "parent": "pipe-1", "experiment": "exp", "workspace": "ws",
                    "outputs": {"model": "/out/model"}, "inputs": ["raw"], "prefect_aml": False,
                    "tags": {"stage": "train", "n": "3", "none": None}}
    # the same calls through prefect_aml.runs.Run (the worker's own runtime) write the same files
    monkeypatch.setenv("AZUREML_RUN_CONTEXT", str(_context(full / "run")))
    monkeypatch.chdir(light)
    run = FullRun.get_context()
    run.log("accuracy", 0.5)
    run.log("accuracy", 0.75)
    run.log_list("losses", [3, 2, 1])
    run.log_row("per-class", cls="a", f1=0.9)
    run.log_row("per-class", cls="b", f1=0.8)
    run.log_table("table", {"x": [1, 2], "y": [3, 4]})
    run.tag("stage", "train")
    run.set_tags({"n": 3, "none": None})
    run.upload_file("report.txt", "report.txt")
    run.log_image("curve", path="report.txt")
    for name in ("metrics.jsonl", "tags.json", "artifacts/report.txt"):
        assert (light / "run" / name).read_text() == (full / "run" / name).read_text(), name
    assert collect_metrics(light / "run")["per-class"] == {"cls": ["a", "b"], "f1": [0.9, 0.8]}


def test_the_light_runtime_says_what_is_not_served(tmp_path):
    script = textwrap.dedent("""
        from azureml.core import Dataset, Run, Workspace
        from azureml.core.model import Model
        from azureml.exceptions import ComputeTargetException, UserErrorException
        from azureml.pipeline.core import PipelineData
        assert issubclass(ComputeTargetException, Exception)
        run = Run.get_context()
        for call in (lambda: Dataset.get_by_name(run.experiment.workspace, "iris"), lambda: Workspace.from_config(),
                     lambda: Model.register(run.experiment.workspace, "m", "m.pkl"), lambda: PipelineData("x"),
                     lambda: run.register_model("m")):
            try:
                call()
            except UserErrorException as err:
                print(str(err).split(":")[0])
    """)
    out = _run_light(script, _context(tmp_path / "run"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Dataset.get_by_name is not available in this step",
                                       "Workspace.from_config is not available in this step",
                                       "Model.register is not available in this step",
                                       "azureml.pipeline.core.PipelineData(...) is not available in this step",
                                       "Run.register_model is not available in this step"]
    offline = _run_light("from azureml.core import Run\nr = Run.get_context()\nr.log('a', 1)\nprint(r.offline)\n",
                         tmp_path / "missing.json", tmp_path)
    assert offline.stdout.splitlines() == ["[offline run] scalar a = 1", "True"]


class _Table:
    def to_pandas_dataframe(self):
        return pd.DataFrame({"sepal": [5.1, 4.9], "species": ["setosa", "virginica"]})


class _Files:
    def __init__(self, src: Path):
        self.src = src

    def download(self, target, overwrite=False):
        for p in self.src.rglob("*"):
            if p.is_file():
                (target / p.relative_to(self.src)).parent.mkdir(parents=True, exist_ok=True)
                (target / p.relative_to(self.src)).write_bytes(p.read_bytes())


def test_direct_inputs_are_made_local_for_the_light_runtime(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("1")
    (src / "sub" / "b.csv").write_text("2")
    inputs = {"iris": {"dataset": {"kind": "tabular"},
                       "local": envbuild.materialise_direct_input(_Table(), tmp_path / "in" / "iris")},
              "files": {"dataset": {"kind": "file"},
                        "local": envbuild.materialise_direct_input(_Files(src), tmp_path / "in" / "files")}}
    script = textwrap.dedent("""
        import os
        from azureml.core import Run
        inputs = Run.get_context().input_datasets
        df = inputs["iris"].to_pandas_dataframe()
        print(list(df.columns), df.shape, df["species"].tolist())
        files = inputs["files"]
        print(files.to_path())
        print([os.path.relpath(p) for p in files.download("copy")])
        with files.mount("mnt") as m:
            print(open(os.path.join(m.mount_point, "sub", "b.csv")).read())
        print(os.listdir("mnt"))
    """)
    out = _run_light(script, _context(tmp_path / "run", inputs), tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['sepal', 'species'] (2, 2) ['setosa', 'virginica']",
                                       "['/a.csv', '/sub/b.csv']", "['copy/a.csv', 'copy/sub/b.csv']", "2", "['sub']"]


def test_index_credentials_are_never_shown():
    spec = envbuild.spec_of(_definition(pip=["--extra-index-url https://me:s3cret@pkgs.example/simple", "tabulate"]))
    assert "s3cret" in spec.requirements[0]  # uv is given them
    assert "s3cret" not in repr(spec) and "https://***@pkgs.example/simple" in repr(spec)
    assert envbuild.redact("Because https://u:t@h/x was not found") == "Because https://***@h/x was not found"


def test_the_build_hash_is_in_a_steps_reuse_key_only_when_something_is_built():
    plain = StepSpec(name="s", kind="python", script_name="s.py", environment={"name": "e", "variables": {"A": "1"}})
    assert "environment_build" not in components_of(plain, {}, {})  # keys of steps without packages stay as they were
    packaged = plain.model_copy(update={"environment": _definition(pip=["tabulate==0.9.0"])})
    components = components_of(packaged, {}, {})
    assert components["environment_build"] == envbuild.spec_of(packaged.environment).hash
    # the same definition built differently (another conda mapping, another FORMAT) re-runs the step, saying why
    before = {**components, "environment_build": "an-older-build"}
    assert key_of(before) != key_of(components)
    assert explain(components, {"components": before}) == [
        "environment build changed (how its packages are mapped or built)"]

"""Every code sample of the Azure ML v1 pipelines how-to, run unchanged through `azureml.*` imports.

The samples (tests/seed_samples.py) run as one user script that adds a single line,
`import prefect_aml.compat`. Swapped: Azure account values (the published pipeline's id, the AAD
token, the REST host) and the internet (iris.csv is the project's copy). The document leaves some
context out (`my_dataset`, `compare_step`, `project_folder`, ...): small glue between samples
defines it. Azure-only services (Databricks, Data Lake Analytics) must fail with a clear error.
The step scripts import `azureml.core` too, with nothing added.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from prefect_aml import AmlCompute, ComputeTarget, Experiment
from prefect_aml.exceptions import ComputeTargetException
from tests.seed_samples import SAMPLES
from tests.services import Service, free_port, http_ok, state_dir

_STATE = state_dir()

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SEED = ROOT.parent / "shared" / "seed" / "create-run-track-ml-pipelines.sv.md"


def _unsupported(sample: str) -> str:
    """An Azure-only sample: it must fail, clearly, naming what to use instead."""
    return ("try:\n" + textwrap.indent(sample, "    ") + "\n"
            "except UnsupportedFeatureError as err:\n    print('UNSUPPORTED:', err)\n"
            "else:\n    raise SystemExit('an Azure-only sample ran without an error')\n")


def user_script() -> str:
    s = SAMPLES
    parts = [
        "import prefect_aml.compat  # the one line added to the v1 code",
        s[0], s[1], s[2], s[3], s[4], s[5],
        "from azureml.exceptions import UnsupportedFeatureError",
        _unsupported(s[6]), _unsupported(s[7]),
        s[8],
        "my_dataset = iris_tabular_dataset  # glue: the how-to's name for the dataset above",
        s[9], s[10],
        # glue: the compare step's inputs and output, as the how-to describes them in prose
        "comp_data1 = output_data1.as_input()\ncomp_data2 = training_results.as_input()\n"
        "out_data3 = OutputFileDatasetConfig(name='comparison')\nproject_folder = './compare_src'",
        s[17], s[18],
        "compare_step = compareStep  # glue: '`compare_step` definition not shown'",
        s[11],
        "step_1_input = step_1_output = notebook_path = databricks_compute = None  # glue: the sample's context",
        _unsupported(s[12]),
        "project_folder = './project'  # glue: holds iris_train.py (the next samples)",
        s[13],
        s[16],
        "assert pipeline_run1.get_status() == 'Finished', pipeline_run1.get_status()\n"
        "print('PIPELINE_RUN', pipeline_run1.id)\n"
        "consuming = Experiment(ws, 'Dataset_Consuming').submit(Pipeline(ws, [dataset_consuming_step]))\n"
        "consuming.wait_for_completion(show_output=False)\nprint('CONSUMING_RUN', consuming.id)",
        s[19],
        "import os\naad_token = {'Authorization': 'Bearer ' + os.environ['SEED_TOKEN']}  # swapped: an AAD token",
        s[20],
        "assert response.status_code == 200, response.text\nprint('REST_RUN', response.json()['Id'])",
        "from azureml.pipeline.core import PipelineEndpoint\n"
        "PipelineEndpoint.publish(workspace=ws, name='My_Published_Pipeline', pipeline=published_pipeline1,\n"
        "                         description='the endpoint the next sample looks up')  # glue",
        s[21], s[22],
        "run_id.wait_for_completion(show_output=False)\nprint('ENDPOINT_RUN', run_id.id, run_id.get_status())",
        s[23],
        "run_id.wait_for_completion(show_output=False)\nprint('PINNED_RUN', run_id.id, run_id.get_status())",
        s[24],
        "assert response.status_code == 400 and \"'1'\" in response.text, response.text  # no such parameters\n"
        "print('REST_REJECTED', response.json()['error']['message'])",
        # swapped: the pipeline id from Azure ML studio
        s[25].replace('id="068f4885-7088-424b-8ce2-eeb9ba5381a6"', "id=published_pipeline1.id"),
        "assert PublishedPipeline.get(ws, published_pipeline1.id).status == 'Disabled'",
        "aml_compute = compute_target\nsource_directory = './hello'  # glue: the hello-world step's context",
        s[26],
        "hello = Experiment(ws, 'Hello_World').submit(Pipeline(ws, [step]))\nhello.wait_for_completion("
        "show_output=False)\nprint('HELLO_RUN', hello.id, hello.get_status())",
    ]
    return "\n\n".join(parts) + "\n"


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "seed"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "iris" / "iris.csv", work / "iris.csv")
    for src in ("dataprep_src", "train_src", "compare_src"):
        shutil.copytree(ROOT / "examples" / "iris" / src, work / src)
        for script in (work / src).glob("*.py"):  # the step scripts speak v1 as well, with nothing added
            script.write_text(script.read_text().replace("from prefect_aml import Run", "from azureml.core import Run"))
    (work / "project").mkdir()
    (work / "project" / "iris_train.py").write_text(
        SAMPLES[14] + "\n" + SAMPLES[15] + "\nprint('IRIS_TRAIN', dataframe.shape, 'workspace', ws.name)\n")
    (work / "hello").mkdir()
    (work / "hello" / "hello_world.py").write_text(
        "from azureml.core import Run\nprint('Hello World from', Run.get_context().experiment.name)\n")
    (work / "hello" / "hello_world.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                                   "nbformat_minor": 5}))
    return work


def _worker(ws, compute: str) -> Service:
    def online() -> bool:
        return ComputeTarget(ws, compute).get_status().serialize().get("currentNodeCount", 0) >= 1

    return Service(f"seed-worker-{compute}-{uuid.uuid4().hex[:4]}", _STATE,
                   [str(BIN / "prefect-aml"), "worker", "start", compute, "--limit", "4"], online, timeout=90)


def test_the_samples_are_the_documents(tmp_path):
    """The samples here are the how-to's, in order (checked where the document is at hand)."""
    assert len(SAMPLES) == 27 and SAMPLES[0].startswith("import azureml.core")
    if SEED.exists():
        blocks = [textwrap.dedent(b) for b in re.findall(r"```[a-zA-Z]*\n(.*?)```", SEED.read_text(), re.S)]
        assert blocks == SAMPLES


def test_every_seed_sample_runs_through_azureml_imports(ws, prefect_server, tmp_path):
    work = _workdir(tmp_path)
    token = uuid.uuid4().hex
    port = free_port()
    env = dict(os.environ, SEED_TOKEN=token, PREFECT_AML_SERVE_URL=f"http://127.0.0.1:{port}",
               PREFECT_AML_SERVE_TOKEN=token, PREFECT_AML_WORKER_WAIT_SECONDS="60")
    # phase 1, as a user starts: the compute does not exist yet, so the sample creates it
    for name in ("aml-compute",):
        try:
            ComputeTarget(ws, name).delete()
        except ComputeTargetException:
            pass
    first = subprocess.run([sys.executable, "-c", "\n\n".join(
        ["import prefect_aml.compat", SAMPLES[0], SAMPLES[5]])], cwd=work, env=env, capture_output=True, text=True,
        timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Creating a new compute target..." in first.stdout and "currentNodeCount" in first.stdout
    assert type(ComputeTarget(ws, "aml-compute")) is AmlCompute

    # Azure provisions nodes; here they are workers, started like any other (see the README)
    try:
        ComputeTarget(ws, "aml-pipelines")
    except ComputeTargetException:
        ComputeTarget.create(ws, "aml-pipelines", AmlCompute.provisioning_configuration(max_nodes=4))
    workers = [_worker(ws, "aml-compute"), _worker(ws, "aml-pipelines")]
    serve = Service("seed-serve", _STATE, [str(BIN / "prefect-aml"), "serve", "--port", str(port), "--no-triggers"],
                    lambda: http_ok(f"http://127.0.0.1:{port}/health"), env=env, timeout=60)
    try:
        (work / "user_script.py").write_text(user_script())
        out = subprocess.run([sys.executable, "user_script.py"], cwd=work, env=env, capture_output=True, text=True,
                             timeout=540)
        log = out.stdout + out.stderr
        assert out.returncode == 0, log[-6000:]
    finally:
        serve.stop()
        for w in workers:
            w.stop()
    assert "Found compute target: aml-compute" in out.stdout
    assert [line.split(":")[1].strip() for line in out.stdout.splitlines() if line.startswith("UNSUPPORTED:")] == [
        "DatabricksCompute", "AdlaCompute", "DatabricksStep"]
    assert "AzureML-Tutorial" in log  # the curated environment: the worker's own Python, with a warning
    runs = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+_RUN) (\S+)", out.stdout, re.M)}
    assert set(runs) == {"PIPELINE_RUN", "CONSUMING_RUN", "REST_RUN", "ENDPOINT_RUN", "PINNED_RUN", "HELLO_RUN"}
    assert re.search(r"^(ENDPOINT|PINNED|HELLO)_RUN \S+ Finished$", out.stdout, re.M)
    assert len(re.findall(r"^\w+_RUN \S+ Finished$", out.stdout, re.M)) == 3

    # what the steps did, read back through the API
    pipeline_run = next(r for r in Experiment(ws, "Compare_Models_Exp").get_runs() if r.id == runs["PIPELINE_RUN"])
    assert {s.name for s in pipeline_run.get_steps()} == {"prepare.py", "train.py", "compare.py"}
    assert pipeline_run.find_step_run("prepare.py")[0].get_metrics()["rows"] == 150
    consuming = next(iter(Experiment(ws, "Dataset_Consuming").get_runs()))
    assert "IRIS_TRAIN (150, 5) workspace" in consuming.find_step_run("iris_train.py")[0].get_job_log()
    hello = next(iter(Experiment(ws, "Hello_World").get_runs()))
    assert "Hello World from Hello_World" in hello.find_step_run("Hello World")[0].get_job_log()

"""The iris pipeline: prepare -> train -> compare, written the Azure ML (SDK v1) way.

    python run_pipeline.py                 # on the embedded default (local server, local datastore)
    python run_pipeline.py --pipeline-arg 50
"""

import argparse
import os

from prefect_aml import (
    Dataset,
    Datastore,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PipelineParameter,
    PythonScriptStep,
    Workspace,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def upload_data(ws) -> None:
    Datastore(ws, "workspaceblobstore").upload_files([os.path.join(HERE, "iris.csv")], target_path="train-dataset",
                                                     overwrite=True, show_progress=False)


def build(ws):
    """The pipeline (`prefect-aml explain examples/iris/run_pipeline.py:build` explains its reuse)."""
    def_blob_store = Datastore(ws, "workspaceblobstore")
    iris_tabular_dataset = Dataset.Tabular.from_delimited_files([(def_blob_store, "train-dataset/iris.csv")])
    ds_input = iris_tabular_dataset.as_named_input("input1")

    output_data1 = OutputFileDatasetConfig()
    data_prep_step = PythonScriptStep(
        script_name="prepare.py",
        source_directory=os.path.join(HERE, "dataprep_src"),
        arguments=["--input", ds_input.as_download(), "--output", output_data1],
        allow_reuse=True,
    )

    training_results = OutputFileDatasetConfig(name="training_results",
                                               destination=(def_blob_store, "iris/{run-id}/{output-name}"))
    train_step = PythonScriptStep(
        script_name="train.py",
        source_directory=os.path.join(HERE, "train_src"),
        arguments=["--prepped_data", output_data1, "--training_results", training_results],
        allow_reuse=True,
    )

    pipeline_param = PipelineParameter(name="pipeline_arg", default_value=10)
    out_data3 = OutputFileDatasetConfig(name="comparison")
    compare_step = PythonScriptStep(
        script_name="compare.py",
        source_directory=os.path.join(HERE, "compare_src"),
        arguments=["--comp_data1", output_data1.as_input(), "--comp_data2", training_results.as_input(),
                   "--output_data", out_data3, "--param1", pipeline_param],
        allow_reuse=True,
    )
    compare_models = [data_prep_step, train_step, compare_step]
    return Pipeline(workspace=ws, steps=[compare_models], description="iris: prepare, train, compare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-arg", type=int, default=None, help="bootstrap rounds for the comparison")
    parser.add_argument("--experiment", default="Compare_Models_Exp")
    args = parser.parse_args()

    ws = Workspace.from_config()
    upload_data(ws)
    pipeline1 = build(ws)
    pipeline1.validate()
    params = {"pipeline_arg": args.pipeline_arg} if args.pipeline_arg is not None else None
    pipeline_run1 = Experiment(ws, args.experiment).submit(pipeline1, pipeline_parameters=params)
    pipeline_run1.wait_for_completion()

    compare = pipeline_run1.find_step_run("compare.py")[0]
    print("metrics:", compare.get_metrics())
    folder = compare.get_output_data("comparison").download(os.path.join(HERE, "outputs"), overwrite=True,
                                                             show_progress=False)
    print("comparison written to", os.path.join(folder, "comparison.json"))
    print("see it in the Prefect UI:", pipeline_run1.get_portal_url())


if __name__ == "__main__":
    main()

"""Datasets: lazy File and Tabular definitions read from local, S3 and Azure Blob, and consumed by steps."""

from __future__ import annotations

import textwrap
import uuid

import pandas as pd
import pytest

from prefect_aml import (
    Dataset,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PythonScriptStep,
    UserErrorException,
)


@pytest.fixture
def table_on(store, tmp):
    """Two CSV parts and a parquet file on the store, under a fresh prefix."""
    prefix = f"ds-{uuid.uuid4().hex[:6]}"
    (tmp / "parts").mkdir()
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).to_csv(tmp / "parts" / "p1.csv", index=False)
    pd.DataFrame({"a": [4, 5], "b": ["u", "v"]}).to_csv(tmp / "parts" / "p2.csv", index=False)
    pd.DataFrame({"a": [7, 8], "b": ["p", "q"]}).to_parquet(tmp / "parts" / "t.parquet")
    store.upload(str(tmp / "parts"), target_path=prefix, overwrite=True, show_progress=False)
    return store, prefix


def test_tabular_reads_and_lazy_operations(table_on):
    store, prefix = table_on
    ds = Dataset.Tabular.from_delimited_files([(store, f"{prefix}/*.csv")])
    df = ds.to_pandas_dataframe()
    assert df["a"].tolist() == [1, 2, 3, 4, 5] and df["b"].tolist() == ["x", "y", "z", "u", "v"]
    assert ds.skip(1).take(3).keep_columns("a").to_pandas_dataframe()["a"].tolist() == [2, 3, 4]
    assert list(ds.drop_columns(["b"]).to_pandas_dataframe().columns) == ["a"]
    with_path = Dataset.Tabular.from_delimited_files((store, f"{prefix}/p2.csv"), include_path=True)
    assert with_path.to_pandas_dataframe()["Path"].tolist() == [f"{prefix}/p2.csv"] * 2
    pq = Dataset.Tabular.from_parquet_files([(store, f"{prefix}/t.parquet")])
    assert pq.to_pandas_dataframe()["a"].tolist() == [7, 8]
    with pytest.raises(UserErrorException, match="not in the dataset"):
        ds.keep_columns(["nope"]).to_pandas_dataframe()


def test_file_dataset_download_and_validation(table_on, tmp):
    store, prefix = table_on
    files = Dataset.File.from_files((store, prefix))
    assert files.to_path() == ["/p1.csv", "/p2.csv", "/t.parquet"]
    got = files.download(tmp / "dl")
    assert sorted(p.split("/")[-1] for p in got) == ["p1.csv", "p2.csv", "t.parquet"]
    with pytest.raises(UserErrorException, match="overwrite=True"):
        files.download(tmp / "dl")
    with pytest.raises(UserErrorException, match="matches no files"):
        Dataset.File.from_files((store, f"{prefix}/none-*.csv"))
    with pytest.raises(UserErrorException, match="not supported"):
        Dataset.File.from_files("just-a-string")


SCRIPT = """
    import argparse, os
    from prefect_aml import Run
    p = argparse.ArgumentParser(); p.add_argument("--table"); p.add_argument("--files"); p.add_argument("--out")
    a = p.parse_args()
    run = Run.get_context()
    df = run.input_datasets["table"].to_pandas_dataframe()     # direct: the dataset itself
    names = sorted(os.listdir(a.files))                          # as_download: a local folder
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "summary.txt"), "w").write(f"{a.table} {df['a'].sum()} {','.join(names)}")
"""


def test_steps_consume_datasets(ws, table_on, tmp):
    store, prefix = table_on
    (tmp / "src").mkdir()
    (tmp / "src" / "use.py").write_text(textwrap.dedent(SCRIPT))
    table = Dataset.Tabular.from_delimited_files([(store, f"{prefix}/*.csv")])
    files = Dataset.File.from_files((store, prefix))
    out = OutputFileDatasetConfig("summary")
    step = PythonScriptStep("use.py", source_directory=str(tmp / "src"),
                            arguments=["--table", table.as_named_input("table"),
                                       "--files", files.as_named_input("files").as_download(), "--out", out])
    exp = Experiment(ws, f"datasets-{uuid.uuid4().hex[:6]}")
    run = exp.submit(Pipeline(ws, [step]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=240) == "Finished"
    folder = run.get_steps()[0].get_output_data("summary").download(str(tmp / "o"), show_progress=False)
    assert open(f"{folder}/summary.txt").read() == "table 15 p1.csv,p2.csv,t.parquet"
    # unchanged data: reused; a changed file: the step runs again and says which input changed
    assert Pipeline(ws, [step]).explain_reuse(show_output=False)["use.py"].startswith("will reuse")
    pd.DataFrame({"a": [10], "b": ["w"]}).to_csv(tmp / "p2.csv", index=False)
    store.upload_files([str(tmp / "p2.csv")], target_path=prefix, overwrite=True, show_progress=False)
    assert "input table changed" in Pipeline(ws, [step]).explain_reuse(show_output=False)["use.py"]


def test_registry_versions_pin_definition_and_data(ws, table_on, tmp):
    store, prefix = table_on
    name = f"table_{uuid.uuid4().hex[:6]}"
    ds = Dataset.Tabular.from_delimited_files([(store, f"{prefix}/*.csv")])
    v1 = ds.register(ws, name, description="two parts", tags={"team": "ml"})
    assert (v1.name, v1.version, v1.tags) == (name, 1, {"team": "ml"})
    # unchanged definition over unchanged data: no new version
    assert ds.register(ws, name).version == 1
    # changed data: an existing name needs create_new_version=True
    pd.DataFrame({"a": [6], "b": ["t"]}).to_csv(tmp / "p3.csv", index=False)
    store.upload_files([str(tmp / "p3.csv")], target_path=prefix, overwrite=True, show_progress=False)
    with pytest.raises(UserErrorException, match="already registered.*create_new_version=True"):
        ds.register(ws, name)
    v2 = ds.register(ws, name, create_new_version=True)
    assert v2.version == 2
    latest = Dataset.get_by_name(ws, name)
    assert latest.version == 2 and latest.to_pandas_dataframe()["a"].sum() == 21
    assert Dataset.get_by_name(ws, name, version=1).description == "two parts"
    assert Dataset.get_by_id(ws, v1.id).version == 1
    assert Dataset.get_all(ws)[name].version == 2
    with pytest.raises(UserErrorException, match="not registered.*Did you mean"):
        Dataset.get_by_name(ws, name + "x")
    with pytest.raises(UserErrorException, match="has no version 7"):
        Dataset.get_by_name(ws, name, version=7)

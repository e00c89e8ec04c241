"""Datasets: lazy File and Tabular definitions read from local, S3 and Azure Blob, and consumed by steps."""

from __future__ import annotations

import json
import os
import textwrap
import uuid

import pandas as pd
import pytest

from prefect_aml import (
    AzureBlobDatastore,
    Dataset,
    DatasetChangedError,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PythonScriptStep,
    S3Datastore,
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
    # conditions: pushed into the scan when they come first, applied in order after row operations
    assert ds.filter(ds["a"] >= 3).to_pandas_dataframe()["a"].tolist() == [3, 4, 5]
    assert ds.filter((ds["a"] < 2) | ds["b"].isin(["z", "v"])).to_pandas_dataframe()["b"].tolist() == ["x", "z", "v"]
    assert ds.take(2).filter(ds["b"] != "x").to_pandas_dataframe()["a"].tolist() == [2]
    assert ds.filter(ds["b"].starts_with("y") | ~(ds["a"] <= 4)).drop_columns("b").to_pandas_dataframe()[
        "a"].tolist() == [2, 5]
    with pytest.raises(UserErrorException, match="not in the dataset"):
        ds.drop_columns("a").filter(ds["a"] > 1).to_pandas_dataframe()
    with pytest.raises(UserErrorException, match="no truth value"):
        ds.filter(ds["a"] > 1 and ds["a"] < 3)
    # read options: no header (Column1..), everything as text, explicit types
    raw = Dataset.Tabular.from_delimited_files((store, f"{prefix}/p1.csv"), header=False)
    assert raw.to_pandas_dataframe()["Column1"].tolist() == ["a", "1", "2", "3"]
    as_text = Dataset.Tabular.from_delimited_files((store, f"{prefix}/p1.csv"), infer_column_types=False)
    assert as_text.to_pandas_dataframe()["a"].tolist() == ["1", "2", "3"]
    typed = Dataset.Tabular.from_delimited_files((store, f"{prefix}/p1.csv"), set_column_types={"a": float})
    assert typed.to_pandas_dataframe()["a"].dtype == "float64"
    with pytest.raises(UserErrorException, match="not supported"):
        Dataset.Tabular.from_delimited_files((store, f"{prefix}/p1.csv"), set_column_types={"a": "complex"})


def test_samples_splits_and_batches(store, tmp):
    prefix = f"big-{uuid.uuid4().hex[:6]}"
    (tmp / "big").mkdir()
    for i in range(3):
        pd.DataFrame({"i": range(i * 1000, (i + 1) * 1000)}).to_parquet(tmp / "big" / f"part-{i}.parquet")
    store.upload(str(tmp / "big"), target_path=prefix, show_progress=False)
    ds = Dataset.Tabular.from_parquet_files((store, f"{prefix}/*.parquet"))
    sample = ds.take_sample(0.1, seed=7)
    rows = sample.to_pandas_dataframe()["i"].tolist()
    assert 200 < len(rows) < 400 and rows == sorted(rows)
    assert sample.to_pandas_dataframe()["i"].tolist() == rows  # the same rows on every read
    assert ds.take_sample(0.1, seed=8).to_pandas_dataframe()["i"].tolist() != rows
    train, test = ds.random_split(0.8, seed=1)
    a, b = train.to_pandas_dataframe()["i"], test.to_pandas_dataframe()["i"]
    assert len(a) + len(b) == 3000 and not set(a) & set(b) and 2200 < len(a) < 2600
    # a split of a derived dataset keeps the earlier operations
    assert len(ds.skip(2500).random_split(0.5, seed=3)[0].to_pandas_dataframe()) < 500
    batches = list(ds.to_batches(batch_size=400))
    assert sum(b.num_rows for b in batches) == 3000 and max(b.num_rows for b in batches) <= 400
    assert pd.concat(b.to_pandas() for b in batches)["i"].tolist() == list(range(3000))
    assert [b.num_rows for b in ds.skip(10).take(5).to_batches()] == [5]
    with pytest.raises(UserErrorException, match="between 0 and 1"):
        ds.random_split(1.5)


def test_partition_format_columns_and_pruning(store, tmp):
    prefix = f"parts-{uuid.uuid4().hex[:6]}"
    root = tmp / "p"
    for dept, day in [("sales", "2024/01/05"), ("sales", "2024/02/01"), ("ops", "2024/01/09")]:
        d = root / dept / day
        d.mkdir(parents=True)
        pd.DataFrame({"v": [len(dept), 1]}).to_parquet(d / "data.parquet")
    (root / "broken" / "2024/03/01").mkdir(parents=True)
    (root / "broken" / "2024/03/01" / "data.parquet").write_text("not parquet")
    store.upload(str(root), target_path=prefix, show_progress=False)
    ds = Dataset.Tabular.from_parquet_files((store, f"{prefix}/**/data.parquet"),
                                            partition_format="/{Dept}/{Day:yyyy/MM/dd}/data.parquet",
                                            validate=False)
    # the broken file lies in a partition the filter excludes: it is never opened
    df = ds.filter(ds["Dept"] != "broken").to_pandas_dataframe().sort_values(["Dept", "Day"])
    assert df["Dept"].tolist() == ["ops", "ops", "sales", "sales", "sales", "sales"]
    assert str(df["Day"].iloc[0].date()) == "2024-01-09"
    jan = ds.filter((ds["Dept"] == "sales") & (ds["Day"] < __import__("datetime").datetime(2024, 2, 1)))
    assert jan.to_pandas_dataframe()["v"].tolist() == [5, 1]
    with pytest.raises(UserErrorException, match="does not match partition_format"):
        Dataset.Tabular.from_parquet_files((store, f"{prefix}/**/data.parquet"),
                                           partition_format="/{Dept}/{Day:yyyy/MM}/data.parquet").take(1) \
            .to_pandas_dataframe()
    with pytest.raises(UserErrorException, match="names no column"):
        Dataset.Tabular.from_parquet_files((store, prefix), partition_format="/data.parquet")


def test_delimited_whole_reads_match_the_arrow_path(store, tmp):
    """Delimited files read whole go through pandas' CSV parser; the frame is the one pyarrow's reader gives,
    and anything that would differ falls back to pyarrow."""
    from prefect_aml import _tabular

    prefix = f"csv-{uuid.uuid4().hex[:6]}"
    root = tmp / "c"
    (root / "east").mkdir(parents=True)
    (root / "west").mkdir(parents=True)
    (root / "east" / "d.csv").write_text('i;f;s;z\n1;0.5;"a;b";01\n2;;NA;02\n3;1e3;"";03\n')
    (root / "west" / "d.csv").write_text("i;f;s;z\n;2.25;null;04\n5;-1;x y;05\n")
    store.upload(str(root), target_path=prefix, show_progress=False)

    def both(ds):
        return _tabular.read_pandas(ds._arrow(), ds._ops), _tabular.read_table(ds._arrow(), ds._ops).to_pandas()

    ds = Dataset.Tabular.from_delimited_files((store, f"{prefix}/*/d.csv"), separator=";", include_path=True,
                                              partition_format="/{region}/d.csv")
    fast, arrow = both(ds)
    assert fast is not None
    pd.testing.assert_frame_equal(fast, arrow)
    assert fast["i"].tolist()[:3] == [1.0, 2.0, 3.0] and fast["i"].isna().sum() == 1  # a missing integer: float
    assert fast["s"].tolist()[0] == "a;b" and fast["s"].isna().sum() == 3 and fast["z"].tolist() == [1, 2, 3, 4, 5]
    assert fast["region"].tolist() == ["east"] * 3 + ["west"] * 2
    pd.testing.assert_frame_equal(ds.to_pandas_dataframe(), arrow)
    one = Dataset.Tabular.from_delimited_files((store, f"{prefix}/east/d.csv"), separator=";", header=False)
    fast, arrow = both(one)
    assert fast is not None and fast["Column1"].tolist() == ["i", "1", "2", "3"]
    pd.testing.assert_frame_equal(fast, arrow)
    # pandas would read z as numbers and empty strings as missing: these take the arrow path, with its result
    for differs in (Dataset.Tabular.from_delimited_files((store, f"{prefix}/*/d.csv"), separator=";",
                                                         set_column_types={"z": str}),
                    Dataset.Tabular.from_delimited_files((store, f"{prefix}/*/d.csv"), separator=";",
                                                         empty_as_string=True)):
        fast, arrow = both(differs)
        assert fast is None
        pd.testing.assert_frame_equal(differs.to_pandas_dataframe(), arrow)
    assert Dataset.Tabular.from_delimited_files((store, f"{prefix}/*/d.csv"), separator=";", set_column_types={
        "z": str}).to_pandas_dataframe()["z"].tolist() == ["01", "02", "03", "04", "05"]
    assert _tabular.read_pandas(ds.keep_columns(["i"])._arrow(), ds.keep_columns(["i"])._ops) is None


def test_mount_profile_and_urls(ws, table_on, tmp):
    store, prefix = table_on
    files = Dataset.File.from_files((store, f"{prefix}/*.csv"))
    with files.mount() as m:
        point = m.mount_point
        assert sorted(os.listdir(point)) == ["p1.csv", "p2.csv"]
        assert pd.read_csv(os.path.join(point, "p2.csv"))["a"].tolist() == [4, 5]
    assert not os.path.exists(point)
    given = tmp / "mnt"
    with files.mount(given):
        assert sorted(os.listdir(given)) == ["p1.csv", "p2.csv"]
    assert os.listdir(given) == []
    (given / "x").write_text("busy")
    with pytest.raises(UserErrorException, match="not empty"):
        files.mount(given).start()
    table = Dataset.Tabular.from_delimited_files([(store, f"{prefix}/*.csv")])
    profile = table.get_profile()
    assert profile["a"]["count"] == 5 and profile["a"]["min"] == 1 and profile["a"]["max"] == 5
    assert profile["a"]["mean"] == 3.0 and abs(profile["a"]["std"] - 1.5811) < 1e-3
    assert profile["b"]["distinct"] == 5 and profile["b"]["missing"] == 0
    assert table.describe()["a"]["max"] == 5
    # a URL of a registered datastore names the same files
    url = (f"s3://{store.root()}/{prefix}/*.csv" if isinstance(store, S3Datastore) else
           f"https://devstoreaccount1.blob.core.windows.net/{store.root()}/{prefix}/*.csv"
           if isinstance(store, AzureBlobDatastore) else f"{store.root()}/{prefix}/*.csv")
    via_url = Dataset.Tabular.from_delimited_files(url)
    assert via_url.to_pandas_dataframe()["a"].tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(UserErrorException, match="No registered datastore holds"):
        Dataset.File.from_files("s3://no-such-bucket-anywhere/x.csv")


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
    # version 1 pins the files it was registered over: p3.csv came later, so reading it fails loudly
    old = Dataset.get_by_name(ws, name, version=1)
    with pytest.raises(DatasetChangedError, match=r"version 1.*p3.csv added.*create_new_version=True"):
        old.to_pandas_dataframe()
    with pytest.raises(DatasetChangedError):
        old.take(1).download(tmp / "never")
    assert not (tmp / "never").exists()
    # diff: files from the registered fingerprints; rows and columns when both sides can be read
    d = old.diff(latest)
    assert d["files"]["added"] == [f"{store.name}:{prefix}/p3.csv"] and d["files"]["unchanged"] == 2
    assert d["rows"] is None and "changed since it was registered" in d["note"]
    first = Dataset.Tabular.from_delimited_files((store, f"{prefix}/p1.csv")).register(ws, name + "_d")
    wider = Dataset.Tabular.from_delimited_files([(store, f"{prefix}/*.csv")]).register(
        ws, name + "_d", create_new_version=True)
    d = first.diff(wider)
    assert d["files"]["added"] == [f"{store.name}:{prefix}/p2.csv", f"{store.name}:{prefix}/p3.csv"]
    assert d["rows"] == {"before": 3, "after": 6, "added": 3, "removed": 0}
    assert d["columns"] == {"added": [], "removed": [], "changed": {}}
    assert wider.drop_columns("b").diff(first)["columns"]["added"] == ["b"]


def test_versions_survive_a_server_restart(tmp):
    from prefect_aml import Datastore, Workspace
    from tests.services import PG_URL, state_dir, using_server
    _STATE = state_dir()
    from tests.services import PrefectServer

    server = PrefectServer(_STATE, PG_URL)
    try:
        with using_server(server.url):
            own = Workspace(prefect_api_url=server.url)
            store = Datastore.register_local(own, "restart_store", str(tmp / "store"))
            (tmp / "d").mkdir()
            pd.DataFrame({"a": [1, 2]}).to_csv(tmp / "d" / "x.csv", index=False)
            store.upload(str(tmp / "d"), target_path="d", show_progress=False)
            Dataset.Tabular.from_delimited_files((store, "d/*.csv")).register(own, "kept", tags={"k": "v"})
            server.restart()
            again = Dataset.get_by_name(Workspace(prefect_api_url=server.url), "kept", version=1)
            assert again.tags == {"k": "v"} and again.to_pandas_dataframe()["a"].tolist() == [1, 2]
    finally:
        server.stop()


PREP = """
    import argparse, os
    from prefect_aml import Run
    p = argparse.ArgumentParser(); p.add_argument("--out"); a = p.parse_args()
    raw = Run.get_context().input_datasets["raw"]
    df = raw.filter(raw["a"] > 1).to_pandas_dataframe()
    os.makedirs(a.out, exist_ok=True)
    df.to_csv(os.path.join(a.out, "clean.csv"), index=False)
"""
REPORT = """
    import argparse, os
    from prefect_aml import Run
    p = argparse.ArgumentParser(); p.add_argument("--out"); a = p.parse_args()
    clean = Run.get_context().input_datasets["clean"]   # a TabularDataset over the upstream output
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "report.txt"), "w").write(f"{type(clean).__name__} {clean.to_pandas_dataframe()['a'].sum()}")
"""


def test_pipeline_consumes_a_version_and_registers_its_outputs(ws, table_on, tmp):
    store, prefix = table_on
    tag = uuid.uuid4().hex[:6]
    raw = Dataset.Tabular.from_delimited_files([(store, f"{prefix}/*.csv")]).register(ws, f"raw_{tag}")
    (tmp / "src").mkdir()
    (tmp / "src" / "prep.py").write_text(textwrap.dedent(PREP))
    (tmp / "src" / "report.py").write_text(textwrap.dedent(REPORT))

    def build():
        pinned = Dataset.get_by_name(ws, f"raw_{tag}", version=1)
        clean = OutputFileDatasetConfig("clean")
        table = clean.read_delimited_files().register_on_complete(f"clean_{tag}", tags={"stage": "clean"})
        report = OutputFileDatasetConfig("report").register_on_complete(f"report_{tag}")
        prep = PythonScriptStep("prep.py", source_directory=str(tmp / "src"),
                                arguments=["--out", clean], inputs=[pinned.as_named_input("raw")])
        rep = PythonScriptStep("report.py", source_directory=str(tmp / "src"),
                               arguments=["--out", report], inputs=[table.as_input("clean")])
        return Pipeline(ws, [prep, rep])

    exp = Experiment(ws, f"ds-pipe-{tag}")
    assert exp.submit(build()).wait_for_completion(show_output=False, timeout_seconds=240) == "Finished"
    clean_v = Dataset.get_by_name(ws, f"clean_{tag}")
    assert type(clean_v).__name__ == "TabularDataset" and clean_v.version == 1 and clean_v.tags == {"stage": "clean"}
    assert clean_v.to_pandas_dataframe()["a"].tolist() == [2, 3, 4, 5]
    report_v = Dataset.get_by_name(ws, f"report_{tag}")
    assert report_v.to_path() == ["/report.txt"]
    report_v.download(tmp / "r")
    assert (tmp / "r" / "report.txt").read_text() == "TabularDataset 14"
    # run again: both steps reused, the outputs are the same data, so no new versions
    assert exp.submit(build()).wait_for_completion(show_output=False, timeout_seconds=240) == "Finished"
    assert Dataset.get_by_name(ws, f"clean_{tag}").version == 1
    # the data behind raw version 1 changes: a submit that pins version 1 fails before a run exists
    pd.DataFrame({"a": [9], "b": ["n"]}).to_csv(tmp / "p1.csv", index=False)
    store.upload_files([str(tmp / "p1.csv")], target_path=prefix, overwrite=True, show_progress=False)
    before = len(list(exp.get_runs()))
    with pytest.raises(DatasetChangedError, match=f"raw_{tag}.*version 1.*p1.csv changed"):
        exp.submit(build())
    assert len(list(exp.get_runs())) == before
    assert raw.version == 1


def test_profile_in_a_run_is_a_table_artifact(ws, tmp):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from prefect_aml import Datastore

    store = Datastore.register_local(ws, f"profile_{uuid.uuid4().hex[:6]}", str(tmp / "store"))
    (tmp / "d").mkdir()
    pd.DataFrame({"a": [1, 2, None], "b": ["x", "y", "y"]}).to_csv(tmp / "d" / "t.csv", index=False)
    store.upload(str(tmp / "d"), target_path="d", show_progress=False)
    name = f"prof_{uuid.uuid4().hex[:6]}"
    ds = Dataset.Tabular.from_delimited_files((store, "d/t.csv")).register(ws, name)

    @flow
    def profile_it():
        return ds.get_profile()

    profile = profile_it()
    assert profile["a"]["missing"] == 1 and profile["b"]["distinct"] == 2
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            f"profile-{name.replace('_', '-')}"])))
    assert arts and arts[0].type == "table"
    rows = json.loads(arts[0].data) if isinstance(arts[0].data, str) else arts[0].data
    assert any(r["column"] == "a" and r["missing"] == 1 for r in rows)

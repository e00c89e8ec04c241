"""Pure pieces, without services: parameter coercion, the spec's order, reuse keys and their explanations."""

from __future__ import annotations

import pytest

from prefect_aml import PipelineParameter, PipelineValidationError
from prefect_aml.names import artifact_key, clean_relative, last_record_path, run_dir, user_tags
from prefect_aml.pipeline.params import coerce
from prefect_aml.pipeline.spec import ArgSpec, PipelineSpec, StepSpec
from prefect_aml.tasks.reuse import components_of, explain, key_of


def test_a_parameter_of_an_unsupported_type_is_named():
    with pytest.raises(PipelineValidationError, match="'listy'.*has type list"):
        PipelineParameter("listy", [1, 2])


@pytest.mark.parametrize("type_, value, expected", [
    ("int", 3, 3), ("float", 3, 3.0), ("bool", True, True), ("str", "x", "x"),
    ("DataPath", {"datastore": "s", "path": "p"}, {"type": "datapath", "datastore": "s", "path": "p"}),
])
def test_coercion_accepts_exact_types(type_, value, expected):
    assert coerce("p", type_, value) == expected


@pytest.mark.parametrize("type_, value", [("int", True), ("int", 1.5), ("bool", 1), ("str", 3), ("DataPath", "p")])
def test_coercion_refuses_and_names_the_parameter(type_, value):
    with pytest.raises(PipelineValidationError, match=f"'lr' expects {type_}"):
        coerce("lr", type_, value)


def _step(name, **kw) -> StepSpec:
    return StepSpec(name=name, kind="python", script_name=f"{name}.py", **kw)


def test_spec_order_follows_data_and_run_after():
    spec = PipelineSpec(steps=[
        _step("c", inputs=[{"name": "x", "source": {"type": "step_output", "step": "b", "output": "o"}}]),
        _step("b", run_after=["a"]), _step("a")])
    assert spec.order() == ["a", "b", "c"]


def test_the_key_changes_with_what_the_step_is_and_not_with_where_it_runs():
    step = _step("train", arguments=[ArgSpec(kind="param", name="lr")], source_hash="s1")
    base = components_of(step, {"lr": 0.1}, {})
    assert key_of(base) == key_of(components_of(step.model_copy(update={"compute_target": "gpu"}), {"lr": 0.1}, {}))
    assert key_of(base) != key_of(components_of(step, {"lr": 0.2}, {}))
    assert key_of(base) != key_of(components_of(step.model_copy(update={"source_hash": "s2"}), {"lr": 0.1}, {}))
    assert key_of(base).startswith("aml-step-")


def test_explanations_name_what_changed():
    step = _step("train", arguments=[ArgSpec(kind="param", name="lr")], source_hash="s1")
    before = components_of(step, {"lr": 0.1}, {"data": {"datastore": "d", "path": "a.csv", "fingerprint": 1}})
    now = components_of(step.model_copy(update={"source_hash": "s2"}), {"lr": 0.2},
                        {"data": {"datastore": "d", "path": "a.csv", "fingerprint": 2}})
    last = {"components": before, "source_files": {"train.py": "h1"}}
    reasons = explain({**now, "_source_files": {"train.py": "h2"}}, last)
    assert "train.py changed" in reasons
    assert "parameter lr: 0.1 -> 0.2" in reasons
    assert "input a.csv changed (etag)" in reasons
    assert explain(now, None) == ["it has not run before"]


def test_names_of_the_layout():
    assert run_dir("r1", "train") == "azureml/runs/r1/train"
    assert last_record_path("my step/1") == "azureml/steps/my-step-1.json"
    assert artifact_key("metrics", "Train.py") == "metrics-train-py"
    assert user_tags(["experiment:x", "aml-pipeline", "team:ml", "nightly"]) == {"team": "ml", "nightly": ""}
    assert clean_relative("a/./b/", "Path") == "a/b"
    with pytest.raises(ValueError, match="escapes the datastore root"):
        clean_relative("../x", "Path")

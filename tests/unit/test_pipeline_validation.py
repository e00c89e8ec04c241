"""Pipeline validation: every mistake is caught before anything runs, naming the step or port."""

from __future__ import annotations

import pytest

from prefect_aml import (
    CircularDependencyError,
    CommandStep,
    OutputFileDatasetConfig,
    OutputNotUniqueError,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PipelineValidationError,
    PythonScriptStep,
    StepSequence,
)


@pytest.fixture
def src(tmp_path):
    for name in ("a.py", "b.py", "c.py", "train.py"):
        (tmp_path / name).write_text("print('hi')\n")
    return str(tmp_path)


def test_cycle_is_named(src):
    x, y = PipelineData("x"), PipelineData("y")
    a = PythonScriptStep("a.py", source_directory=src, inputs=[y], outputs=[x])
    b = PythonScriptStep("b.py", source_directory=src, inputs=[x], outputs=[y])
    with pytest.raises(CircularDependencyError, match=r"a\.py.*b\.py|b\.py.*a\.py"):
        Pipeline(None, [a, b]).validate()


def test_run_after_cycle(src):
    a = PythonScriptStep("a.py", source_directory=src)
    b = PythonScriptStep("b.py", source_directory=src)
    a.run_after(b)
    b.run_after(a)
    with pytest.raises(CircularDependencyError):
        Pipeline(None, [a, b]).validate()


def test_input_nobody_produces(src):
    orphan = PipelineData("orphan")
    b = PythonScriptStep("b.py", source_directory=src, inputs=[orphan], arguments=["--in", orphan])
    with pytest.raises(PipelineValidationError, match="Input 'orphan' of step 'b.py' is not produced by any step"):
        Pipeline(None, [b]).validate()


def test_two_producers(src):
    out = PipelineData("shared")
    a = PythonScriptStep("a.py", source_directory=src, outputs=[out])
    b = PythonScriptStep("b.py", source_directory=src, outputs=[out])
    with pytest.raises(OutputNotUniqueError, match="'shared' is produced by more than one step \\('a.py', 'b.py'\\)"):
        Pipeline(None, [a, b]).validate()


def test_duplicate_step_names(src):
    a = PythonScriptStep("a.py", name="same", source_directory=src)
    b = PythonScriptStep("b.py", name="same", source_directory=src)
    with pytest.raises(PipelineValidationError, match="Two steps are named 'same'"):
        Pipeline(None, [a, b]).validate()


def test_unknown_and_mistyped_parameters(src):
    lr = PipelineParameter("learning_rate", 0.1)
    epochs = PipelineParameter("epochs", 10)
    flag = PipelineParameter("shuffle", True)
    a = PythonScriptStep("a.py", source_directory=src, arguments=["--lr", lr, "--epochs", epochs, "--s", flag])
    p = Pipeline(None, [a])
    with pytest.raises(PipelineValidationError, match="Unknown pipeline parameter 'learning_rat'.*'learning_rate'"):
        p._resolve_parameters(p.steps, {"learning_rat": 0.2})
    with pytest.raises(PipelineValidationError, match="'epochs' expects int, got 'ten'"):
        p._resolve_parameters(p.steps, {"epochs": "ten"})
    with pytest.raises(PipelineValidationError, match="'shuffle' expects bool"):
        p._resolve_parameters(p.steps, {"shuffle": 1})
    assert p._resolve_parameters(p.steps, {"learning_rate": 1, "epochs": 3}) == {
        "learning_rate": 1.0, "epochs": 3, "shuffle": True}


def test_two_parameters_with_one_name(src):
    a = PythonScriptStep("a.py", source_directory=src, arguments=[PipelineParameter("p", 1)])
    b = PythonScriptStep("b.py", source_directory=src, arguments=[PipelineParameter("p", 2)])
    with pytest.raises(PipelineValidationError, match="Two different PipelineParameters are named 'p'"):
        Pipeline(None, [a, b]).validate()


def test_missing_script_and_folder(src):
    with pytest.raises(PipelineValidationError, match="script 'tran.py' is not in.*Did you mean 'train.py'"):
        Pipeline(None, [PythonScriptStep("tran.py", source_directory=src)]).validate()
    with pytest.raises(PipelineValidationError, match="does not exist"):
        Pipeline(None, [PythonScriptStep("a.py", source_directory=src + "/nope")]).validate()


def test_closure_resolution(src):
    d1, d2 = OutputFileDatasetConfig(), OutputFileDatasetConfig("d2")
    a = PythonScriptStep("a.py", source_directory=src, arguments=["--out", d1])
    b = PythonScriptStep("b.py", source_directory=src, arguments=["--in", d1, "--out", d2])
    c = PythonScriptStep("c.py", source_directory=src, arguments=["--in", d2.as_input()])
    assert {s.name for s in Pipeline(None, [c]).steps} == {"a.py", "b.py", "c.py"}
    with pytest.raises(PipelineValidationError, match="produced by step 'b.py', which is not in the pipeline"):
        Pipeline(None, [c], resolve_closure=False).validate()
    spec = Pipeline(None, [c])._build_spec()
    assert spec.order() == ["a.py", "b.py", "c.py"]
    assert spec.step("b.py").inputs[0].source == {"type": "step_output", "step": "a.py", "output": "output"}
    assert [a.kind for a in spec.step("b.py").arguments] == ["literal", "input", "literal", "output"]


def test_step_sequence_and_nested_lists(src):
    a = PythonScriptStep("a.py", source_directory=src)
    b = PythonScriptStep("b.py", source_directory=src)
    c = CommandStep("python c.py --x 1", source_directory=src)
    spec = Pipeline(None, [StepSequence(steps=[a, b]), [c]])._build_spec()
    assert spec.step("b.py").upstream() == ["a.py"]
    assert spec.step("python").command[0].value == "python"


def test_bad_objects_are_named(src):
    with pytest.raises(PipelineValidationError, match="outputs must be"):
        PythonScriptStep("a.py", source_directory=src, outputs=["not-an-output"])
    with pytest.raises(PipelineValidationError, match="Pipeline has no steps"):
        Pipeline(None, [])
    with pytest.raises(PipelineValidationError, match="argument .* is not a string"):
        Pipeline(None, [PythonScriptStep("a.py", source_directory=src, arguments=[object()])])._build_spec()

"""`Run.get_context()` for a step in a built environment: the step contract of prefect_aml/tasks/step.py,
read and written with the standard library (as prefect_aml.runs.Run does inside a step)."""

import json
import os

from azureml import Limited, stub_module_getattr, unavailable
from azureml.exceptions import UserErrorException


class Workspace(Limited):
    """The step's workspace, by its names."""

    def __init__(self, subscription_id=None, resource_group=None, workspace_name=None, **_kw):
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.name = workspace_name or "default"

    def __repr__(self):
        return f"Workspace(name={self.name!r})"


class Experiment(Limited):
    """The step's experiment, by its name."""

    def __init__(self, workspace, name, **_kw):
        self.workspace = workspace
        self.name = name

    def __repr__(self):
        return f"Experiment(name={self.name!r})"


class _ParentRun(Limited):
    def __init__(self, run_id, experiment):
        self.id = run_id
        self.experiment = experiment

    def __repr__(self):
        return f"PipelineRun(id={self.id!r})"


class TabularDataset(Limited):
    """A tabular input passed directly: read from the Parquet file the worker wrote (pandas, pyarrow)."""

    def __init__(self, name, path):
        self.name = name
        self._path = path

    def to_pandas_dataframe(self):
        try:
            import pandas  # the environment's own, when it has it
        except ImportError:
            raise UserErrorException(
                f"Input {self.name!r}: to_pandas_dataframe() needs pandas and pyarrow in the step's environment; "
                "add them to its packages (azureml-dataprep[pandas] stands for them).") from None
        return pandas.read_parquet(self._path)

    def __repr__(self):
        return f"TabularDataset(name={self.name!r})"


class _Mount:
    def __init__(self, files, mount_point):
        self._files = files
        self._given = mount_point is not None
        self.mount_point = files._folder if mount_point is None else str(mount_point)

    def start(self):
        if self._given:
            os.makedirs(self.mount_point, exist_ok=True)
            for rel in self._files._relative():
                target = os.path.join(self.mount_point, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(os.path.join(self._files._folder, rel), target)
        return self

    def stop(self):
        if self._given:
            for rel in self._files._relative():
                target = os.path.join(self.mount_point, rel)
                if os.path.islink(target):
                    os.unlink(target)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FileDataset(Limited):
    """A file input passed directly: its files, downloaded by the worker into a local folder."""

    def __init__(self, name, folder):
        self.name = name
        self._folder = folder

    def _relative(self):
        out = []
        for base, _dirs, files in os.walk(self._folder):
            out += [os.path.relpath(os.path.join(base, f), self._folder) for f in files]
        return sorted(out)

    def to_path(self):
        return ["/" + p.replace(os.sep, "/") for p in self._relative()]

    def download(self, target_path=None, overwrite=False):
        target = os.path.abspath(target_path or os.getcwd())
        plan = [(os.path.join(self._folder, rel), os.path.join(target, rel)) for rel in self._relative()]
        existing = [dst for _, dst in plan if os.path.exists(dst)]
        if existing and not overwrite:
            raise UserErrorException(f"{existing[0]!r} exists ({len(existing)} file(s) in all): pass "
                                     "overwrite=True to replace them.")
        import shutil  # here, not at the top: a script that never copies does not pay for it at its start

        for src, dst in plan:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
        return [dst for _, dst in plan]

    def mount(self, mount_point=None, **_kw):
        return _Mount(self, mount_point)

    def __repr__(self):
        return f"FileDataset(name={self.name!r})"


class _DirectDataset(Limited):
    def __init__(self, name):
        self.name = name

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise unavailable(f"Input {self.name!r} (a dataset passed directly, not made local by the worker): "
                          f".{attr}")


class Run(Limited):
    """Inside a step script: `Run.get_context()` is the step's run (metrics, tags, files, inputs)."""

    def __init__(self, ctx):
        self._ctx = ctx
        self._dir = ctx["dir"] if ctx else None
        self.id = ctx["run_id"] if ctx else f"OfflineRun_{os.getpid()}"

    @classmethod
    def get_context(cls, allow_offline=True, **_kw):
        path = os.environ.get("AZUREML_RUN_CONTEXT")
        if path and os.path.exists(path):
            with open(path) as f:
                return cls(json.load(f))
        if not allow_offline:
            raise UserErrorException("Run.get_context(allow_offline=False) called outside a pipeline step.")
        return cls(None)

    @property
    def offline(self):
        return self._ctx is None

    def __repr__(self):
        return "Run(id={!r}{})".format(self.id, ", offline" if self.offline else "")

    # -- what a script reads
    @property
    def input_datasets(self):
        """Each named input: a local path, or for `as_named_input` without a mode, the dataset (made local)."""
        if not self._ctx:
            return {}
        out = {}
        for name, value in self._ctx["input_datasets"].items():
            if isinstance(value, dict) and "dataset" in value:
                local = value.get("local") or {}
                value = (TabularDataset(name, local["path"]) if local.get("kind") == "tabular" else
                         FileDataset(name, local["path"]) if local.get("kind") == "file" else _DirectDataset(name))
            out[name] = value
        return out

    @property
    def output_datasets(self):
        return dict(self._ctx["outputs"]) if self._ctx else {}

    @property
    def experiment(self):
        if not self._ctx:
            raise unavailable("Run.experiment of an offline run")
        return Experiment(Workspace(**self._ctx["workspace"]), self._ctx["experiment_name"])

    @property
    def parent(self):
        return _ParentRun(self._ctx["parent_run_id"], self.experiment) if self._ctx else None

    @property
    def name(self):
        return self._ctx["step_name"] if self._ctx else None

    # -- what a script writes
    def _emit(self, name, kind, value):
        if self._ctx is None:
            print(f"[offline run] {kind} {name} = {value!r}")
            return
        with open(os.path.join(self._dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"name": name, "kind": kind, "value": value}, default=str) + "\n")

    def log(self, name, value, description="", step=None):
        self._emit(name, "scalar", value)

    def log_list(self, name, value, description=""):
        self._emit(name, "list", list(value))

    def log_row(self, name, description=None, **kwargs):
        self._emit(name, "row", kwargs)

    def log_table(self, name, value, description=""):
        self._emit(name, "table", {k: list(v) for k, v in value.items()})

    def log_image(self, name, path=None, plot=None, description=""):
        if plot is not None:
            folder = os.path.join(self._dir, "artifacts") if self._dir else os.getcwd()
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{name}.png")
            plot.savefig(path)
        elif path is not None and self._dir is not None:
            self.upload_file(os.path.basename(path), path)
        self._emit(name, "image", os.path.basename(path) if path else None)

    def upload_file(self, name, path_or_stream):
        if self._dir is None:
            print(f"[offline run] upload_file {name}")
            return
        target = os.path.join(self._dir, "artifacts", name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if isinstance(path_or_stream, (str, os.PathLike)):
            import shutil  # here, not at the top: a script that never uploads does not pay for it at its start

            shutil.copyfile(path_or_stream, target)
        else:
            with open(target, "wb") as f:
                f.write(path_or_stream.read())

    def tag(self, key, value=None):
        self.set_tags({key: value})

    def set_tags(self, tags):
        if self._dir is None:
            print(f"[offline run] tags {tags}")
            return
        path = os.path.join(self._dir, "tags.json")
        current = self.get_tags()
        current.update({str(k): (None if v is None else str(v)) for k, v in tags.items()})
        tmp = f"{path}.{os.getpid()}.partial"
        with open(tmp, "w") as f:
            json.dump(current, f)
        os.replace(tmp, path)

    def get_tags(self):
        path = os.path.join(self._dir, "tags.json") if self._dir else None
        if not path or not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def complete(self):
        """Kept for Azure ML code: a step's run completes when its script exits."""


__getattr__ = stub_module_getattr(__name__)

"""`azureml` in a step that runs in its own built environment: prefect-aml's light step runtime.

The standard library only, for Python 3.8 and newer, so that it brings no package (nor a version of
one) into the environment it runs in. `azureml.core.Run.get_context()` reads the step's context
($AZUREML_RUN_CONTEXT) and writes metrics, tags and files where the worker collects them (the step
contract of prefect_aml/tasks/step.py). Every other Azure ML name imports, and says what to do when used:

    from azureml.core import Run, Dataset
    run = Run.get_context()
    run.log("accuracy", 0.93)
    Dataset.get_by_name(run.experiment.workspace, "iris")   # UserErrorException: not available in this step
"""

import importlib.machinery
import sys

from azureml.exceptions import AzureMLException, UserErrorException

HINT = ("this step runs in its environment's own packages (built by prefect-aml), where Azure ML's API is "
        "prefect-aml's light step runtime: Run.get_context(), with its metrics, tags, files, inputs and outputs. "
        "Pass data in as step inputs (a dataset's as_named_input, as_download or as_mount), or set "
        "environment.python.user_managed_dependencies = True to run the step in the worker's Python, with all "
        "of prefect-aml")


def unavailable(what):
    return UserErrorException(f"{what} is not available in this step: {HINT}.")


class _LimitedType(type):
    def __getattr__(cls, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise unavailable(f"{cls.__name__}.{attr}")


class Limited(metaclass=_LimitedType):
    """A class of which the runtime serves some members; the others say why they are not here."""

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise unavailable(f"{type(self).__name__}.{attr}")


_STUBS = {}


def stub(name, module):
    """A stand-in for an Azure ML class the runtime does not serve: imports fine, fails clearly when used
    (an exception class, for names that end in Exception or Error, so `except` clauses work)."""
    if (module, name) not in _STUBS:
        if name.endswith(("Exception", "Error")):
            _STUBS[module, name] = type(name, (AzureMLException,), {"__module__": module})
        else:
            def init(self, *args, **kwargs):
                raise unavailable(f"{module}.{name}(...)")

            _STUBS[module, name] = _LimitedType(name, (Limited,), {"__init__": init, "__module__": module})
    return _STUBS[module, name]


def stub_module_getattr(module):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return stub(name, module)

    return __getattr__


class _Stubs:
    """Serves, last on sys.meta_path, every `azureml.*` module that is not a file here, as stand-ins (a finder
    and loader by protocol: importlib.abc would cost a step's start more than the rest of the runtime)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("azureml."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []
        module.__getattr__ = stub_module_getattr(module.__name__)


if not any(isinstance(f, _Stubs) for f in sys.meta_path):
    sys.meta_path.append(_Stubs())
__getattr__ = stub_module_getattr("azureml")

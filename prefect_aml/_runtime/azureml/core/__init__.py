"""`azureml.core` of the light step runtime: `Run` (and the workspace and experiment it names) is served;
every other name is a stand-in that says what to do when used."""

from azureml import stub_module_getattr
from azureml.core.run import Experiment, Run, Workspace

__all__ = ["Experiment", "Run", "Workspace"]
__getattr__ = stub_module_getattr(__name__)

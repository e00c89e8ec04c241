"""Azure ML's exception names, as in prefect_aml.exceptions (the light step runtime's; standard library only)."""


class AzureMLException(Exception):
    """Base class of every error raised by prefect-aml."""


class UserErrorException(AzureMLException, ValueError):
    """Bad input: the message names the object and the fix."""


_MORE = {}


def __getattr__(name):
    """Azure ML's other exception names (ComputeTargetException, ...): subclasses of AzureMLException."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _MORE.setdefault(name, type(name, (AzureMLException,), {"__module__": __name__}))

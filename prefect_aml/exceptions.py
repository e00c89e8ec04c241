"""Exceptions a user can cause, named after the Azure ML SDK v1 ones they stand for."""

from __future__ import annotations


class AzureMLException(Exception):
    """Base class of every error raised by prefect-aml."""


class UserErrorException(AzureMLException, ValueError):
    """Bad input: the message names the object and the fix."""


class WorkspaceException(AzureMLException):
    """The workspace or its Prefect API cannot be reached or configured."""


class EnvironmentException(UserErrorException):
    """An environment is unknown, its definition cannot be read, or its packages cannot be installed."""


class DatastoreException(UserErrorException):
    """A datastore is unknown, misconfigured or the operation is not supported."""


class ComputeTargetException(UserErrorException):
    """A compute target is unknown or misconfigured."""


class PipelineValidationError(UserErrorException):
    """A pipeline cannot run as built; raised by `Pipeline.validate()` before any work starts."""


class CircularDependencyError(PipelineValidationError):
    """Steps depend on each other in a cycle."""


class OutputNotUniqueError(PipelineValidationError):
    """Two steps declare the same output."""


class StepFailedError(AzureMLException):
    """A step's script exited with an error; the message carries the tail of its stderr."""


class ActivityFailedException(AzureMLException):
    """A run ended in a failed or canceled state while it was waited on."""


class DatasetChangedError(UserErrorException):
    """The files behind a registered dataset version changed since it was registered."""


class PublishedPipelineDisabledError(UserErrorException):
    """A run of a disabled published pipeline (or of an archived endpoint) was asked for."""

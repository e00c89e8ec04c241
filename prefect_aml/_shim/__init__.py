"""Holds the `azureml` package step scripts import (see prefect_aml.compat); not imported as prefect_aml._shim."""

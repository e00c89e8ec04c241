"""Holds the `azureml` package of steps in built environments (prefect_aml/envbuild.py); not imported as prefect_aml._runtime."""

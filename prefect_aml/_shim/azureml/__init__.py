"""`azureml`, served by prefect_aml: on the path of step scripts and (after `prefect-aml compat enable`) everywhere.

Importing it installs prefect_aml.compat's import hook, so `azureml.core`, `azureml.pipeline.core`,
... resolve to prefect_aml. When the real Azure ML SDK is installed this import fails and says so.
"""

import prefect_aml.compat

prefect_aml.compat.install()

"""Publishing pipelines as Prefect deployments."""

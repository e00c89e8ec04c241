"""Prefect flows: the pipeline flow that dispatches steps in dependency order."""

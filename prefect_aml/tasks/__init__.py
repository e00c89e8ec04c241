"""Prefect tasks: running one step, reuse keys and manifests, source snapshots."""

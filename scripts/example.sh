#!/usr/bin/env bash
# Set up and run the example pipeline (iris) on the embedded default: a local Prefect server on
# SQLite under $PREFECT_AML_HOME (default ~/.prefect-aml) and a local-folder datastore.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
unset PREFECT_API_URL
cd examples/iris
exec ../../.venv/bin/python run_pipeline.py "$@"

#!/usr/bin/env bash
# Set up everything the tests need (Python packages, Azurite from npm) and run the whole suite.
# The tests start their own services on loopback: a Prefect server on PostgreSQL (127.0.0.1:5432),
# one on SQLite, moto_server (S3), Azurite (Azure Blob), Prefect workers, Dask clusters, and a Docker
# engine (scripts/docker.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -x node_modules/.bin/azurite-blob ]; then
  npm install --no-audit --no-fund --silent >/dev/null
fi
.venv/bin/ruff check prefect_aml tests examples benchmarks
.venv/bin/lint-imports  # the layering of docs/architecture.md (contracts in pyproject.toml)
# the DockerCompute tests need an engine; they fail (not skip) when it could not be started
export PREFECT_AML_REQUIRE_DOCKER=1
bash scripts/docker.sh || echo "warning: no Docker engine; the DockerCompute tests will fail" >&2
export PREFECT_SERVER_ANALYTICS_ENABLED=false
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$code"

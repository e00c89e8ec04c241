#!/usr/bin/env bash
# Create .venv and install prefect-aml with its test tools (pinned by constraints.txt); idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.prefect-aml-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import prefect_aml, moto, pytest" # fails loudly if the install did not work
  echo "$want" > "$stamp"
fi

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
  echo "Installing prefect-aml and its dependencies into .venv (log: .venv/install.log) ..."
  if ! { .venv/bin/python -m pip install --upgrade pip && \
         .venv/bin/python -m pip install -c constraints.txt -e ".[test]"; } > .venv/install.log 2>&1; then
    grep -v "is ignored" .venv/install.log | tail -40
    echo "pip install failed; see .venv/install.log" >&2
    exit 1
  fi
  .venv/bin/python -c "import prefect_aml, moto, pytest" # fails loudly if the install did not work
  echo "$want" > "$stamp"
fi

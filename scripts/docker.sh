#!/usr/bin/env bash
# A Docker engine for the tests (DockerCompute): use a running one, else install docker.io and start dockerd.
# Images are built locally by the tests (`docker import`); no registry is needed.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "Installing docker.io (for the DockerCompute tests) ..."
  if ! { apt-get install -y docker.io || { apt-get update && apt-get install -y docker.io; }; } >/tmp/prefect-aml-docker-install.log 2>&1; then
    tail -20 /tmp/prefect-aml-docker-install.log >&2
    echo "Could not install docker.io (needs root and Debian's packages); see /tmp/prefect-aml-docker-install.log" >&2
    exit 1
  fi
fi
mkdir -p /tmp/prefect-aml-dockerd
nohup dockerd >/tmp/prefect-aml-dockerd/dockerd.log 2>&1 </dev/null &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
tail -20 /tmp/prefect-aml-dockerd/dockerd.log >&2
echo "dockerd did not start; see /tmp/prefect-aml-dockerd/dockerd.log" >&2
exit 1

"""Names and paths prefect-aml writes: the datastore layout, tags, flow names and artifact keys, in one place.

Everything a run leaves on a datastore lives under ``azureml/`` on the workspace's default datastore
(its outputs on the datastore each output names):

    azureml/specs/<hash>.json                   a submitted pipeline's spec (content-addressed)
    azureml/snapshots/<id>.zip, <id>.files.json a source directory's snapshot and its file hashes
    azureml/runs/<run id>/<step>/...            a step run's record, log, outputs and heartbeat
    azureml/reuse/<key>.json                    the record a step with that key is reused from
    azureml/cache/<key>                         Prefect's cache record of that key
    azureml/steps/<step>.json                   a step's last record (to explain what changed)
    azureml/outputs/<key>/<output>/...          an output's files; azureml/manifests/<key>/<output>.json marks it whole
    azureml/triggers/<schedule>.json            what a datastore trigger has seen
    azureml/locks/                              file locks beside a local datastore

    from prefect_aml import names
    names.run_dir("6f1c...", "train")      # 'azureml/runs/6f1c.../train'
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid

from prefect_aml.exceptions import DatastoreException, UserErrorException

# -- the datastore layout ------------------------------------------------------------------------
ROOT = "azureml"
SPECS_PREFIX = f"{ROOT}/specs"
SNAPSHOT_PREFIX = f"{ROOT}/snapshots"
RUNS_PREFIX = f"{ROOT}/runs"
REUSE_PREFIX = f"{ROOT}/reuse"
CACHE_PREFIX = f"{ROOT}/cache"
STEPS_PREFIX = f"{ROOT}/steps"
OUTPUTS_PREFIX = f"{ROOT}/outputs"
MANIFESTS_PREFIX = f"{ROOT}/manifests"
TRIGGERS_PREFIX = f"{ROOT}/triggers"
LOCKS_DIR = f"{ROOT}/locks"

REUSED_FILE = "reused.json"  # per pipeline run: the records of its reused steps
RECORD_FILE = "record.json"  # per step run
LOG_FILE = "std_log.txt"
HEARTBEAT_FILE = "heartbeat.json"

BUILTIN_DATASTORES = ("workspaceblobstore", "workspacefilestore")


def run_dir(run_id: str, step_name: str) -> str:
    """Where one step run of a pipeline run keeps its record, log and uploaded files."""
    return f"{RUNS_PREFIX}/{run_id}/{step_name}"


def reused_path(run_id: str) -> str:
    return f"{RUNS_PREFIX}/{run_id}/{REUSED_FILE}"


def reuse_record_path(key: str) -> str:
    return f"{REUSE_PREFIX}/{key}.json"


def cache_record_path(key: str) -> str:
    return f"{CACHE_PREFIX}/{key}"


def manifest_path(out_key: str, output_name: str) -> str:
    return f"{MANIFESTS_PREFIX}/{out_key}/{output_name}.json"


def derived_output_path(out_key: str, output_name: str) -> str:
    return f"{OUTPUTS_PREFIX}/{out_key}/{output_name}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "step"


def last_record_path(step_name: str) -> str:
    """A step's last record, by step name: what `explain` compares a new key with."""
    return f"{STEPS_PREFIX}/{_slug(step_name)}.json"


def trigger_seen_path(schedule_id: str) -> str:
    return f"{TRIGGERS_PREFIX}/{schedule_id}.json"


def clean_relative(path: str | None, what: str) -> str:
    """Normalise a path inside a datastore; reject absolute paths and `..` that would escape it."""
    if path in (None, "", ".", "/"):
        return ""
    p = str(path).replace("\\", "/")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        raise UserErrorException(f"{what} {path!r} is absolute: give a path relative to the datastore root.")
    norm = posixpath.normpath(p)
    if norm == ".." or norm.startswith("../"):
        raise UserErrorException(f"{what} {path!r} escapes the datastore root ('..'): remove the '..' parts.")
    return "" if norm == "." else norm


_DATASTORE_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,255}$")


def block_name_for(datastore_name: str) -> str:
    """Block document names allow lowercase letters, digits and dashes; datastore names use underscores."""
    if not isinstance(datastore_name, str) or not _DATASTORE_NAME_RE.match(datastore_name):
        raise DatastoreException(
            f"Datastore name {datastore_name!r} is not valid: use letters, digits and underscores only "
            "(e.g. 'my_datastore')."
        )
    return datastore_name.lower().replace("_", "-")


# -- Prefect names ------------------------------------------------------------------------------
PIPELINE_FLOW = "aml-pipeline"  # the pipeline flow; also the tag of every pipeline run
STEP_FLOW = "aml-step"  # the flow of a step on a work pool; also the name of every step's task
PIPELINE_TAG = PIPELINE_FLOW
STEP_TAG = STEP_FLOW
EXPERIMENT_TAG = "experiment:"
PUBLISHED_TAG = "aml-published:"
ENDPOINT_TAG = "aml-endpoint:"
COMPUTE_TAG = "aml-compute:"
TRIGGER_TAG = "aml-trigger:"
SCHEDULE_SLUG_PREFIX = "aml-schedule-"
AUTO_SCHEDULED_TAG = "auto-scheduled"  # Prefect's own tag of scheduled runs
DEFAULT_PIPELINE_COMPUTE = "aml-pipelines"  # the work pool published pipelines run on by default

GRAPH_ARTIFACT = "pipeline-graph"
PUBLISHED_ENTRY_MODULE = "prefect_aml.deployments.entry"
PUBLISHED_ENTRY_PREFIX = "published_"


def published_entrypoint(pipeline_id: str) -> str:
    """The entrypoint of a published pipeline's deployment (`deployments/entry.py` builds its flow)."""
    return f"{PUBLISHED_ENTRY_MODULE}.{PUBLISHED_ENTRY_PREFIX}{uuid.UUID(pipeline_id).hex}"


def experiment_of(tags) -> str | None:
    """The experiment a run's tags name (None when none does)."""
    return next((t[len(EXPERIMENT_TAG):] for t in tags or [] if t.startswith(EXPERIMENT_TAG)), None)


def published_id_of(tags) -> str | None:
    """The published pipeline a run's tags name (None for any other run)."""
    return next((t[len(PUBLISHED_TAG):] for t in tags or [] if t.startswith(PUBLISHED_TAG)), None)


def user_tags(tags) -> dict[str, str]:
    """A run's tags without prefect-aml's own: `key:value` or `key` (Azure ML's tags dict)."""
    own = (EXPERIMENT_TAG, PUBLISHED_TAG, ENDPOINT_TAG, COMPUTE_TAG, TRIGGER_TAG)
    return dict(t.split(":", 1) if ":" in t else (t, "") for t in tags or []
                if not t.startswith(own) and t not in (PIPELINE_TAG, STEP_TAG, AUTO_SCHEDULED_TAG))


def automation_of(flow_run) -> str | None:
    """The automation that created a flow run (from its idempotency key), if one did."""
    key = getattr(flow_run, "idempotency_key", None) or ""
    if key.startswith("automation "):
        return key.split(",", 1)[0].removeprefix("automation ").strip()
    return None


def tags_from_dict(tags: dict | None) -> list[str]:
    """Azure ML's tags dict as Prefect tags (`key:value`, or `key` for an empty value)."""
    return [f"{k}:{v}" if v not in (None, "") else str(k) for k, v in (tags or {}).items()]


def artifact_key(prefix: str, name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for `name`, e.g. metrics-train-py."""
    return (prefix + "-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-"))[:60]


# -- the Azure-ML-shaped REST service (`prefect-aml serve`) ----------------------------------------
SERVE_URL_ENV = "PREFECT_AML_SERVE_URL"
DEFAULT_SERVE_PORT = 8788


def serve_base_url() -> str:
    return (os.environ.get(SERVE_URL_ENV) or f"http://127.0.0.1:{DEFAULT_SERVE_PORT}").rstrip("/")


def serve_workspace_url(workspace) -> str:
    """Azure ML's pipelines path for this workspace, on the `prefect-aml serve` service."""
    return (f"{serve_base_url()}/pipelines/v1.0/subscriptions/{workspace.subscription_id or 'local'}/resourceGroups/"
            f"{workspace.resource_group or 'local'}/providers/Microsoft.MachineLearningServices/workspaces/"
            f"{workspace.name}")

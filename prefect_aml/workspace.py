"""Workspace: where the Prefect API is and the workspace defaults (default datastore, local home).

A workspace is read from ``.azureml/config.json`` or ``config.json`` (``Workspace.from_config()``
walks up from the current folder, as Azure ML does). ``PREFECT_API_URL``, when set (in the
environment or the active Prefect profile), wins; otherwise the file's ``prefect_api_url``; and
with neither, the embedded default: a local Prefect server on SQLite under ``PREFECT_AML_HOME``.

    {"workspace_name": "ml", "prefect_api_url": "http://127.0.0.1:4200/api",
     "default_datastore": "workspaceblobstore"}
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from prefect_aml._home import aml_home
from prefect_aml.exceptions import UserErrorException

_DEFAULT_VARIABLE = "aml_default_datastore"
BUILTIN_DATASTORES = ("workspaceblobstore", "workspacefilestore")
_CONFIG_KEYS = ("subscription_id", "resource_group", "workspace_name", "location",
                "prefect_api_url", "default_datastore", "home", "redis_url")
_activated_url: str | None = None  # the PREFECT_API_URL this process set itself (not the user's)


class Workspace:
    """An Azure-ML-style workspace on a Prefect API."""

    def __init__(
        self,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        auth: Any = None,
        *,
        prefect_api_url: str | None = None,
        default_datastore: str | None = None,
        location: str | None = None,
        home: str | os.PathLike | None = None,
        redis_url: str | None = None,
        **_ignored: Any,
    ):
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self._name = workspace_name or "default"
        self.location = location or "local"
        self.prefect_api_url = prefect_api_url
        self._default_datastore = default_datastore
        self._home = Path(home).expanduser().resolve() if home else None
        self._config_path: Path | None = None
        # Redis serialises identical steps across machines; without it, locks are files (one machine)
        self.redis_url = redis_url or os.environ.get("PREFECT_AML_REDIS_URL") or None

    # -- construction from files
    @classmethod
    def from_config(cls, path: str | os.PathLike | None = None, auth: Any = None, _logger: Any = None,
                    _file_name: str | None = None) -> Workspace:
        """Find `config.json` (in `.azureml/` first, then the folder) from `path` upwards; defaults if none."""
        found = _find_config(Path(path) if path else Path.cwd(), _file_name or "config.json")
        if found is None:
            return cls()
        try:
            data = json.loads(found.read_text())
        except json.JSONDecodeError as err:
            raise UserErrorException(f"Workspace config {str(found)!r} is not valid JSON: {err}.") from None
        if not isinstance(data, dict):
            raise UserErrorException(f"Workspace config {str(found)!r} must hold a JSON object.")
        unknown = sorted(set(data) - set(_CONFIG_KEYS) - {"name", "workspace_id", "friendly_name"})
        if unknown:
            warnings.warn(
                f"Workspace config {str(found)!r} has keys prefect-aml does not know: {unknown} "
                f"(known: {list(_CONFIG_KEYS)}); they are ignored.", stacklevel=2,
            )
        home = data.get("home")
        if home and not os.path.isabs(home):
            home = str((found.parent / home).resolve())
        ws = cls(
            data.get("subscription_id"), data.get("resource_group"),
            data.get("workspace_name") or data.get("name"),
            prefect_api_url=data.get("prefect_api_url"), default_datastore=data.get("default_datastore"),
            location=data.get("location"), home=home, redis_url=data.get("redis_url"),
        )
        ws._config_path = found
        return ws

    def write_config(self, path: str | os.PathLike | None = None, file_name: str | None = None) -> Path:
        """Write `.azureml/config.json` (or `file_name`) under `path` (default: the current folder)."""
        folder = Path(path or Path.cwd()) / ".azureml"
        folder.mkdir(parents=True, exist_ok=True)
        data = {"workspace_name": self._name}
        for key in ("subscription_id", "resource_group", "prefect_api_url", "redis_url"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self._default_datastore:
            data["default_datastore"] = self._default_datastore
        if self._home:
            data["home"] = str(self._home)
        target = folder / (file_name or "config.json")
        target.write_text(json.dumps(data, indent=2) + "\n")
        return target

    # -- identity
    @property
    def name(self) -> str:
        return self._name

    @property
    def home(self) -> Path:
        return self._home or aml_home()

    def __repr__(self) -> str:
        return f"Workspace.create(name={self._name!r}, prefect_api_url={self.api_url_or_default()!r})"

    def api_url_or_default(self) -> str:
        from prefect.settings import get_current_settings

        from prefect_aml import _embedded

        current = get_current_settings().api.url
        if current and current != _activated_url:
            return current
        return self.prefect_api_url or _embedded.server_url()

    # -- the Prefect API
    def _activate(self) -> str:
        """Make this process's Prefect client talk to the workspace's API; start the embedded one if needed."""
        global _activated_url
        from prefect.context import refresh_global_settings_context
        from prefect.settings import get_current_settings

        current = get_current_settings().api.url
        if current and current != _activated_url:
            return current  # the user's PREFECT_API_URL / profile wins
        if self.prefect_api_url:
            url = self.prefect_api_url
        else:
            from prefect_aml import _embedded

            url = _embedded.ensure_server(self.home)
        if url != current:
            os.environ["PREFECT_API_URL"] = url
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            refresh_global_settings_context()
            _activated_url = url
        return url

    @property
    def ui_url(self) -> str:
        return self._activate().removesuffix("/api")

    # -- datastores
    @property
    def datastores(self) -> dict[str, Any]:
        from prefect_aml.datastore import _list_datastores

        self._ensure_builtin_datastores()
        return {d.name: d for d in _list_datastores(self)}

    def get_default_datastore(self):
        from prefect_aml.datastore import Datastore

        return Datastore.get(self, self._default_datastore_name())

    def set_default_datastore(self, name: str) -> None:
        """Make `name` the default datastore for every client of this Prefect API (a Prefect variable)."""
        from prefect.variables import Variable

        from prefect_aml.datastore import Datastore

        Datastore.get(self, name)  # must exist
        Variable.set(_DEFAULT_VARIABLE, name, overwrite=True, _sync=True)
        self._default_datastore = name

    def _default_datastore_name(self) -> str:
        if self._default_datastore:
            return self._default_datastore
        from prefect.variables import Variable

        self._activate()
        return Variable.get(_DEFAULT_VARIABLE, default=None, _sync=True) or "workspaceblobstore"

    def _ensure_builtin_datastores(self) -> None:
        from prefect_aml.datastore import _ensure_builtin

        for name in BUILTIN_DATASTORES:
            _ensure_builtin(self, name)

    # -- computes and environments
    @property
    def compute_targets(self) -> dict[str, Any]:
        from prefect_aml.compute import list_compute_targets

        return list_compute_targets(self)

    @property
    def environments(self) -> dict[str, Any]:
        from prefect_aml.environment import Environment

        return Environment.list(self)

    @property
    def experiments(self) -> dict[str, Any]:
        from prefect_aml.runs import Experiment

        return {name: Experiment(self, name) for name in Experiment._list_names(self)}


def _find_config(start: Path, file_name: str) -> Path | None:
    start = start.resolve()
    if start.is_file():
        return start
    for folder in (start, *start.parents):
        for candidate in (folder / ".azureml" / file_name, folder / file_name):
            if candidate.is_file():
                return candidate
    return None

"""Workspace: where the Prefect API is and the workspace defaults (default datastore, local home).

A workspace is read from ``.azureml/config.json`` or ``config.json`` (``Workspace.from_config()``
walks up from the current folder, as Azure ML does). Which Prefect API a call talks to is decided
here, in `Workspace.api_url()`, and nowhere else: ``PREFECT_API_URL`` (the environment or the active
Prefect profile) wins; otherwise the file's ``prefect_api_url``; and with neither, the embedded default,
a local Prefect server on SQLite under ``PREFECT_AML_HOME`` (started on first use). Everything that
talks to Prefect does it through `ws.client()` or inside `with ws.prefect():` (a Prefect settings
context), so the process's environment is never rewritten.

    {"workspace_name": "ml", "prefect_api_url": "http://127.0.0.1:4200/api",
     "default_datastore": "workspaceblobstore"}
"""

from __future__ import annotations

import importlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import prefect.context
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, get_current_settings
from prefect.variables import Variable

from prefect_aml import _embedded, _tls
from prefect_aml._home import aml_home
from prefect_aml.compute import list_compute_targets
from prefect_aml.datastore import Datastore, ensure_builtin_datastores, list_datastores
from prefect_aml.environment import Environment
from prefect_aml.exceptions import UserErrorException

_DEFAULT_VARIABLE = "aml_default_datastore"
_CONFIG_KEYS = ("subscription_id", "resource_group", "workspace_name", "location",
                "prefect_api_url", "default_datastore", "home", "redis_url")
_HEALTHY_FOR_S = 30.0  # an embedded server seen answering is not asked again for this long
_healthy: dict[str, float] = {}
_settings: dict[tuple[int, str], Any] = {}  # (global settings, API URL) -> Prefect settings for that API
# collections of objects that live above this module: each module registers its own, and is imported
# (by name: it sits above) when its collection is first asked for
_COLLECTIONS: dict[str, Callable[[Workspace], dict[str, Any]]] = {}
_COLLECTION_MODULES = {"datasets": "prefect_aml.dataset", "experiments": "prefect_aml.runs"}


def collection(name: str):
    """Register the function behind `ws.<name>` (a dict of objects by name) from the module that owns them."""
    def register(fn: Callable[[Workspace], dict[str, Any]]):
        _COLLECTIONS[name] = fn
        return fn
    return register


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
        return f"Workspace.create(name={self._name!r}, prefect_api_url={self.prefect_api_url!r})"

    # -- the Prefect API: the one place that decides which one a call talks to
    def api_url(self) -> str:
        """The Prefect API this workspace's calls talk to: the process's own PREFECT_API_URL (environment or
        profile) wins, then the workspace's `prefect_api_url`, then the embedded server (started if needed)."""
        own = prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.api.url
        if own:
            return own
        if self.prefect_api_url:
            return self.prefect_api_url
        url = _embedded.server_url()
        if time.monotonic() - _healthy.get(url, -_HEALTHY_FOR_S) >= _HEALTHY_FOR_S:
            url = _embedded.ensure_server(self.home)
            _healthy[url] = time.monotonic()
        return url

    @contextmanager
    def prefect(self) -> Iterator[str]:
        """Prefect's clients, blocks and variables talk to this workspace's API inside this context."""
        url = self.api_url()
        if get_current_settings().api.url == url:
            yield url
            return
        root = prefect.context.GLOBAL_SETTINGS_CONTEXT
        key = (id(root.settings), url)
        if key not in _settings:
            _settings[key] = root.settings.copy_with_update(updates={PREFECT_API_URL: url})
        with prefect.context.SettingsContext(profile=root.profile, settings=_settings[key]):
            yield url

    @contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A synchronous Prefect client of this workspace's API."""
        with self.prefect(), get_client(sync_client=True) as client:
            yield client

    def process_env(self) -> dict[str, str]:
        """The environment for a process that works for this workspace (a runner, a worker): its API named."""
        return {**os.environ, "PREFECT_API_URL": self.api_url(),
                "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false")}

    @property
    def ui_url(self) -> str:
        return self.api_url().removesuffix("/api")

    # -- datastores
    @property
    def datastores(self) -> dict[str, Any]:
        ensure_builtin_datastores(self)
        return {d.name: d for d in list_datastores(self)}

    def get_default_datastore(self):
        return Datastore.get(self, self._default_datastore_name())

    def set_default_datastore(self, name: str) -> None:
        """Make `name` the default datastore for every client of this Prefect API (a Prefect variable)."""
        Datastore.get(self, name)  # must exist
        with self.prefect():
            Variable.set(_DEFAULT_VARIABLE, name, overwrite=True, _sync=True)
        self._default_datastore = name

    def _default_datastore_name(self) -> str:
        if self._default_datastore:
            return self._default_datastore
        with self.prefect():
            return Variable.get(_DEFAULT_VARIABLE, default=None, _sync=True) or "workspaceblobstore"

    # -- computes, environments, datasets, experiments
    @property
    def compute_targets(self) -> dict[str, Any]:
        return list_compute_targets(self)

    @property
    def environments(self) -> dict[str, Any]:
        return Environment.list(self)

    @property
    def datasets(self) -> dict[str, Any]:
        return self._collection("datasets")

    @property
    def experiments(self) -> dict[str, Any]:
        return self._collection("experiments")

    def _collection(self, name: str) -> dict[str, Any]:
        if name not in _COLLECTIONS:
            importlib.import_module(_COLLECTION_MODULES[name])
        return _COLLECTIONS[name](self)


def _find_config(start: Path, file_name: str) -> Path | None:
    start = start.resolve()
    if start.is_file():
        return start
    for folder in (start, *start.parents):
        for candidate in (folder / ".azureml" / file_name, folder / file_name):
            if candidate.is_file():
                return candidate
    return None


_tls.share()  # the Prefect API clients this process makes share one TLS context per CA bundle (see _tls)

"""One TLS context per CA bundle for Prefect's API clients, instead of one per client.

Prefect 3.9 builds a new `ssl.SSLContext` from its CA bundle (certifi's, or
`PREFECT_API_SSL_CERT_FILE`) every time an API client is created. Loading the bundle costs 35-130 ms
of CPU on the project's machines, and a pipeline run creates clients often: the runner six times
(its own reads, the flow engine, the cancel watcher, Prefect's log and event services), and every
`PipelineRun.get_status()` one; a process's first server version check and each `wss://` events
connection build one more. `share()` hands those modules of Prefect a view of `ssl` whose
`create_default_context(cafile=...)` returns the context already built for that bundle (rebuilt
when the file changes). Contexts built this way are only read after creation (httpx takes them as
they are), so sharing one between clients is safe. Every other use of `ssl` is untouched.
"""

from __future__ import annotations

import os
import ssl
import threading
import types

import certifi
import prefect._internal.version_checking as version_checking
import prefect._internal.websockets as websockets
import prefect.client.orchestration as orchestration
from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

_LOCK = threading.Lock()
_CONTEXTS: dict[tuple, ssl.SSLContext] = {}


class _SharedContexts(types.ModuleType):
    """`ssl`, except that verified client contexts for a CA file are built once per file version."""

    def __getattr__(self, name: str):
        return getattr(ssl, name)

    @staticmethod
    def create_default_context(purpose=ssl.Purpose.SERVER_AUTH, *, cafile=None, capath=None, cadata=None):
        if cafile is None or capath is not None or cadata is not None or purpose != ssl.Purpose.SERVER_AUTH:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
        try:
            st = os.stat(cafile)
        except OSError:  # let ssl say what is wrong with it
            return ssl.create_default_context(purpose, cafile=cafile)
        key = (os.path.abspath(cafile), st.st_mtime_ns, st.st_size)
        with _LOCK:
            if key not in _CONTEXTS:
                _CONTEXTS[key] = ssl.create_default_context(purpose, cafile=cafile)
            return _CONTEXTS[key]


def share() -> None:
    """Make Prefect's API clients share their TLS contexts (idempotent)."""
    for module in (orchestration, version_checking, websockets):
        if not isinstance(module.ssl, _SharedContexts):
            module.ssl = _SharedContexts("ssl")


def warm() -> None:
    """Build the context for Prefect's configured CA bundle now (the warm runner does, before it forks)."""
    share()
    if not PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
        _SharedContexts.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())

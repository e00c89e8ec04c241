"""Workspace: PREFECT_API_URL winning, and Prefect's clients sharing TLS contexts."""

from __future__ import annotations

from prefect_aml import Workspace


def test_prefect_api_url_wins(prefect_server, tmp):
    ws = Workspace(prefect_api_url="http://127.0.0.1:9/api")
    assert ws.api_url() == prefect_server
    with ws.client() as client:  # the client talks to the process's own API, not the config's
        assert str(client.api_url).rstrip("/") == prefect_server


def test_prefect_clients_share_one_tls_context_per_ca_bundle(prefect_server, tmp, monkeypatch):
    """Prefect loads its CA bundle for every API client; with prefect-aml imported it is loaded once per
    bundle (and again when the file changes), and every client gets that context."""
    import shutil
    import ssl

    import certifi
    import prefect
    from prefect.client.orchestration import get_client

    import prefect_aml._tls as tls

    built = []
    real = ssl.create_default_context

    def counting(*args, **kwargs):
        built.append(kwargs.get("cafile"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    monkeypatch.setattr(tls, "_CONTEXTS", {})
    bundle = tmp / "ca.pem"
    shutil.copy(certifi.where(), bundle)
    monkeypatch.setenv("PREFECT_API_SSL_CERT_FILE", str(bundle))
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    try:
        contexts = []
        for _ in range(3):
            with get_client(sync_client=True) as client:
                client.hello()
                contexts.append(client._client._transport._pool._ssl_context)
        assert built == [str(bundle)] and contexts[0] is contexts[1] is contexts[2]
        # a process's first server version check (each events client makes one) takes the same context
        import asyncio
        import logging

        from prefect._internal import version_checking

        version_checking._clear_api_version_check_cache()
        asyncio.run(version_checking.check_server_version(prefect_server, logging.getLogger("test")))
        assert version_checking._is_api_version_check_cached((prefect_server, prefect.__version__))
        assert built == [str(bundle)]
        bundle.write_text(bundle.read_text() + "\n")  # a changed bundle is loaded again
        with get_client(sync_client=True) as client:
            assert client._client._transport._pool._ssl_context is not contexts[0]
        assert built == [str(bundle)] * 2
    finally:
        monkeypatch.delenv("PREFECT_API_SSL_CERT_FILE")
        refresh_global_settings_context()

"""The `prefect-aml` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="Azure ML (SDK v1) pipelines on Prefect.", no_args_is_help=True)
server = typer.Typer(help="The embedded local Prefect server (SQLite under $PREFECT_AML_HOME).",
                     no_args_is_help=True)
app.add_typer(server, name="server")


@server.command("start")
def server_start() -> None:
    """Start the embedded server in the background (or find it running)."""
    from prefect_aml import _embedded

    url = _embedded.ensure_server()
    typer.echo(f"Prefect server running: API {url}, UI {url.removesuffix('/api')}")


@server.command("stop")
def server_stop() -> None:
    """Stop the embedded server started from this home."""
    from prefect_aml import _embedded

    typer.echo("stopped" if _embedded.stop_server() else "no embedded server was running")


@server.command("status")
def server_status() -> None:
    """Say whether the embedded server answers."""
    from prefect_aml import _embedded

    url = _embedded.server_url()
    if _embedded.is_healthy(url):
        typer.echo(f"running: {url}")
    else:
        typer.echo(f"not running ({url})")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

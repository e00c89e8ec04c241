"""The `prefect-aml` command."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
import threading
from pathlib import Path

import anyio
import typer
from prefect.context import refresh_global_settings_context

from prefect_aml import _embedded, envbuild
from prefect_aml._azureml import SHIM_DIR, real_sdk
from prefect_aml.compute import ComputeTarget
from prefect_aml.deployments.trigger import watch
from prefect_aml.environment import Environment
from prefect_aml.exceptions import ComputeTargetException, EnvironmentException
from prefect_aml.flows import forkserver
from prefect_aml.workspace import Workspace

app = typer.Typer(help="Azure ML (SDK v1) pipelines on Prefect.", no_args_is_help=True)


def _connect(ws: Workspace) -> None:
    """This command's process works for `ws`: its Prefect API (and the processes it starts) become the workspace's."""
    os.environ["PREFECT_API_URL"] = ws.api_url()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    refresh_global_settings_context()
server = typer.Typer(help="The embedded local Prefect server (SQLite under $PREFECT_AML_HOME).",
                     no_args_is_help=True)
app.add_typer(server, name="server")


@server.command("start")
def server_start() -> None:
    """Start the embedded server in the background (or find it running)."""

    url = _embedded.ensure_server()
    typer.echo(f"Prefect server running: API {url}, UI {url.removesuffix('/api')}")


@server.command("stop")
def server_stop() -> None:
    """Stop the embedded server started from this home, and the warm runner."""

    if forkserver.stop():
        typer.echo("stopped the warm runner")
    typer.echo("stopped" if _embedded.stop_server() else "no embedded server was running")


@server.command("status")
def server_status() -> None:
    """Say whether the embedded server answers."""

    url = _embedded.server_url()
    if _embedded.is_healthy(url):
        typer.echo(f"running: {url}")
    else:
        typer.echo(f"not running ({url})")
        raise typer.Exit(1)


worker = typer.Typer(help="Workers: the nodes of a compute target (a Prefect work pool).", no_args_is_help=True)
app.add_typer(worker, name="worker")


@worker.command("start")
def worker_start(
    compute: str = typer.Argument(..., help="the compute target's name, e.g. cpu-cluster"),
    name: str = typer.Option(None, help="this worker's name (default: Prefect's)"),
    poll_seconds: float = typer.Option(1.0, help="how often to ask for work (Prefect's default is 10 s)"),
    limit: int = typer.Option(1, help="steps this node runs at once (an Azure ML node runs one)"),
) -> None:
    """Run a worker for COMPUTE here, in the foreground: it takes the compute's steps from its work pool.

    Any machine that reaches the workspace's Prefect API (PREFECT_API_URL, or the workspace's
    config.json) and has prefect-aml installed can be a node; start as many as the compute's max_nodes."""


    ws = Workspace.from_config()
    try:
        target = ComputeTarget(ws, compute)
    except ComputeTargetException as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    if not target.work_pool:
        typer.echo(f"Compute {compute!r} is a {target.type}: its nodes are Dask workers "
                   f"({target._start_hint()}), not Prefect workers.", err=True)
        raise typer.Exit(2)
    _connect(ws)  # the embedded server, when that is the workspace's API; the worker inherits the URL
    pool_type = "docker" if target.type == "DockerCompute" else "process"
    os.environ["PREFECT_WORKER_QUERY_SECONDS"] = str(poll_seconds)
    os.environ["PREFECT_WORKER_PREFETCH_SECONDS"] = str(max(poll_seconds, 1.0))
    if pool_type == "process":  # steps run warm, in this process (see prefect_aml/flows/worker.py)

        from prefect_aml.flows.worker import serve  # the worker's machinery loads only for this command

        refresh_global_settings_context()  # the poll settings above
        typer.echo(f"Starting a worker for compute {compute!r} (work pool {target.work_pool!r}), "
                   f"polling every {poll_seconds:g} s")
        anyio.run(serve, target.work_pool, name, limit)
        return
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", target.work_pool, "--type", pool_type,
            "--limit", str(limit)]
    if name:
        argv += ["--name", name]
    env = dict(os.environ, PREFECT_WORKER_QUERY_SECONDS=str(poll_seconds),
               PREFECT_WORKER_PREFETCH_SECONDS=str(max(poll_seconds, 1.0)))
    typer.echo(f"Starting a {pool_type} worker for compute {compute!r} (work pool {target.work_pool!r}), "
               f"polling every {poll_seconds:g} s: prefect worker start --pool {target.work_pool} ...")
    os.execvpe(argv[0], argv, env)


def _value(text: str):

    try:
        return json.loads(text)
    except ValueError:
        return text


@app.command("explain")
def explain(
    target: str = typer.Argument(..., help="FILE.py:FUNCTION, a function that takes a Workspace and returns a Pipeline"),
    param: list[str] = typer.Option([], "--param", "-p", help="a pipeline parameter, NAME=VALUE (repeatable)"),
    regenerate_outputs: bool = typer.Option(False, help="as submit(..., regenerate_outputs=True) would"),
) -> None:
    """Say, step by step, whether a submit now would reuse earlier results or run, and why. Runs nothing."""


    path, _, func = target.rpartition(":")
    if not path or not func or not Path(path).is_file():
        typer.echo(f"Give FILE.py:FUNCTION, e.g. examples/iris/run_pipeline.py:build (got {target!r}).", err=True)
        raise typer.Exit(2)
    params = {}
    for item in param:
        name, eq, value = item.partition("=")
        if not eq:
            typer.echo(f"--param {item!r}: write NAME=VALUE.", err=True)
            raise typer.Exit(2)
        params[name] = _value(value)
    spec = importlib.util.spec_from_file_location("_aml_explain_target", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).resolve().parent))
    spec.loader.exec_module(module)
    if not hasattr(module, func):
        typer.echo(f"{path} has no function {func!r}.", err=True)
        raise typer.Exit(2)
    pipeline = getattr(module, func)(Workspace.from_config())
    pipeline.explain_reuse(pipeline_parameters=params or None, regenerate_outputs=regenerate_outputs)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="the address to listen on"),
    port: int = typer.Option(8788, help="the port to listen on"),
    token: str = typer.Option(None, envvar="PREFECT_AML_SERVE_TOKEN",
                              help="the bearer token callers must send (default: $PREFECT_AML_SERVE_TOKEN)"),
    triggers: bool = typer.Option(True, help="also watch the datastore triggers (as `prefect-aml triggers watch`)"),
) -> None:
    """Serve Azure ML's REST routes for published pipelines and endpoints (OpenAPI at /openapi.json)."""

    import uvicorn  # the REST service (uvicorn, FastAPI) loads only for this command

    from prefect_aml.deployments.rest import create_app

    if not token:
        typer.echo("Set a bearer token: --token or PREFECT_AML_SERVE_TOKEN (callers send "
                   "'Authorization: Bearer <token>').", err=True)
        raise typer.Exit(2)
    ws = Workspace.from_config()
    _connect(ws)
    if triggers:

        threading.Thread(target=watch, args=(ws,), daemon=True, name="aml-triggers").start()
    typer.echo(f"Serving workspace {ws.name!r} on http://{host}:{port} (OpenAPI: http://{host}:{port}/openapi.json)")
    uvicorn.run(create_app(ws, token), host=host, port=port, log_level="warning")


triggers_app = typer.Typer(help="Datastore triggers (schedules that run a pipeline on new files).",
                           no_args_is_help=True)
app.add_typer(triggers_app, name="triggers")


@triggers_app.command("watch")
def triggers_watch() -> None:
    """Poll every active datastore trigger at its interval, in the foreground (Ctrl-C stops)."""

    ws = Workspace.from_config()
    _connect(ws)
    typer.echo(f"Watching the datastore triggers of workspace {ws.name!r}")
    try:
        watch(ws)
    except KeyboardInterrupt:
        pass


compat_app = typer.Typer(help="Azure ML v1 imports (`import azureml.core`) for a whole Python environment.",
                         no_args_is_help=True)
app.add_typer(compat_app, name="compat")
_PTH = "prefect_aml_azureml_compat.pth"


def _pth_path():

    return Path(sysconfig.get_paths()["purelib"]) / _PTH


@compat_app.command("enable")
def compat_enable() -> None:
    """Make `import azureml...` resolve to prefect_aml in every Python process of this environment (a .pth file)."""

    found = real_sdk()
    if found:
        typer.echo(f"The Azure ML SDK ({found}) is installed in this environment; prefect-aml does not shadow it. "
                   "Use an environment without it.", err=True)
        raise typer.Exit(2)
    path = _pth_path()
    path.write_text(f"{SHIM_DIR}\n")
    typer.echo(f"enabled: {path} puts {SHIM_DIR} on sys.path; `import azureml.core` now loads prefect_aml "
               "(undo with `prefect-aml compat disable`)")


@compat_app.command("disable")
def compat_disable() -> None:
    """Remove the .pth file `compat enable` wrote."""
    path = _pth_path()
    if path.exists():
        path.unlink()
        typer.echo(f"disabled: removed {path}")
    else:
        typer.echo("not enabled in this environment")


env_app = typer.Typer(help="Built step environments: what is cached here, build one ahead of time, prune.",
                       no_args_is_help=True)
app.add_typer(env_app, name="env")


@env_app.command("list")
def env_list() -> None:
    """The environments built on this machine (under the workspace home, or $PREFECT_AML_ENVS_DIR)."""
    home = Workspace.from_config().home
    entries = envbuild.cached(home)
    if not entries:
        typer.echo(f"no environments built under {envbuild.envs_root(home)}")
    for e in entries:
        packages = " ".join(r for r in e["requirements"] if not r.startswith("-"))
        typer.echo(f"{e['key']}  {e['name']!r}  python {e['python']}  {len(e['lock'])} distributions  "
                   f"last used {e['idle_days']:.1f} days ago  {packages}")


@env_app.command("build")
def env_build(
    name: str = typer.Argument(..., help="a registered environment's name, or a requirements.txt / conda .yml file"),
    version: str = typer.Option(None, help="the registered version (default: the latest)"),
) -> None:
    """Build an environment on this machine now, as its first step would, and print its lock."""
    ws = Workspace.from_config()
    try:
        if Path(name).is_file():
            env = (Environment.from_conda_specification(Path(name).stem, name) if name.endswith((".yml", ".yaml"))
                   else Environment.from_pip_requirements(Path(name).stem, name))
        else:
            env = Environment.get(ws, name, version=version)
        details = env.build_local(ws)
    except EnvironmentException as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    for line in details.lock:
        typer.echo(f"  {line}")


@env_app.command("prune")
def env_prune(
    days: float = typer.Option(30.0, help="remove environments no step used for this many days"),
    dry_run: bool = typer.Option(False, help="only say what would be removed"),
) -> None:
    """Remove the built environments no run used for DAYS days (a later step builds its own again)."""
    gone = envbuild.prune(Workspace.from_config().home, days, dry_run=dry_run)
    for e in gone:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {e['key']} ({e['name']!r}, last used "
                   f"{e['idle_days']:.0f} days ago)")
    if not gone:
        typer.echo(f"nothing unused for {days:g} days")


if __name__ == "__main__":
    app()

"""Step environments built for real: an environment's packages become a cached virtual environment (uv).

An environment that asks for packages (`python.user_managed_dependencies = False`, with pip or conda
packages) is turned into a specification of PyPI requirements: conda names mapped by `CONDA_TO_PYPI`,
Azure ML's own packages skipped (the step runtime stands for them), the Python version asked for.
Its hash names a virtual environment built once per machine with `uv venv` + `uv pip install` under
`<workspace home>/envs/` (or `$PREFECT_AML_ENVS_DIR`): under a lock, in a temporary folder renamed
when complete, with what was installed (`uv pip freeze`) kept beside it. `check` resolves the same
specification without installing anything (at submit, before any step runs); `step_process` points a
step's process at the environment's interpreter and prefect-aml's light step runtime (`_runtime/`).

    from pathlib import Path
    from prefect_aml import envbuild

    definition = {"name": "demo", "packages": {"pip_packages": ["tabulate==0.9.0"]}}
    envbuild.check(definition, Path("/tmp/aml-home"))            # resolvable, or EnvironmentException
    built = envbuild.ensure(definition, Path("/tmp/aml-home"), log=print)
    print(built.python, built.lock)                               # .../bin/python ['tabulate==0.9.0']
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uv

from prefect_aml.exceptions import EnvironmentException

FORMAT = 1  # what a built environment holds; a change of it changes every key
MIN_PYTHON = (3, 8)  # the oldest interpreter the light step runtime runs on
ENVS_DIR_ENV = "PREFECT_AML_ENVS_DIR"
STRICT_ENV = "PREFECT_AML_STRICT_PYTHON"
RUNTIME_DIR = Path(__file__).resolve().parent / "_runtime"  # holds the `azureml` package of built environments
META = "prefect-aml"  # inside a built environment: env.json, requirements.in, lock.txt, last-used
# Docker computes: environments are built inside the step's container, kept on a named volume of the engine
DOCKER_VOLUME = "prefect-aml-envs"  # or $PREFECT_AML_DOCKER_ENVS_VOLUME
DOCKER_VOLUME_ENV = "PREFECT_AML_DOCKER_ENVS_VOLUME"
DOCKER_CACHE = "/var/cache/prefect-aml"

# conda package names whose PyPI name differs (everything else is looked up on PyPI under its own name)
CONDA_TO_PYPI = {
    "pytorch": "torch", "pytorch-cpu": "torch", "py-xgboost": "xgboost", "py-xgboost-cpu": "xgboost",
    "pytables": "tables", "python-graphviz": "graphviz", "msgpack-python": "msgpack", "matplotlib-base": "matplotlib",
    "numpy-base": "numpy", "opencv": "opencv-python", "py-opencv": "opencv-python", "psycopg2": "psycopg2-binary",
    "tensorflow-gpu": "tensorflow", "pyqt": "PyQt5", "pywin32-ctypes": "pywin32-ctypes", "lightgbm": "lightgbm",
    "python-dateutil": "python-dateutil", "pyyaml": "PyYAML", "py-spy": "py-spy", "arrow-cpp": "pyarrow",
    "libopencv": "opencv-python",
}
# conda packages with no PyPI equivalent: refused, with what to do instead
CONDA_ONLY = {
    "cudatoolkit": "CUDA comes inside the PyPI wheels of torch and tensorflow, or as nvidia-*-cu12 packages",
    "cudnn": "cuDNN comes inside the PyPI wheels of torch and tensorflow, or as nvidia-cudnn-cu12",
    "nccl": "NCCL comes inside torch's PyPI wheels, or as nvidia-nccl-cu12",
    "mkl-include": "a C library; the PyPI wheels of numpy and scipy bring their own BLAS",
    "blas": "the PyPI wheels of numpy and scipy bring their own BLAS", "nomkl": "a conda build variant",
    "libgcc-ng": "a system library", "libstdcxx-ng": "a system library", "_libgcc-mutex": "a conda build detail",
    "openssl": "a system library (the interpreter's own)", "ca-certificates": "a system package (or certifi)",
    "nodejs": "a runtime, not a Python package", "r-base": "R, not Python", "r-essentials": "R, not Python",
    "openjdk": "a Java runtime, not a Python package",
}
CONDA_TOOLING = {"pip", "uv", "conda"}  # installers: uv does their work
# extras of Azure ML's data packages that bring what the step runtime reads direct tabular inputs with
AZUREML_EXTRAS = {"pandas": ("pandas", "pyarrow"), "parquet": ("pyarrow",)}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_of(requirement: str) -> tuple[str | None, list[str]]:
    """The distribution name and extras of a requirement line (None for a URL or a path)."""
    if "://" in requirement or requirement.startswith((".", "/", "~")):
        return None, []
    m = _NAME.match(requirement)
    if not m:
        return None, []
    return m.group(1), [_norm(e) for e in (m.group(2) or "").split(",") if e.strip()]


def redact(line: str) -> str:
    """A requirement or uv's output with the credentials of index URLs (`https://user:token@host`) masked."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", line)


def _is_azureml(requirement: str) -> bool:
    name, _ = _name_of(requirement)
    return name is not None and _norm(name).startswith("azureml-")


def _conda_requirement(package: str, env_name: str) -> str | None:
    """A conda match spec (`numpy`, `numpy=1.21`, `numpy==1.21.0=py39h`, `numpy >=1.2`, `conda-forge::numpy`)
    as a PyPI requirement; None for installers uv stands for; refused when conda-only."""
    spec = package.split("::")[-1].strip()
    m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    if not m:
        raise EnvironmentException(f"Environment {env_name!r}: conda package {package!r} is not a package name "
                                   "with an optional version (e.g. 'numpy=1.26').")
    name, rest = m.group(1), m.group(2).strip()
    key = _norm(name)
    if key in CONDA_ONLY:
        raise EnvironmentException(
            f"Environment {env_name!r}: conda package {package!r} has no PyPI equivalent ({CONDA_ONLY[key]}). "
            "Environments are built from PyPI here: remove it, or list the PyPI package that stands for it in "
            "pip_packages.")
    if key in CONDA_TOOLING:
        return None
    pypi = CONDA_TO_PYPI.get(key, name)
    if not rest:
        return pypi
    if rest[0] not in "=<>!~":  # "numpy 1.21": conda's fuzzy match
        rest = "=" + rest
    if rest.startswith("=") and not rest.startswith("=="):  # =1.21 (fuzzy, a build string may follow)
        version = rest[1:].split("=")[0].rstrip("*").rstrip(".")
        return f"{pypi}=={version}.*"
    if rest.startswith("=="):
        return f"{pypi}=={rest[2:].split('=')[0]}"  # the build string after a second '=' is conda's own
    return pypi + rest.replace(" ", "")


def _python_request(version: str | None) -> tuple[str, tuple[int, int]] | None:
    """`3.6.2`, `3.8`, `3.8.*`, `>=3.9` as (operator, (major, minor)); None when no version is asked for."""
    if not version:
        return None
    m = re.match(r"^\s*(>=|>|==|=)?\s*(\d+)\.(\d+)", str(version))
    if not m:
        return None
    return (m.group(1) if m.group(1) in (">=", ">") else "=="), (int(m.group(2)), int(m.group(3)))


def _fits(minor: tuple[int, int], request: tuple[str, tuple[int, int]]) -> bool:
    op, wanted = request
    return minor >= wanted if op == ">=" else minor > wanted if op == ">" else minor == wanted


@dataclass(frozen=True)
class EnvSpec:
    """What a built environment holds: PyPI requirement lines (pip options first) and the Python asked for."""

    name: str
    requirements: tuple[str, ...]
    python: str | None = None
    skipped: tuple[str, ...] = ()  # Azure ML's own packages: the step runtime stands for them
    origins: dict[str, str] = field(default_factory=dict, compare=False)  # requirement -> its conda package

    @functools.cached_property
    def hash(self) -> str:
        """The environment's identity (machine-independent): part of a step's reuse key."""
        request = _python_request(self.python)
        python = f"{request[0]}{request[1][0]}.{request[1][1]}" if request else None
        data = {"format": FORMAT, "requirements": self.requirements, "python": python}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        return (f"EnvSpec(name={self.name!r}, requirements={[redact(r) for r in self.requirements]}, "
                f"python={self.python!r}, skipped={list(self.skipped)})")

    @property
    def packages(self) -> list[str]:
        return [r for r in self.requirements if not r.startswith("-")]

    def describe(self, requirement: str) -> str:
        origin = self.origins.get(requirement)
        return f"conda package {origin!r} (PyPI {requirement!r})" if origin else f"pip package {requirement!r}"


def spec_of(definition: dict[str, Any] | None) -> EnvSpec | None:
    """The specification of a step's environment definition (`Environment._definition()`, a step spec's
    `environment`); None when nothing is to be built: user-managed, or no packages beyond Azure ML's own."""
    if not definition or definition.get("user_managed"):
        return None
    packages = definition.get("packages") or {}
    name = str(definition.get("name") or "(unnamed)")
    python = packages.get("python_version")
    options, reqs, skipped, extras, origins = [], [], [], [], {}
    for line in packages.get("pip_packages") or []:
        line = str(line).split(" #", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):  # --index-url, --extra-index-url, --find-links, ...: uv reads them in the file
            options.append(line)
        elif _is_azureml(line):
            skipped.append(line)
            extras += [p for e in _name_of(line)[1] for p in AZUREML_EXTRAS.get(e, ())]
        else:
            reqs.append(line)
    for package in packages.get("conda_packages") or []:
        package = str(package).strip()
        if re.match(r"^(\S+::)?python(\s*[=<>!~ ]|$)", package):  # python=3.8 among the packages
            python = python or re.sub(r"^(\S+::)?python\s*=*\s*", "", package) or None
            continue
        req = _conda_requirement(package, name)
        if req is None:
            continue
        if _is_azureml(req):
            skipped.append(package)
            continue
        reqs.append(req)
        origins[req] = package
    have = {_norm(n) for n, _ in map(_name_of, reqs) if n}
    reqs += [p for p in dict.fromkeys(extras) if _norm(p) not in have]
    if not reqs:
        return None
    return EnvSpec(name, tuple(dict.fromkeys(options)) + tuple(sorted(set(reqs))), python, tuple(skipped), origins)


# -- interpreters --------------------------------------------------------------------------------
def _uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # the interpreters found here (PATH, uv's own), not a download
    env.setdefault("NO_COLOR", "1")
    return env


@functools.cache
def _pythons(path: str) -> tuple[tuple[tuple[int, int, int], str], ...]:
    """CPython interpreters uv finds (on `path`, uv's own installs), MIN_PYTHON or newer, newest first."""
    proc = subprocess.run([uv.find_uv_bin(), "python", "list", "--only-installed", "--output-format", "json"],
                          capture_output=True, text=True, env=_uv_env())
    found: dict[tuple[int, int, int], str] = {}
    try:
        items = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    except ValueError:  # not what this uv version answers: this interpreter only
        items = []
    for item in items:
        parts = item.get("version_parts") or {}
        version = (parts.get("major", 0), parts.get("minor", 0), parts.get("patch", 0))
        if item.get("implementation") == "cpython" and item.get("variant", "default") == "default" \
                and version[:2] >= MIN_PYTHON and item.get("path"):
            found.setdefault(version, item["path"])
    return tuple(sorted(found.items(), reverse=True))


def available_pythons() -> list[tuple[str, str]]:
    """(version, path) of the interpreters environments can be built on here, this one first."""
    own = (".".join(map(str, sys.version_info[:3])), sys.executable)
    return [own] + [(".".join(map(str, v)), p) for v, p in _pythons(os.environ.get("PATH", ""))
                    if v != tuple(sys.version_info[:3])]


def nearest_python(request: tuple[str, tuple[int, int]] | None,
                   available: list[tuple[str, str]]) -> tuple[str, str, bool]:
    """(version, path, exact) of the interpreter for `request` among `available` (the first one preferred):
    one that fits, else the nearest minor version (the newer of two as near)."""
    def minor(v: str) -> tuple[int, int]:
        major, mnr = v.split(".")[:2]
        return int(major), int(mnr)

    if request is None:
        return (*available[0], True)
    fitting = [a for a in available if _fits(minor(a[0]), request)]
    if fitting:
        return (*fitting[0], True)
    wanted = request[1]
    best = min(available, key=lambda a: (abs(minor(a[0])[1] - wanted[1]) + 100 * abs(minor(a[0])[0] - wanted[0]),
                                         -minor(a[0])[1]))
    return (*best, False)


def choose_python(spec: EnvSpec, strict: bool | None = None) -> tuple[str, str, str | None]:
    """(path, version, note) of the interpreter `spec` is built on: the one asked for when it is here, else the
    nearest (the note says so, naming both), or with `strict` (default: $PREFECT_AML_STRICT_PYTHON) refused."""
    request = _python_request(spec.python)
    if request is None or _fits(sys.version_info[:2], request):  # no look-up needed: this interpreter
        return sys.executable, ".".join(map(str, sys.version_info[:3])), None
    available = available_pythons()
    version, path, exact = nearest_python(request, available)
    if exact:
        return path, version, None
    too_old = request[0] == "==" and request[1] < MIN_PYTHON
    why = (f" (the step runtime needs Python {'.'.join(map(str, MIN_PYTHON))} or newer)" if too_old else "")
    if strict if strict is not None else os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes"):
        raise EnvironmentException(
            f"Environment {spec.name!r} asks for Python {spec.python}, which is not available here{why} "
            f"(available: {', '.join(v for v, _ in available)}); strict mode ({STRICT_ENV}) refuses the nearest. "
            "Install that Python where uv finds it (on PATH, or `uv python install`), or change the "
            "environment's python version.")
    return path, version, (f"Environment {spec.name!r} asks for Python {spec.python}, which is not available "
                           f"here{why}; it is built with the nearest available, Python {version} ({path}).")


# -- where environments live ---------------------------------------------------------------------
def envs_root(home: Path | str) -> Path:
    """The folder of built environments: $PREFECT_AML_ENVS_DIR, else `<workspace home>/envs`."""
    return Path(os.environ.get(ENVS_DIR_ENV) or Path(home) / "envs")


def env_key(spec: EnvSpec) -> str:
    """The folder name of `spec`'s environment on this machine: its hash, the platform and the interpreter
    looking (a container of another image on a shared volume has another)."""
    ident = f"{spec.hash}|{sys.platform}|{platform.machine()}|{sys.base_prefix}|{sys.version_info[:2]}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


@dataclass
class BuiltEnv:
    """A built environment: its folder, what it holds (`meta`, env.json), and whether this call built it."""

    path: Path
    meta: dict[str, Any]
    built: bool = False
    seconds: float | None = None  # how long the step that asked for it waited (a build, or a look-up)

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    @property
    def hash(self) -> str:
        return self.meta["hash"]

    @property
    def lock(self) -> list[str]:
        """The installed distributions, exactly (`name==version` lines, as `uv pip freeze` gives them)."""
        return list(self.meta.get("lock") or [])

    def notes(self) -> list[str]:
        """What a step's log says once about its environment: a substituted Python, skipped Azure ML packages."""
        out = [self.meta["python_note"]] if self.meta.get("python_note") else []
        if self.meta.get("skipped"):
            out.append(f"Environment {self.meta['name']!r}: Azure ML's own packages are served by prefect-aml's "
                       f"step runtime and not installed: {', '.join(self.meta['skipped'])}")
        return out

    def details(self) -> dict[str, Any]:
        """For a step run's record and details: the environment's hash, interpreter and lock, and whether
        this step built it (else it found it built) in how many seconds."""
        return {"name": self.meta["name"], "hash": self.hash, "python": self.meta["python"],
                "python_requested": self.meta.get("python_requested"), "requirements": self.meta["requirements"],
                "skipped": self.meta.get("skipped", []), "lock": self.lock, "path": str(self.path),
                "built": self.built, "seconds": self.seconds}


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


def find(spec: EnvSpec, home: Path | str) -> BuiltEnv | None:
    """The built environment of `spec` here, if complete and its interpreter still there (a stat or two)."""
    folder = envs_root(home) / env_key(spec)
    if not (folder / "bin" / "python").exists():  # follows the link to the base interpreter
        return None
    try:
        meta = json.loads((folder / META / "env.json").read_text())
    except (OSError, ValueError):
        return None
    _touch(folder / META / "last-used")  # for `prefect-aml env prune`
    return BuiltEnv(folder, {**meta, "name": spec.name})  # one build serves every environment of those packages


@contextlib.contextmanager
def _locked(root: Path, key: str, say: Callable[[str], None], what: str) -> Iterator[None]:
    """One builder per environment across threads and processes (an advisory file lock, freed when its
    holder exits however it exits)."""
    folder = root / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{key}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{what}: waiting for the build another process has started")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run_uv(args: list[str], say: Callable[[str], None], cwd: Path, what: str) -> None:
    """Run uv, its output line by line to `say`; its last lines in the error when it fails."""
    tail: deque[str] = deque(maxlen=25)
    proc = subprocess.Popen([uv.find_uv_bin(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, cwd=cwd, env=_uv_env())
    for line in proc.stdout:
        line = redact(line.rstrip())
        if line:
            tail.append(line)
            say(line)
    if proc.wait():
        raise EnvironmentException(f"{what} could not be built; uv said:\n" + "\n".join(tail))


def _discard(folder: Path) -> None:
    """Remove a folder so that no one sees it half-removed: renamed aside first."""
    trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def ensure(definition: dict[str, Any] | EnvSpec | None, home: Path | str, log: Callable[[str], None] | None = None,
           strict: bool | None = None) -> BuiltEnv | None:
    """The built environment of a step's environment definition, built now if it is not yet (once, however
    many threads and processes ask at the same time); None when it needs none (the worker's own Python)."""
    spec = definition if isinstance(definition, EnvSpec) or definition is None else spec_of(definition)
    if spec is None:
        return None
    found = find(spec, home)
    if found is not None:
        return found
    say = log or (lambda _line: None)
    root, key = envs_root(home), env_key(spec)
    what = f"Environment {spec.name!r}"
    with _locked(root, key, say, what):
        found = find(spec, home)  # built by the one we waited for
        if found is not None:
            return found
        return _build(spec, root, key, say, strict, what)


def _build(spec: EnvSpec, root: Path, key: str, say: Callable[[str], None], strict: bool | None,
           what: str) -> BuiltEnv:
    started = time.monotonic()
    interpreter, version, note = choose_python(spec, strict)
    for stale in root.glob(f".tmp-{key}-*"):  # a build that died (we hold the lock: no one else builds it)
        shutil.rmtree(stale, ignore_errors=True)
    final = root / key
    if final.exists():  # complete once, but its base interpreter has gone
        _discard(final)
    tmp = root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    say(f"{what}: building {len(spec.packages)} requirement(s) with Python {version}: {' '.join(spec.packages)}")
    if note:
        say(note)
    if spec.skipped:
        say(f"{what}: Azure ML's own packages are served by prefect-aml's step runtime and not installed: "
            f"{', '.join(spec.skipped)}")
    try:
        _run_uv(["venv", str(tmp), "--python", interpreter, "--relocatable", "--no-project", "--quiet"], say,
                root, what)
        meta_dir = tmp / META
        meta_dir.mkdir()
        requirements = meta_dir / "requirements.in"
        requirements.write_text("\n".join(spec.requirements) + "\n")
        python = str(tmp / "bin" / "python")
        _run_uv(["pip", "install", "--python", python, "-r", str(requirements)], say, root, what)
        frozen = subprocess.run([uv.find_uv_bin(), "pip", "freeze", "--python", python], capture_output=True,
                                text=True, cwd=root, env=_uv_env(), check=True).stdout
        lock = [line for line in frozen.splitlines() if line.strip()]
        (meta_dir / "lock.txt").write_text("\n".join(lock) + "\n")
        meta = {"format": FORMAT, "name": spec.name, "hash": spec.hash, "key": key,
                "requirements": [redact(r) for r in spec.requirements], "python_requested": spec.python,
                "python": version,
                "interpreter": interpreter, "python_note": note, "skipped": list(spec.skipped), "lock": lock,
                "built": datetime.now(UTC).isoformat(), "build_seconds": round(time.monotonic() - started, 2),
                "uv": importlib.metadata.version("uv")}
        (meta_dir / "env.json").write_text(json.dumps(meta, indent=1))
        (meta_dir / "last-used").touch()
        os.rename(tmp, final)  # complete: from now on it is found
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"{what}: built in {time.monotonic() - started:.1f} s ({len(lock)} distributions), at {final}")
    return BuiltEnv(final, meta, built=True)


class BuildDetails:
    """What `Environment.build` / `build_local` return (v1's ImageBuildDetails): status, log and lock."""

    def __init__(self, name: str, built: BuiltEnv | None, log: list[str]):
        self.name = name
        self.environment = built  # None: nothing to build (user-managed, or no packages beyond Azure ML's own)
        self.status = "Succeeded"
        self._log = log

    @property
    def lock(self) -> list[str]:
        return self.environment.lock if self.environment else []

    def get_log(self) -> str:
        return "\n".join(self._log)

    def wait_for_completion(self, show_output: bool = True) -> BuildDetails:
        """The build ran when it was asked for (its progress was shown then): returns at once."""
        if show_output:
            print(f"Environment {self.name!r} build status: {self.status}")
        return self

    def __repr__(self) -> str:
        where = self.environment.path if self.environment else "the worker's Python"
        return f"BuildDetails(name={self.name!r}, status={self.status!r}, environment={str(where)!r})"


def build_details(definition: dict[str, Any], home: Path | str,
                  show: Callable[[str], None] = print) -> BuildDetails:
    """Build (or find) a definition's environment now, each line of progress to `show` and to the log."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        show(line)

    name = str(definition.get("name") or "(unnamed)")
    built = ensure(definition, home, log=say)
    if built is None:
        say(f"Environment {name!r} has nothing to build (user-managed, or no packages beyond Azure ML's own): "
            "its steps run in the worker's Python.")
    elif not built.built:
        say(f"Environment {name!r} is built already: {built.path} ({len(built.lock)} distributions).")
    return BuildDetails(name, built, lines)


# -- the check at submit -------------------------------------------------------------------------
def _culprits(spec: EnvSpec, message: str) -> list[str]:
    words = {_norm(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", message)}
    return [r for r in spec.packages if (n := _name_of(r)[0]) and _norm(n) in words]


def check(definition: dict[str, Any] | None, home: Path | str, strict: bool | None = None) -> EnvSpec | None:
    """Refuse, before any step runs, an environment that cannot be built: a conda package with no PyPI
    equivalent, a package or version that does not exist, requirements that conflict. Resolves against the
    index without installing (`uv pip compile`); a resolvable answer is kept, so each is asked once."""
    spec = spec_of(definition)
    if spec is None or find(spec, home) is not None:
        return spec
    root = envs_root(home)
    answer = root / ".resolved" / f"{env_key(spec)}.txt"
    if answer.exists():
        return spec
    _, version, _ = choose_python(spec, strict)
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([uv.find_uv_bin(), "pip", "compile", "-", "--python-version",
                           ".".join(version.split(".")[:2]), "--no-header", "--quiet"],
                          input="\n".join(spec.requirements) + "\n", capture_output=True, text=True, cwd=root,
                          env=_uv_env())
    if proc.returncode:
        message = redact(" ".join(line.strip() for line in proc.stderr.splitlines() if line.strip()))
        message = re.sub(r"^error: ", "", message)
        named = _culprits(spec, message)
        reason = ("does not exist on the package index" if "not found in the package registry" in message
                  else "has no such version on the package index"
                  if re.search(r"there is no version of|is available and you require", message)
                  else "cannot be installed (together)")
        which = ", ".join(spec.describe(r) for r in named) or "its requirements"
        hint = (" Add its PyPI name to prefect_aml.envbuild.CONDA_TO_PYPI, or list the PyPI package in pip_packages."
                if any(r in spec.origins for r in named) and reason.startswith("does not") else "")
        raise EnvironmentException(f"Environment {spec.name!r} cannot be built: {which} {reason}.{hint} "
                                   f"(uv: {message})")
    answer.parent.mkdir(parents=True, exist_ok=True)
    tmp = answer.with_name(f"{answer.name}.{os.getpid()}.partial")
    tmp.write_text(proc.stdout)
    os.replace(tmp, answer)
    return spec


# -- the step's process --------------------------------------------------------------------------
def step_process(built: BuiltEnv, env: dict[str, str], variables: dict[str, str] | None = None) -> str:
    """Point a step process's environment variables `env` (changed in place) at `built`; returns its interpreter.

    Its `sys.path` holds the environment's own packages and the light step runtime (`Run.get_context()`, the
    `azureml` names), not the worker's: the worker's PYTHONPATH is dropped, the environment's own
    (`variables`, from its definition) kept after the runtime."""
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONSTARTUP"):
        env.pop(name, None)
    own = (variables or {}).get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_DIR), *([own] if own else [])])
    env["VIRTUAL_ENV"] = str(built.path)
    env["PATH"] = os.pathsep.join([str(built.path / "bin"), *([env["PATH"]] if env.get("PATH") else [])])
    return built.python


def materialise_direct_input(dataset: Any, dest: Path) -> dict[str, str]:
    """A dataset passed directly (`as_named_input` without a mode), made local for a built environment's
    runtime, which has none of prefect-aml's readers: a table as one Parquet file, files downloaded."""
    dest.mkdir(parents=True, exist_ok=True)
    if hasattr(dataset, "to_pandas_dataframe"):
        path = dest / "data.parquet"
        dataset.to_pandas_dataframe().to_parquet(path, index=False)
        return {"kind": "tabular", "path": str(path)}
    dataset.download(dest, overwrite=True)
    return {"kind": "file", "path": str(dest)}


def docker_job_variables(definition: dict[str, Any] | None) -> dict[str, Any]:
    """What a Docker compute's container needs for a step with packages: a named volume of the engine that
    keeps the environments built in its containers (and uv's cache), and where they are."""
    if spec_of(definition) is None:
        return {}
    volume = os.environ.get(DOCKER_VOLUME_ENV) or DOCKER_VOLUME
    return {"volumes": [f"{volume}:{DOCKER_CACHE}"],
            "env": {ENVS_DIR_ENV: f"{DOCKER_CACHE}/envs", "UV_CACHE_DIR": f"{DOCKER_CACHE}/uv"}}


# -- what is cached ------------------------------------------------------------------------------
def cached(home: Path | str) -> list[dict[str, Any]]:
    """The built environments here: each one's env.json, with its folder and when a step last used it."""
    root = envs_root(home)
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        meta_file = folder / META / "env.json"
        if folder.name.startswith(".") or not meta_file.is_file():
            continue
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            continue
        used = folder / META / "last-used"
        last = used.stat().st_mtime if used.exists() else meta_file.stat().st_mtime
        out.append({**meta, "path": str(folder), "last_used": datetime.fromtimestamp(last, UTC).isoformat(),
                    "idle_days": (time.time() - last) / 86400})
    return out


def prune(home: Path | str, days: float, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove the environments no step used for `days` days (and what dead builds left); returns them."""
    root = envs_root(home)
    gone = []
    for entry in cached(home):
        if entry["idle_days"] < days:
            continue
        gone.append(entry)
        if dry_run:
            continue
        (root / ".locks").mkdir(exist_ok=True)
        fd = os.open(root / ".locks" / f"{entry['key']}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not while it is being (re)built
            _discard(Path(entry["path"]))
            (root / ".resolved" / f"{entry['key']}.txt").unlink(missing_ok=True)
        except BlockingIOError:
            gone.pop()
        finally:
            os.close(fd)
    if not dry_run and root.is_dir():
        for leftover in [*root.glob(".trash-*"), *root.glob(".tmp-*")]:
            if time.time() - leftover.stat().st_mtime > 86400:  # not a build in progress
                shutil.rmtree(leftover, ignore_errors=True)
    return gone

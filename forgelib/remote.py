"""Configure where `dvc push` / `dvc pull` share the pipeline's artifacts (a DVC remote).

A thin wrapper over `dvc remote add -d` so that `forge remote add` fails with a clear message
(exit 2) instead of a DVC traceback when dvc is missing or the directory is not a DVC repository,
and so that a local directory remote is stored as an absolute path: DVC resolves a relative one
against the config file's folder, which surprises whoever typed it relative to their shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from forgelib.errors import ForgeError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A remote URL with a scheme (s3://, gs://, ssh://, azure://, https://); anything else is a path."""


def config_file(local: bool) -> str:
    """The DVC config file a remote lands in: .dvc/config is committed and shared with every clone;
    .dvc/config.local is gitignored and stays on this machine (credentials, personal paths)."""
    return ".dvc/config.local" if local else ".dvc/config"


def normalize_url(url: str, cwd: Path) -> str:
    """A URL with a scheme as given; a local directory as an absolute path (relative to ``cwd``)."""
    if _URL.match(url):
        return url
    return str((cwd / Path(url).expanduser()).resolve())


def _dvc_repo_root(cwd: Path) -> Path:
    if shutil.which("dvc") is None:
        raise ForgeError("dvc is not on PATH; install the project with `make venv` (or `pip install dvc`)")
    for folder in (cwd.resolve(), *cwd.resolve().parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise ForgeError(f"{cwd.resolve()} is not inside a DVC repository (no .dvc/ folder); run this in the Forge checkout")


def _dvc(args: list[str], root: Path) -> str:
    result = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ForgeError(f"`dvc {' '.join(args)}` failed: {message[-1] if message else f'exit {result.returncode}'}")
    return result.stdout


def add_remote(url: str, *, name: str = "storage", local: bool = False, cwd: Path = Path(".")) -> tuple[str, str]:
    """Make ``url`` the default remote ``name`` (replacing a remote of that name). Returns the URL
    as stored and the config file it was written to."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ForgeError(f"--name: {name!r} is not a valid remote name; use letters, digits, '_', '.', '-'")
    root = _dvc_repo_root(cwd)
    stored = normalize_url(url, cwd)
    scope = ["--local"] if local else []
    _dvc(["remote", "add", *scope, "--default", "--force", name, stored], root)
    return stored, config_file(local)


def list_remotes(cwd: Path = Path(".")) -> list[dict]:
    """Every configured remote as {name, url, default}. Read from `dvc config --list`, which merges
    the config files (config.local last, so its default wins) and does not wrap long lines."""
    root = _dvc_repo_root(cwd)
    urls, default = {}, None
    for line in _dvc(["config", "--list"], root).splitlines():
        key, _, value = line.partition("=")
        if key == "core.remote":
            default = value
        elif key.startswith("remote.") and key.endswith(".url"):
            urls[key[len("remote."):-len(".url")]] = value
    return [{"name": name, "url": url, "default": name == default} for name, url in urls.items()]

"""Where the MLflow store is: MLFLOW_TRACKING_URI, else SQLite at the repository root (`mlflow.db`).

A library, so that record keeping (which writes the store) and the `faceverify` command (which loads
registered models from it) read one answer; it imports neither MLflow nor anything else of pipeline/.
"""
from __future__ import annotations

import os
from pathlib import Path


def repo_root(start: Path | None = None) -> Path:
    """The real repository root, also from inside `.dvc/tmp/exps/...` copies made by queued experiments."""
    here = Path(os.environ.get("DVC_ROOT") or start or Path.cwd()).resolve()
    parts = here.parts
    for k in range(len(parts) - 2):
        if parts[k:k + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:k])
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir() or (candidate / ".git").exists():
            return candidate
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, else None."""
    return Path(uri[len("sqlite:///"):].split("?")[0]) if uri.startswith("sqlite:///") else None

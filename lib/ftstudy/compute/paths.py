"""Where things live: project root, outputs, caches, and the offline data mirror."""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout holding `params/` (so notebooks work from any working directory)."""
    env = os.environ.get("FTSTUDY_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        if (parent / "params").is_dir() and (parent / "lib" / "ftstudy").is_dir():
            return parent
    return Path.cwd()


def cache_dir() -> Path:
    """Converted models and derived data files; shared by all runs of all studies."""
    env = os.environ.get("FTSTUDY_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "ftstudy"
    base.mkdir(parents=True, exist_ok=True)
    return base


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The offline mirror folder, or None to use the Hugging Face hub."""
    value = explicit or os.environ.get("FTSTUDY_DATA_DIR")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = project_root() / path  # relative to the checkout (a notebook's cwd is notebooks/)
    return path.resolve()


def run_folder(run_dir: str | os.PathLike) -> Path:
    """A run folder as an absolute path (relative ones are under the project root)."""
    path = Path(run_dir)
    if not path.is_absolute():
        path = project_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return path

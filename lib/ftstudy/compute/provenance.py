"""Provenance: what produced a run (package versions, git commit, hardware, data hashes)."""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from ftstudy.compute import data, paths

PACKAGES = ["ftstudy", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "lm_eval",
            "datasets", "papermill", "pandas", "numpy", "jupyter-book"]


def package_versions() -> dict[str, str | None]:
    return versions(PACKAGES)


@functools.lru_cache(maxsize=None)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process."""
    st = Path(path).stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def versions(names=PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def dataset_hashes(names, data_dir) -> dict[str, str]:
    """sha256 of every mirror file of these datasets; hub datasets are named by hub id."""
    out = {}
    for name in sorted(set(names)):
        if data_dir is None:
            out[name] = "hub:" + data.source(name)["hub"][0]
            continue
        for f in data.needed_files(name, data_dir):
            out[str(f.relative_to(data_dir))] = file_sha256(f) if f.is_file() else "missing"
    return out


def git_state(root: Path | None = None) -> dict:
    root = root or paths.project_root()

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--", "lib", "notebooks", "params"))}


def hardware() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "cpus": os.cpu_count(), "gpu": None}
    try:
        import torch
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def environment(seed: int | None, datasets: list[str], data_dir=None,
                compute_dtype: str | None = None) -> dict:
    """The env.json of a run. Never includes tokens or other secrets from the environment."""
    from ftstudy.compute import precision

    hw = hardware()
    hw["cpu"] = precision.cpu_capability()
    return {"packages": package_versions(), "git": git_state(), "hardware": hw,
            "compute_dtype": compute_dtype, "seed": seed,
            "data_files": dataset_hashes(datasets, paths.data_dir(data_dir)),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

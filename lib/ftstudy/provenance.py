"""Provenance: what produced a run (package versions, git commit, hardware, data hashes)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from ftstudy import paths

PACKAGES = ["ftstudy", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "lm_eval",
            "datasets", "papermill", "pandas", "numpy", "jupyter-book"]


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def data_hashes(datasets: list[str], data_dir) -> dict[str, str]:
    """sha256 of every mirror file a run read (hub runs record the hub id instead)."""
    from ftstudy import data

    data_dir = paths.data_dir(data_dir)
    out = {}
    for name in sorted(set(datasets)):
        if data_dir is None:
            out[name] = "hub:" + data.SOURCES[name]["hub"][0]
            continue
        for f in data.needed_files(name, data_dir):
            out[str(f.relative_to(data_dir))] = file_sha256(f)
    return out


def environment(seed: int | None, datasets: list[str], data_dir=None) -> dict:
    """The env.json of a run. Never includes tokens or other secrets from the environment."""
    return {"packages": package_versions(), "git": git_state(), "hardware": hardware(),
            "seed": seed, "data_files": data_hashes(datasets, data_dir),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

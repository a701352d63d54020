"""Provenance: what produced a run (package versions, git commit, hardware, data hashes)."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from ftstudy import paths

PACKAGES = ["ftstudy", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "lm_eval",
            "datasets", "papermill", "pandas", "numpy", "jupyter-book"]


def package_versions() -> dict[str, str | None]:
    from ftstudy.fingerprint import versions

    return versions(PACKAGES)


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
    from ftstudy import fingerprint, precision

    hw = hardware()
    hw["cpu"] = precision.cpu_capability()
    return {"packages": package_versions(), "git": git_state(), "hardware": hw,
            "compute_dtype": compute_dtype, "seed": seed,
            "data_files": fingerprint.dataset_hashes(datasets, paths.data_dir(data_dir)),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

"""Executors: where the grid's cells run. The registry names one module per executor.

An executor module has two functions, and knows nothing of the grid:

- `check_available()`: raise `Unavailable` (with what is missing) before anything runs;
- `run_cells(cells, outputs, data_dir, options, log) -> {run_id: status}`: run each cell
  with `ftstudy.run.cell.run_cell` (or a job that calls it) and wait.

Adding one is one file plus one entry below (README: "Adding an executor").
"""
from __future__ import annotations

import importlib

REGISTRY = {
    "local": "ftstudy.run.local",   # one cell after another, here
    "slurm": "ftstudy.run.slurm",   # one Slurm job per cell, through submitit
}


class Unavailable(RuntimeError):
    """An executor cannot run here (missing tools or packages): said before any compute."""


def get(name: str):
    if name not in REGISTRY:
        raise KeyError(f"unknown executor {name!r}; known: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def options(executor_params, kind: str, overrides: dict | None = None) -> dict:
    """An executor's options: its own section of the params file's `executor:` (e.g.
    `executor.slurm`), or `executor.options` for one without a typed section, then flags."""
    section = getattr(executor_params, kind, None)
    base = section.model_dump() if section is not None else dict(executor_params.options)
    return {**base, **(overrides or {})}

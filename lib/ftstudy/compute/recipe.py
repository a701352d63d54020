"""A cell's recipe: which notebook computes it and the parameters papermill injects.

Part of the compute package (and so of every run's code fingerprint): this mapping decides
what a notebook is asked to compute.
"""
from __future__ import annotations

from pathlib import Path

from ftstudy.compute import methods, paths


def notebook_for(method: str) -> Path:
    name = "base" if method in methods.REFERENCES else method
    return paths.project_root() / "notebooks" / f"{name}.ipynb"


def parameters_for(cell: dict, run_dir: Path, data_dir) -> dict:
    """What papermill injects. Plain values only: never secrets (they would be written
    into the executed notebook)."""
    p = dict(run_dir=str(run_dir), run_id=cell["run_id"], model=cell["model"],
             evaluation=cell["evaluation"], data_dir=str(data_dir) if data_dir else None)
    p["load"] = cell.get("load", {})
    p["tracking"] = cell.get("tracking")
    if cell.get("control"):
        p.update(train_data=None, train_data_name=None, train_size=0, seed=cell["seed"],
                 training=cell["training"], adapter=cell["adapter"])
    elif cell["method"] in methods.REFERENCES:
        p["reference"] = cell["method"]
    else:
        p.update(train_data=cell["mix"], train_data_name=cell["train_data"],
                 train_size=cell["train_size"], seed=cell["seed"], training=cell["training"],
                 adapter=cell["adapter"], load=cell["load"])
        if cell.get("distributed"):
            p["distributed"] = cell["distributed"]
    return p

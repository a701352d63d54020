"""Notebook overhead per grid cell: papermill start + kernel + imports, in seconds.

Three things, each the median of `--repeats` runs: papermill on an empty notebook (kernel
start and stop), papermill on a notebook whose one cell does the imports a method notebook
needs, and the same imports in a plain `python -c` (what a bare script pays anyway).
Kernel shutdown is timed both ways: `graceful` (papermill's default) and `immediate`
(what the grid uses, since every output is on disk when the last cell ends).

    python bench/notebook_overhead.py [--repeats 3]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

import common

IMPORTS = ("import ftstudy\n"
           "from ftstudy.compute import data, evaluate, methods, paths, results, train\n"
           "from ftstudy.book import plots\n"
           "import torch, transformers, peft, lm_eval\n"
           "from transformers import Trainer\n"
           "from lm_eval.models.huggingface import HFLM")


def notebook(folder: Path, name: str, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(source)]
    path = folder / name
    nbformat.write(nb, path)
    return path


def papermill_wall(path: Path, shutdown: str) -> tuple[float, float]:
    out = path.with_suffix(".out.ipynb")
    start = time.perf_counter()
    papermill.execute_notebook(str(path), str(out), parameters={"x": 2}, cwd=str(common.ROOT),
                               progress_bar=False, log_output=False, shutdown_kernel=shutdown)
    wall = time.perf_counter() - start
    cell = json.loads(out.read_text())["cells"][-1]["metadata"]["papermill"]["duration"]
    return wall, cell


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ftstudy-bench-nb-"))
    empty = notebook(folder, "empty.ipynb", "pass")
    imports = notebook(folder, "imports.ipynb", IMPORTS)
    runs = {k: [] for k in ("empty_graceful", "empty_immediate", "imports_graceful",
                            "imports_immediate", "imports_cell", "plain_python_imports")}
    for _ in range(a.repeats):
        for shutdown in ("graceful", "immediate"):
            runs[f"empty_{shutdown}"].append(papermill_wall(empty, shutdown)[0])
            wall, cell = papermill_wall(imports, shutdown)
            runs[f"imports_{shutdown}"].append(wall)
            runs["imports_cell"].append(cell)
        runs["plain_python_imports"].append(common.timed([common.PY, "-c", IMPORTS]))
    med = {k: common.median(v) for k, v in runs.items()}
    med["notebook_only_overhead_s"] = med["imports_immediate"] - med["plain_python_imports"]
    for k, v in med.items():
        print(f"{k:28s} {v:6.2f} s")
    common.save("notebook_overhead", dict(repeats=a.repeats, runs=runs, median=med))


if __name__ == "__main__":
    main()

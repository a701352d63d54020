"""Running Jupyter tools: the analysis notebook's parameter cells hidden, and the Jupyter Book
build as a subprocess with a heartbeat."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def executable(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def hide_parameter_cells(notebook: Path) -> None:
    """The book shows results, not the parameters papermill injected (local paths)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, notebook)


def with_heartbeat(cmd: list[str], what: str, every_s: float = 10.0) -> None:
    """Run `cmd`, printing that it is still running every `every_s` seconds."""
    import time

    start = time.time()
    proc = subprocess.Popen(cmd)
    while True:
        try:
            proc.wait(timeout=every_s)
            break
        except subprocess.TimeoutExpired:
            print(f"{what} ({time.time() - start:.0f} s)", flush=True)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)

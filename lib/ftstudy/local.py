"""The local executor: pending cells one after another on this machine, with a progress bar."""
from __future__ import annotations

import time
from pathlib import Path

from ftstudy.cell import describe, run_cell


def check_available() -> None:
    """Always available."""


def run_cells(cells: list[dict], outputs: Path, data_dir, options: dict, log=print) -> dict:
    from tqdm.auto import tqdm

    states = {}
    bar = tqdm(cells, desc="grid", unit="cell")
    for i, cell in enumerate(bar, 1):
        bar.set_postfix_str(describe(cell))
        start = time.time()
        states[cell["run_id"]] = run_cell(cell, outputs, data_dir)
        log(f"[{i}/{len(cells)}] {states[cell['run_id']]:6s} {cell['run_id']} {describe(cell)} "
            f"({time.time() - start:.0f} s)")
    return states

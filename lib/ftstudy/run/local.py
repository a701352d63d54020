"""The local executor: pending cells one after another on this machine, with a progress bar
and a line every ~10 s saying what the running cell is doing (from its progress.json)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ftstudy.compute import progress
from ftstudy.run.cell import describe, run_cell


def check_available() -> None:
    """Always available."""


def run_cells(cells: list[dict], outputs: Path, data_dir, options: dict, log=print) -> dict:
    from tqdm.auto import tqdm

    states = {}
    estimates = options.get("estimates") or {}
    if all(c["run_id"] in estimates for c in cells):  # ETA from estimated seconds of work
        bar = tqdm(total=round(sum(estimates[c["run_id"]] for c in cells)), desc=f"grid, {len(cells)} cells",
                   unit="s", bar_format="{desc}: {percentage:3.0f}%|{bar}| est. {n_fmt}/{total_fmt} s of work "
                                        "[{elapsed}<{remaining}{postfix}]")
    else:
        bar = tqdm(total=len(cells), desc="grid", unit="cell")
    with ThreadPoolExecutor(1) as pool:
        for i, cell in enumerate(cells, 1):
            start = time.time()
            name = f"[{i}/{len(cells)}] {describe(cell)}"
            future = pool.submit(run_cell, cell, outputs, data_dir)
            progress.watch(future, outputs / "runs" / f".tmp-{cell['run_id']}",
                           show=lambda text: bar.set_postfix_str(f"{describe(cell)}: {text}"),
                           line=lambda text: bar.write(f"{name}: {text}"),
                           line_every_s=float(options.get("progress_line_s", 10)))
            states[cell["run_id"]] = future.result()
            bar.update(round(estimates[cell["run_id"]]) if bar.unit == "s" else 1)
            (bar.write if log is print else log)(f"[{i}/{len(cells)}] {states[cell['run_id']]:6s} {cell['run_id']} {describe(cell)} "
                f"({time.time() - start:.0f} s)")
    bar.close()
    return states

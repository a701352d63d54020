"""Run one grid cell through the kit exactly as `ftstudy run` does (papermill, the method's
notebook, the library) and print its cost as one JSON line.

    python bench/kit_cell.py PARAMS.yaml METHOD [TRAIN_DATA]
"""
import json
import sys
import time
from pathlib import Path

import ftstudy  # noqa: F401  (thread settings)
from ftstudy.run import cell as cell_runner
from ftstudy.planning import grid
from ftstudy.compute import paths
from ftstudy.config import params as params_mod


def main():
    path, method = sys.argv[1], sys.argv[2]
    train_data = sys.argv[3] if len(sys.argv) > 3 else None
    params = params_mod.load(path)
    cell = next(c for c in grid.expand(params) if c["method"] == method and not c.get("control")
                and (train_data is None or c.get("train_data") == train_data))
    outputs = Path(params.output_dir).resolve()
    start = time.perf_counter()
    status = cell_runner.run_cell(cell, outputs, paths.data_dir(params.data_dir))
    wall = time.perf_counter() - start
    run = outputs / "runs" / cell["run_id"]
    metrics = json.loads((run / "metrics.json").read_text()) if status == "done" else {}
    print(json.dumps(dict(method=method, status=status, cell_wall_s=wall,
                          **{k: metrics.get(k) for k in ("train_wall_s", "train_tokens", "tokens_per_s",
                                                         "train_loss", "eval_wall_s", "peak_rss_mb")})))


if __name__ == "__main__":
    main()

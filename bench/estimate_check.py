"""How good is `--dry-run --calibrate`'s estimate? Calibrate this machine for a params file
(timed here, in seconds), estimate each cell of its grid as a fresh machine would (no
finished twins), and compare with the wall times the finished grid recorded.

    FTSTUDY_DATA_DIR=../shared/data python bench/estimate_check.py params/cpu-sweep.yaml [OUTPUTS]

OUTPUTS defaults to the params file's output_dir; every cell of the grid must have finished
there. Saves `estimate-<cpu kind>.json` (one entry per params file).
"""
import json
import sys
import time
from pathlib import Path

from common import RESULTS, cpu_kind, save

import ftstudy  # noqa: F401
from ftstudy.planning import calibrate, grid
from ftstudy.config import params
from ftstudy.compute import paths, results


def main():
    path = Path(sys.argv[1])
    p = params.load(path)
    outputs = Path(sys.argv[2] if len(sys.argv) > 2 else p.output_dir).resolve()
    cells = grid.expand(p, outputs)
    walls = {}
    for c in cells:
        status = outputs / "runs" / c["run_id"] / "status.json"
        if not status.is_file():
            raise SystemExit(f"{c['run_id']} ({c['method']}) has not run in {outputs}: run the grid first")
        walls[c["run_id"]] = results.read_json(status)["wall_s"]
    start = time.perf_counter()
    cals = calibrate.measure(p, paths.data_dir(p.data_dir))
    calibration_s = time.perf_counter() - start
    rows = [dict(run_id=c["run_id"], method=c["method"], trial=bool(c.get("trial")), real_s=walls[c["run_id"]],
                 estimated_s=calibrate.estimate(c, cals[c["model_name"]])) for c in cells]
    real, est = sum(r["real_s"] for r in rows), sum(r["estimated_s"] for r in rows)
    print(f"{path}: {len(rows)} cells, real {real / 60:.1f} min (sum of cell walls), estimated "
          f"{est / 60:.1f} min, ratio {est / real:.2f}; calibration took {calibration_s:.0f} s")
    for r in rows:
        print(f"  {r['method']:14s} {'trial' if r['trial'] else '     '} real {r['real_s']:6.0f} s  "
              f"estimated {r['estimated_s']:6.0f} s")
    previous = {}
    old = RESULTS / f"estimate-{cpu_kind()}.json"
    if old.is_file():
        previous = json.loads(old.read_text()).get("grids", {})
    previous[str(path)] = dict(cells=len(rows), real_s=real, estimated_s=est, ratio=est / real,
                               calibration_s=calibration_s, rows=rows, calibration=cals)
    save("estimate", {"grids": previous})


if __name__ == "__main__":
    main()

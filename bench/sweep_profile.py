"""Summarise a finished run of the learning-rate sweep profile (`params/cpu-sweep.yaml`):
wall time from the first cell's start to the last cell's end, per-method trial and run
walls, chosen rates. Run the grid first (`ftstudy run params/cpu-sweep.yaml` from a clean
output folder), then:

    python bench/sweep_profile.py [params/cpu-sweep.yaml]
"""
import sys
import time
from pathlib import Path

from common import ROOT, save

import ftstudy  # noqa: F401
from ftstudy.analysis import views, tables
from ftstudy.record import export
from ftstudy.planning import grid, tuning
from ftstudy.compute import methods, results
from ftstudy.config import params


def main():
    path = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "params" / "cpu-sweep.yaml")
    p = params.load(path)
    outputs = Path(p.output_dir).resolve()
    cells, waiting = grid.plan(p, outputs)
    if waiting:
        raise SystemExit(f"{len(waiting)} study runs still wait for their trials: run the grid first")
    states = {c["run_id"]: results.read_json(outputs / "runs" / c["run_id"] / "status.json") for c in cells}
    summary = views.tuning_summary(tables.collect(outputs, cells, tuning.configured_rates(p)).tuning)
    rows = []
    for method in p.methods:
        trial_ids = [c["run_id"] for c in cells if c["method"] == method and c.get("trial")]
        run_ids = [c["run_id"] for c in cells if c["method"] == method and not c.get("trial")]
        s = summary[summary["method"] == method]
        rows.append(dict(method=method, trials_wall_s=sum(states[i]["wall_s"] for i in trial_ids),
                         run_wall_s=sum(states[i]["wall_s"] for i in run_ids),
                         chosen_rate=float(s["chosen_rate"].iloc[0]) if len(s) else float("nan"),
                         default_rate=tuning.configured_rates(p)[method]))
    out = dict(params=str(path.relative_to(ROOT)), cells=len(cells),
               trials=sum(bool(c.get("trial")) for c in cells),
               references=sum(c["method"] in methods.REFERENCES for c in cells),
               study_runs=sum(not c.get("trial") and c["method"] not in methods.REFERENCES for c in cells),
               failed=sum(st["status"] != "done" for st in states.values()),
               wall_s=export.wall_span_s(list(states.values())), methods=rows,
               summarised=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"{out['cells']} cells, wall {out['wall_s'] / 60:.1f} min, failed {out['failed']}")
    save("sweep", out)


if __name__ == "__main__":
    main()

"""A long cell through the kit: `ftstudy run` on one method trained `--steps` optimizer steps over
as many distinct GSM8K-train examples as it sees (batch 4, one epoch), as a study's run would be.

Reads the run's own record: each step's wall time and the process's anonymous memory after it
(`metrics.json` `step_costs`), so it shows whether steps slow down or memory grows along
training, and keeps the progress lines `ftstudy run` printed while the cell ran. With
`--compile` the cell runs twice, from an empty compile cache (cold) and then from the cache the
first run filled (warm), and is kept apart (`long_cell_compile`).

    FTSTUDY_DATA_DIR=../shared/data python bench/long_cell.py [--method lora] [--steps 200] [--padding-free]
    FTSTUDY_DATA_DIR=../shared/data python bench/long_cell.py --padding-free --compile --steps 12
"""
import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

import common


def run(a, tmp: Path, name: str, env: dict) -> dict:
    """One `ftstudy run` of the long cell; what its record says of each step."""
    base = yaml.safe_load((common.ROOT / "params" / "cpu.yaml").read_text())
    training = {**base["training"], "max_steps": a.steps}
    training.update({k: True for k in ("padding_free", "compile") if getattr(a, k)})
    p = {**base, "study": "bench-long", "output_dir": str(tmp / name), "methods": {a.method: {}},
         "train_sizes": [a.steps * base["training"]["batch_size"]], "training": training,
         "evaluation": {**base["evaluation"], "tasks": {"gsm8k_nll": {"limit": 8}}}}
    params = tmp / f"{name}.yaml"
    params.write_text(yaml.safe_dump(p))
    start = time.perf_counter()
    proc = subprocess.run([str(common.ROOT / ".venv" / "bin" / "ftstudy"), "run", str(params)], cwd=common.ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    runs = [json.loads(f.read_text()) for f in (tmp / name / "runs").glob("*/metrics.json")]
    m = next(r for r in runs if r.get("method") == a.method)
    walls = [s["wall_s"] for s in m["step_costs"]]
    anon = [s["anon_mb"] for s in m["step_costs"]]
    tenth = max(1, len(walls) // 10)
    progress = [line for line in (proc.stdout + proc.stderr).splitlines() if "training step" in line]
    return dict(method=a.method, steps=len(walls), padding_free=a.padding_free, compile=a.compile,
                dtype=m["cell"]["compute_dtype"], tokens=m["train_tokens"], tokens_per_s=m["tokens_per_s"],
                train_wall_s=m["train_wall_s"], grid_wall_s=wall, first_step_s=walls[0],
                median_step_s=statistics.median(walls[1:]),
                first_tenth_median_s=statistics.median(walls[1:tenth + 1]),
                last_tenth_median_s=statistics.median(walls[-tenth:]),
                anon_mb_after_step_1=anon[0], anon_mb_at_tenth=anon[tenth], anon_mb_last=anon[-1],
                anon_mb_max=max(anon), peak_anon_mb=m.get("peak_anon_mb"), examples=m["training_data"]["kept"],
                step_walls=walls, anon_mb=anon, progress_lines=progress[:3] + progress[-3:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="lora")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--padding-free", action="store_true", help="training.padding_free: true")
    ap.add_argument("--compile", action="store_true", help="training.compile: true, cold then warm")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-bench-long-"))
    env = common.env()
    if a.compile:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")  # empty: the first run compiles cold
        result = {"cold": run(a, tmp, "cold", env), "warm": run(a, tmp, "warm", env)}
        print({k: {x: v for x, v in r.items() if x not in ("step_walls", "anon_mb")} for k, r in result.items()})
        common.save("long_cell_compile", result)
    else:
        result = run(a, tmp, "run", env)
        print({k: v for k, v in result.items() if k not in ("step_walls", "anon_mb")}, flush=True)
        common.save("long_cell", result)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Results anyone can read without compute: a finished grid's run records, copied into a
folder that is small enough to commit (`results/<study>/`), from which `ftstudy report
<params> --results <folder>` rebuilds the book.

Kept per run: its cell, status, metrics, environment, fingerprint, curve, executed notebook,
lm-eval's results and per-sample logs (gzipped: the paired statistics need them). Left out:
weights (`artifact/`), checkpoints, tracking logs, lm-eval's task YAMLs (rebuilt from the code).
"""
from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

from ftstudy.record import records

from ftstudy.record.records import RECORDS


def _copy_lm_eval(src: Path, dst: Path) -> None:
    for task_dir in sorted((src / "lm_eval").glob("*")):
        out = dst / "lm_eval" / task_dir.name
        out.mkdir(parents=True, exist_ok=True)
        if (task_dir / "results.json").is_file():
            shutil.copy(task_dir / "results.json", out / "results.json")
        if (task_dir / "samples.jsonl").is_file():
            with open(task_dir / "samples.jsonl", "rb") as f, open(out / "samples.jsonl.gz", "wb") as raw, \
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g:  # mtime 0: same bytes each export
                shutil.copyfileobj(f, g)


def export(outputs: str | Path, cells: list[dict], dest: str | Path, params_file: str | Path,
           replace: bool = False) -> dict:
    """Copy the records of `cells` (a grid's expansion) from `outputs` into `dest`, with a
    README saying how they were produced; returns {"runs": n, "bytes": total}. Everything is
    checked before anything is written (every run finished, every record readable, and no run
    already in `dest` dropped unless `replace`), and the runs are copied beside `dest` first,
    then swapped in: a failure loses nothing already there."""
    outputs, dest = Path(outputs).resolve(), Path(dest).resolve()
    if dest == outputs or outputs in dest.parents or dest in outputs.parents:
        raise ValueError(f"export destination {dest} overlaps the outputs folder {outputs}: choose another folder")
    ids = [c["run_id"] for c in cells]
    done = records.finished_runs(outputs, ids)
    missing = [i for i in ids if i not in done]
    if missing:
        raise ValueError(f"{len(missing)} cell(s) of the grid have not run in {outputs}: {', '.join(missing[:5])}")
    dropped = sorted(p.name for p in (dest / "runs").glob("*") if p.is_dir() and p.name not in ids)
    if dropped and not replace:
        raise ValueError(f"{dest / 'runs'} holds {len(dropped)} run(s) this grid does not produce "
                         f"({', '.join(dropped[:5])}): exporting would delete them; pass --replace to do so")
    staging = dest.parent / f".{dest.name}.export-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    envs, statuses = [], []
    for c in cells:
        src, dst = outputs / "runs" / c["run_id"], staging / "runs" / c["run_id"]
        dst.mkdir(parents=True)
        for name in RECORDS:
            if (src / name).is_file():
                shutil.copy(src / name, dst / name)
        status = records.read_json(src / "status.json")
        if status.get("notebook") and (src / status["notebook"]).is_file():
            shutil.copy(src / status["notebook"], dst / status["notebook"])
        _copy_lm_eval(src, dst)
        for step in sorted((src / "curve").glob("step_*")):
            _copy_lm_eval(step, dst / "curve" / step.name)
        statuses.append(status)
        if (src / "env.json").is_file():
            envs.append(records.read_json(src / "env.json"))
    dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest / "runs", ignore_errors=True)
    (staging / "runs").rename(dest / "runs")
    shutil.rmtree(staging, ignore_errors=True)
    total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    (dest / "README.md").write_text(_readme(params_file, cells, envs, statuses, total))
    return {"runs": len(cells), "bytes": total}


IDLE_S = 600  # a gap this long with no cell running ends a sitting (a grid stopped and resumed later)


def sittings(statuses: list[dict]) -> list[tuple[float, float]]:
    """A grid's sittings from its runs' status.json: (first start, last end) of each stretch in
    which cells ran with no gap of `IDLE_S` or more between one's end and the next one's start."""
    from datetime import datetime

    spans = sorted((datetime.strptime(s["started"], "%Y-%m-%dT%H:%M:%S").timestamp(), s.get("wall_s", 0.0))
                   for s in statuses if s.get("started"))
    out: list[list[float]] = []
    for start, wall in spans:
        if out and start - out[-1][1] < IDLE_S:
            out[-1][1] = max(out[-1][1], start + wall)
        else:
            out.append([start, start + wall])
    return [(a, b) for a, b in out]


def wall_span_s(statuses: list[dict]) -> float:
    """A grid's wall time: first cell's start to last cell's end in each sitting, summed (a resumed
    grid's idle days do not count); the sum of cell walls when start times are not recorded."""
    spans = sittings(statuses)
    if not spans:
        return sum(s.get("wall_s", 0.0) for s in statuses)
    return sum(b - a for a, b in spans)


def _readme(params_file, cells, envs, statuses, total) -> str:
    env = envs[0] if envs else {}
    hardware = env.get("hardware") or {}
    cpu = hardware.get("cpu") or {}
    commits = sorted({((e.get("git") or {}).get("commit") or "unknown")[:10]
                      + (" (with uncommitted changes)" if (e.get("git") or {}).get("dirty") else "") for e in envs})
    wall, walls, parts = wall_span_s(statuses), [s.get("wall_s", 0.0) for s in statuses], len(sittings(statuses))
    return "\n".join([
        f"# Results of `{params_file}`", "",
        f"{len(cells)} runs, exported {time.strftime('%Y-%m-%d %H:%M:%S')} by `ftstudy export`; "
        f"{total / 1e6:.1f} MB, no weights. Rebuild the book from these files alone (no training, no "
        f"evaluation):", "", "```bash", f"ftstudy report {params_file} --results <this folder>", "```", "",
        "## How they were produced", "",
        f"- code: git commit(s) {', '.join(commits)} (each run's `env.json` and `fingerprint.json` say which)",
        f"- machine: {hardware.get('machine', '?')}, {hardware.get('cpus', '?')} CPUs, "
        f"{'GPU ' + str(hardware['gpu']) if hardware.get('gpu') else 'no GPU'}; torch CPU capability "
        f"{cpu.get('torch_cpu_capability', 'unknown')}, native bf16: {cpu.get('native_bf16', 'unknown')}; "
        f"compute dtype {env.get('compute_dtype', 'unknown')}",
        f"- wall time: {wall / 60:.1f} min from the first cell's start to the last cell's end"
        + (f" within each of {parts} sittings, summed (a gap of {IDLE_S // 60} min or more "
           "with no cell running ends a sitting)" if parts > 1 else "")
        + f" (sum of cell walls {sum(walls) / 60:.1f} min)",
        "- per run: `cell.json` (parameters), `status.json`, `metrics.json` (cost, scores), `env.json` "
        "(versions, hardware, data hashes, lock), `fingerprint.json`, `curve.json` and its per-sample logs "
        "when the run kept a curve, the executed notebook, and lm-eval's results and per-sample logs "
        "(`lm_eval/<task>/samples.jsonl.gz`)", ""])


def params_file(results: Path) -> Path:
    """The params file a results folder was exported from: the one its README's first line names
    (`readme` writes it), else params/<folder name>.yaml."""
    from ftstudy.compute import paths

    readme = results / "README.md"
    if readme.is_file():
        first = readme.read_text().splitlines()[0]
        if "`" in first:
            named = Path(first.split("`")[1])
            path = named if named.is_absolute() else paths.project_root() / named
            if path.is_file():
                return path
    guess = paths.project_root() / "params" / f"{results.name}.yaml"
    if guess.is_file():
        return guess
    raise FileNotFoundError(f"{results}: no params file found (README.md names none, no params/{results.name}.yaml)")

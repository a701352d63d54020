"""The report: results tables -> executed analysis notebook -> Jupyter Book (1.x) HTML.

Nothing is executed twice: run notebooks are executed by the grid, the analysis notebook
once here, and the book is built with execution off.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ftstudy import paths, results, tables
from ftstudy.methods import REFERENCES
from ftstudy.params import Params


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def methods_page(params: Params, cells: list[dict]) -> str:
    """Each method's configuration as run (defaults + the params file's deltas)."""
    lines = ["# Methods as run", "",
             f"Configurations resolved from `{params.study}` params: each method's defaults "
             "(`lib/ftstudy/methods.py`) with the params file's deltas applied.", ""]
    seen = set()
    for c in cells:
        if c["method"] in seen or c.get("control"):
            continue
        seen.add(c["method"])
        cfg = {k: c.get(k) for k in ("adapter", "load", "training") if c.get(k) is not None}
        lines += [f"## {c['method']}", "", "```yaml",
                  yaml.safe_dump(cfg or {"evaluation only": True}, sort_keys=False).strip(),
                  "```", ""]
    ev = cells[0]["evaluation"] if cells else {}
    lines += ["## Evaluation", "", "lm-evaluation-harness tasks (upstream configs; data from the "
              "configured source), per-task limits and shots:", "", "```yaml",
              yaml.safe_dump(ev, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def provenance_page(outputs: Path, book_dir: Path, run_ids: set[str], stale: dict | None = None) -> str:
    """Per run of the grid: status, parameters, versions, data hashes, fingerprint (and
    whether it still matches today's code and data: `stale`, {run id: parts that changed}),
    and its executed notebook."""
    runs_dir = book_dir / "generated" / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    lines = ["# Provenance", "", "Every run folder of this grid, failed ones included. Each links "
             "to its executed notebook (download) and lists what produced it.", ""]
    for status_file in sorted((outputs / "runs").glob("*/status.json")):
        if status_file.parent.name not in run_ids:
            continue
        run = status_file.parent
        status = results.read_json(status_file)
        cell = results.read_json(run / "cell.json") if (run / "cell.json").is_file() else {}
        env = results.read_json(run / "env.json") if (run / "env.json").is_file() else {}
        nb = run / status.get("notebook", "")
        lines += [f"## `{run.name}` {cell.get('method', status.get('method'))} "
                  f"({status['status']})", ""]
        if nb.is_file():
            shutil.copy(nb, runs_dir / f"{run.name}.ipynb")
            lines += [f"Executed notebook: {{download}}`{run.name}.ipynb <runs/{run.name}.ipynb>`", ""]
        if status.get("error"):
            lines += ["Error:", "", "```text", status["error"], "```", ""]
        if stale is None:
            lines += ["Fingerprint against today's code and data: not checked (no data mirror to hash).", ""]
        elif stale.get(run.name):
            lines += [f"**Stale**: since this run, these changed: {'; '.join(stale[run.name])}.", ""]
        else:
            lines += ["Fingerprint: matches today's code, packages and data.", ""]
        fp = run / "fingerprint.json"
        shown = {"cell": {k: v for k, v in cell.items() if k != "evaluation"},
                 "fingerprint": results.read_json(fp) if fp.is_file() else "not recorded",
                 "packages": env.get("packages"), "git": env.get("git"),
                 "hardware": env.get("hardware"), "data_files (sha256)": env.get("data_files"),
                 "wall_s": round(status.get("wall_s", 0), 1)}
        lines += ["```yaml", yaml.safe_dump(json.loads(json.dumps(shown, default=str)),
                                            sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def limitations_page(params: Params, outputs: Path) -> str:
    """What this grid can and cannot tell, computed from its own settings and results."""
    import pandas as pd

    from ftstudy import stats

    ev = params.evaluation
    lines = ["# Limitations", "",
             f"Computed from the `{params.study}` params and results; rebuilt with the report.", "",
             "## What the evaluation sizes can detect", "",
             "| task | items per run | smallest accuracy difference detectable (80% power, α=0.05, "
             "independent runs at p=0.5) |", "|---|---|---|"]
    for task, cfg in ev.tasks.items():
        n = cfg.limit
        if task.endswith("_nll"):
            lines.append(f"| {task} | {n or 'all'} | log-likelihood: see the paired intervals in the results |")
        else:
            mdd = stats.min_detectable_difference(n) if n else float("nan")
            lines.append(f"| {task} | {n or 'all'} | {100 * mdd:.0f} points |" if n else
                         f"| {task} | all | depends on the full set size |")
    paired_path = outputs / "aggregated.csv"
    if paired_path.is_file() and paired_path.stat().st_size > 1:
        p = pd.read_csv(paired_path)
        p = p[(p["comparison"] == "vs base") & p["metric"].eq("bits_per_byte")]
        if not p.empty:
            width = (p["ci_high"] - p["ci_low"]).median()
            lines += ["", f"Paired log-likelihood differences: the median 95% interval of a change in "
                      f"bits per byte is {width:.4f} wide across this grid's {len(p)} comparisons."]
    sizes = ", ".join(str(s) for s in params.train_sizes)
    seeds = ", ".join(str(s) for s in params.seeds)
    lines += ["", "## What the grid does not vary", "",
              f"- Models: {', '.join(params.models)}; training sizes: {sizes}; seeds: {seeds}. "
              "A single value of any of these means the report cannot say how results depend on it.",
              f"- Training: {params.training.max_steps} steps of batch {params.training.batch_size}, "
              f"sequences up to {params.training.max_length} tokens (longer examples are dropped, "
              "not cut; the results page counts them).",
              f"- Every run and its reference are evaluated in {ev.dtype} on the same items, drawn at "
              f"random (seed {ev.sample_seed}) where a task has a limit.", ""]
    if ev.dtype != "float32":
        lines += [f"- Evaluation in {ev.dtype}: full fine-tuning's weights (and its reference's) are "
                  "rounded to it, so an update smaller than its resolution is lost for that method; "
                  "adapters stay in fp32.", ""]
    if len(params.seeds) == 1:
        lines += ["- One seed per configuration: the intervals cover the sampling of evaluation items, "
                  "not the randomness of training (adapter initialisation, data order).", ""]
    caveats = [f"- {name} is dequantised from the GGUF file `{m.gguf.file or m.gguf.path}`: a "
               "4-bit-quantised file scores a little below the full-precision model it came from."
               for name, m in params.models.items() if m.gguf is not None]
    if data_dir_is_mirror(params) and "hellaswag" in ev.tasks:
        caveats.append("- HellaSwag from the offline mirror lacks lm-eval's capitalisation of `ctx_b`, "
                       "so its numbers can differ slightly from those on the hub copy.")
    caveats += chance_lines(outputs)
    if caveats:
        lines += ["## Caveats", "", *caveats, ""]
    return "\n".join(lines)


def data_dir_is_mirror(params: Params) -> bool:
    return paths.data_dir(params.data_dir) is not None


def chance_lines(outputs: Path) -> list[str]:
    """For each reference model and multiple-choice task: its accuracy next to chance and
    the majority-answer baseline, with the 95% interval of the accuracy (Wilson)."""
    import pandas as pd
    from statsmodels.stats.proportion import proportion_confint

    path = outputs / "baselines.csv"
    if not path.is_file() or path.stat().st_size <= 1:
        return []
    b = pd.read_csv(path)
    r = pd.read_csv(outputs / "results.csv")
    out = []
    for _, row in b[b["method"].isin(REFERENCES)].iterrows():
        acc = r[(r["run_id"] == row["run_id"]) & (r["task"] == row["task"]) & (r["metric"] == "acc")]
        if acc.empty:
            continue
        n = int(row["n_items"])
        k = round(float(acc["value"].iloc[0]) * n)
        lo, hi = proportion_confint(k, n, method="wilson")
        where = ("above" if lo > row["chance"] else "below" if hi < row["chance"]
                 else "not distinguishable from")
        out.append(f"- {row['model']} {row['method']} on {row['task']}: accuracy {k / n:.2f} "
                   f"(95% CI {lo:.2f} to {hi:.2f}, {n} items), {where} chance ({row['chance']:.2f}); "
                   f"majority-answer baseline {row['majority_baseline']:.2f}.")
    return out


def _hide_parameter_cells(notebook: Path) -> None:
    """The book shows results, not the parameters papermill injected (local paths)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, notebook)


def build(params: Params, book: bool = True, book_dir: str | Path | None = None,
          results_dir: str | Path | None = None) -> Path:
    """Collect results, execute the analysis notebook, write the generated pages, build.
    `results_dir`: read the runs from there (e.g. committed results) instead of the params
    file's output_dir; nothing is trained or evaluated either way."""
    import papermill

    from ftstudy import cell as cell_mod
    from ftstudy import grid

    root = paths.project_root()
    outputs = Path(results_dir or params.output_dir).resolve()
    book_dir = Path(book_dir) if book_dir else root / "book"
    gen = book_dir / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    cells = grid.expand(params, outputs)
    print(f"report: collecting the tables of {len(cells)} cells", flush=True)
    from ftstudy import tuning

    tables.collect(outputs, cells, tuning.configured_rates(params))
    (gen / "methods.md").write_text(methods_page(params, cells))
    data_dir = paths.data_dir(params.data_dir)
    stale = ({c["run_id"]: cell_mod.staleness(c, outputs, data_dir) for c in cells
              if (outputs / "runs" / c["run_id"] / "status.json").is_file()} if data_dir else None)
    (gen / "provenance.md").write_text(provenance_page(outputs, book_dir, {c["run_id"] for c in cells}, stale))
    (gen / "limitations.md").write_text(limitations_page(params, outputs))
    executed = gen / "analysis.ipynb"
    print("report: executing the analysis notebook", flush=True)
    papermill.execute_notebook(
        str(root / "notebooks" / "analysis.ipynb"), str(executed),
        parameters={"outputs_dir": str(outputs), "study": params.study},
        cwd=str(root), progress_bar={"desc": "report: analysis cells", "unit": "cell"},
        extra_arguments=["--IPKernelApp.log_level=ERROR"])
    _hide_parameter_cells(executed)
    if book:
        _with_heartbeat([_bin("jupyter-book"), "build", str(book_dir), "--quiet"], "report: building the book")
        print(f"book: {book_dir / '_build' / 'html' / 'index.html'}")
    return book_dir


def _with_heartbeat(cmd: list[str], what: str, every_s: float = 10.0) -> None:
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

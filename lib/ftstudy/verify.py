"""`ftstudy verify`: rerun a few of a committed study's runs here and compare with its records.

A committed book rebuilds from its records without compute; verifying checks that those
records are what the code computes, on the reader's own machine. Each picked run is rerun from
its `cell.json`, training and evaluating in the precisions it recorded (evaluation fp32 in
committed studies), into a scratch folder, and compared with its record: the per-item
log-likelihoods of every task (every choice of a multiple-choice item), the per-item 0/1 scores
behind the accuracies, the training loss at every step, and the study's verdicts rebuilt with
the reruns in place of the records. What the two machines share decides the tolerance
(`TOLERANCES`): float rounding where the arithmetic is the same (CPU kind or its kernels, dtype,
threads, packages); elsewhere a floor, widened for a trained run to a multiple of its spread,
measured by one more rerun with narrower kernels. The fingerprint parts that differ (code, data,
packages, CPU kind, threads, dtype) are printed beside the numbers. Verdicts that change with
the reruns in place are reported (the numbers, not a p-value at a boundary, decide the exit).

Exit status: 0 when every difference is within its tolerance, 1 when one is not, 2 when the
runs cannot be compared (the reason is printed).
"""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
from ftstudy.record import samples

# Per-item log-likelihood tolerance: nats + a relative part (an item's log-likelihood is a sum
# over its tokens); the training loss per step (nats per token); whether a generated answer may
# differ (greedy decoding follows any arithmetic difference). By what the machines share:
TOLERANCES = {
    # Same CPU kind (or its kernels), compute dtype, threads and packages: the same kernels in
    # the same order; a batched, padded forward and a single one differ by float32 rounding.
    "same": {"nats": 1e-4, "relative": 2e-7, "loss": 1e-5, "generation": True},
    # Another CPU kind, where this one cannot run the record's kernels (a record made with
    # AVX512 kernels, rerun on an AVX2-only CPU): other summation orders. Evaluation alone moved
    # SmolLM2's items by at most 2.3e-3 nats between AVX2 and AVX512 kernels (BENCHMARKS.md
    # section 13); this floor is about 5x that at a typical -150 nats. Training amplifies such
    # differences by an amount that depends on the method and its rate (prompt tuning's 4 steps
    # at 3e-2 moved items by up to 0.98 nats, LoRA's by 2.1e-3), so a trained run's bound is
    # measured here: `SPREAD_MARGIN` x how far it moves between the kernels its rerun used and
    # narrower ones that are not the record's own (its *spread*), never below the floor.
    "other arithmetic": {"nats": 5e-3, "relative": 5e-5, "loss": 1e-4, "generation": False},
}
SPREAD_MARGIN = 4
# The packages whose versions change the arithmetic of a run (other kernels, other code paths).
ARITHMETIC_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "lm_eval", "accelerate")
# Another CPU kind's kernels on this CPU: torch's ATen dispatch, MKL and oneDNN each capped at
# that instruction set. Records made with AVX2 kernels, rerun this way on an AVX512 EPYC, were
# matched bit for bit, training included (BENCHMARKS.md section 13). Narrowest first.
KERNELS = {"DEFAULT": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                       "ONEDNN_MAX_CPU_ISA": "SSE41"},
           "AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
           "AVX512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                      "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}}


def kernels_for(recorded: str | None, here: str) -> dict | None:
    """The environment that makes this CPU (torch capability `here`) compute with the kernels
    a record was made with: {} when they are this CPU's own, None when it cannot (wider)."""
    levels = list(KERNELS)
    if recorded == here:
        return {}
    if recorded in levels and here in levels and levels.index(recorded) < levels.index(here):
        return dict(KERNELS[recorded])
    return None


def narrower(used: str, recorded: str | None) -> dict | None:
    """Kernels narrower than those a rerun `used`, and not the record's own (that would
    measure the very difference being judged): another summation order, for a run's spread."""
    levels = list(KERNELS)
    below = [k for k in levels[:levels.index(used)] if k != recorded] if used in levels else []
    return dict(KERNELS[below[-1]]) if below else None


class CannotCompare(Exception):
    """The runs cannot be compared: the message says why (exit status 2)."""


def machine(run: Path) -> dict:
    """What a run's arithmetic depended on, from its env.json: the kernels (torch's CPU
    capability), CPU kind, threads, training dtype and package versions."""
    env = json.loads((run / "env.json").read_text())
    hw = env.get("hardware") or {}
    cpu = hw.get("cpu") or {}
    packages = env.get("packages") or {}
    return {"kernels": cpu.get("torch_cpu_capability"),
            "cpu_kind": f"{cpu.get('torch_cpu_capability')} (native bf16: {cpu.get('native_bf16')})",
            "threads": hw.get("torch_threads"), "dtype": env.get("compute_dtype"),
            "packages": ", ".join(f"{k} {packages.get(k)}" for k in ARITHMETIC_PACKAGES)}


def tier(committed: dict, rerun: dict) -> str:
    """`machine` of the record and of the rerun -> the tolerance tier."""
    if committed["dtype"] != rerun["dtype"]:
        return "other dtype"
    if any(committed.get(k) != rerun.get(k) for k in ("cpu_kind", "threads", "packages")):
        return "other arithmetic"
    return "same"


def params_file(results: Path) -> Path:
    """The params file a results folder was exported from (`export.params_file`)."""
    from ftstudy.record import export

    try:
        return export.params_file(results)
    except FileNotFoundError as err:
        raise CannotCompare(f"{err}; pass --params") from None


def pick(records: list[dict], n: int, seed: int) -> list[dict]:
    """A reference run, the cheapest trained run, and the rest drawn at random (seeded)."""
    from ftstudy.compute.methods import REFERENCES

    done = sorted((r for r in records if r["status"] == "done" and r.get("cell")), key=lambda r: r["run_id"])
    refs = [r for r in done if r["cell"]["method"] == "base"]
    trained = [r for r in done if r["cell"]["method"] not in REFERENCES and not r["cell"].get("control")]
    chosen = refs[:1] + sorted(trained, key=lambda r: r.get("train_wall_s") or np.inf)[:1]
    rest = [r for r in done if r not in chosen]
    chosen += random.Random(seed).sample(rest, min(len(rest), max(0, n - len(chosen))))
    return chosen[:n]


def compare_runs(committed: Path, rerun: Path, tolerance: dict | None) -> dict:
    """Per task, the per-item differences between two folders of one run; with a tolerance
    (None: other dtype, not judged), which exceed it. A 0/1 item that flips is a tie when the
    item's log-likelihoods agree within tolerance, else its log-likelihoods already exceed it;
    a generated answer that flips exceeds it where the arithmetic is the same (no
    log-likelihood tells a tie), and is reported where it is not."""
    from ftstudy.analysis import measures, stats

    tasks = sorted(p.name for p in (committed / "lm_eval").iterdir() if p.is_dir())
    out = {"tasks": {}, "loss": None, "problems": []}
    for task in tasks:
        a, b = samples.item_logliks(committed, task), samples.item_logliks(rerun, task)
        row: dict = {}
        if len(a):
            if not a.index.equals(b.index):
                out["problems"].append(f"{task}: the rerun scored other items")
                continue
            diff = (b - a).abs()
            row.update(items=int(a.index.get_level_values(0).nunique()), values=len(a),
                       max_abs=float(diff.max()), median_abs=float(diff.median()))
            if tolerance is not None:
                nats = (tolerance.get("tasks") or {}).get(task, tolerance["nats"])
                over = diff[diff > nats + tolerance["relative"] * a.abs()]
                row["over"] = [dict(doc_id=str(k[0]), choice=int(k[1]), committed=float(a[k]), rerun=float(b[k]))
                               for k in over.index]
                for k in over.index[:3]:
                    out["problems"].append(f"{task} item {k[0]} choice {k[1]}: log-likelihood {a[k]:.6f} "
                                           f"recorded, {b[k]:.6f} rerun")
        sa, sb = samples.load_samples(committed, task), samples.load_samples(rerun, task)
        for metric in sorted(m for m in set(sa["metric"]) & set(sb["metric"]) if measures.binary(m)):
            ids, x, y = stats.item_differences(sa, sb, metric)
            flipped = [str(i) for i, u, v in zip(ids, x, y) if u != v]
            row.setdefault("accuracy", {})[metric] = dict(committed=float(np.mean(x)), rerun=float(np.mean(y)),
                                                          flipped=flipped)
            if flipped and tolerance is not None and tolerance["generation"] and not len(a):
                out["problems"].append(f"{task} {metric}: items {', '.join(flipped[:5])} flipped")
        out["tasks"][task] = row
    la, lb = _loss(committed), _loss(rerun)
    if la or lb:
        steps = sorted(set(la) | set(lb))
        if set(la) != set(lb):
            out["problems"].append("training loss: the rerun logged other steps")
        else:
            worst = max(steps, key=lambda s: abs(lb[s] - la[s]))
            out["loss"] = dict(steps=len(steps), max_abs=abs(lb[worst] - la[worst]), at_step=worst,
                               committed=la[worst], rerun=lb[worst])
            if tolerance is not None and abs(lb[worst] - la[worst]) > tolerance["loss"]:
                out["problems"].append(f"training loss at step {worst}: {la[worst]:.6f} recorded, {lb[worst]:.6f} rerun")
    out["within"] = tolerance is None or not out["problems"]
    return out


def _loss(run: Path) -> dict:
    from ftstudy.compute.results import read_json

    m = read_json(run / "metrics.json")
    return {int(p["step"]): float(p["loss"]) for p in m.get("loss_curve") or []}


def rerun_cells(records: list[dict], scratch: Path, data_dir, dtype: str | None, environments: dict, log) -> dict:
    """Each record's cell run again into `scratch/runs/<id>`, training in the recorded compute
    dtype (or `dtype`), its notebook kernel started with `environments[run id]` (threads,
    kernels) and scoring as the record did (a record without `eval_scoring` predates shared
    contexts); returns {run id: status}."""
    import os

    from ftstudy.run import local

    states = {}
    for r in records:
        cell = json.loads(json.dumps(r["grid_cell"] or r["cell"]))
        pinned = dtype or (r.get("cell") or {}).get("compute_dtype")
        if pinned:
            cell["model"]["dtype"] = pinned
            if (cell.get("load") or {}).get("dtype"):
                cell["load"]["dtype"] = pinned
        if r.get("eval_dtype"):  # `auto` resolved where the record was made, not here
            cell.setdefault("evaluation", {})["dtype"] = r["eval_dtype"]
        env = dict(environments.get(r["run_id"]) or {})
        if "eval_scoring" not in r:  # scored before shared contexts: rerun on lm-eval's path, as it was
            env["FTSTUDY_SHARE_CONTEXTS"] = "0"
        previous = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the notebook kernel inherits it
        try:
            states.update(local.run_cells([cell], scratch, data_dir, {}, log=log))
        finally:
            for k, v in previous.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return states


def verdicts_with(results: Path, params, reruns: dict[str, Path], scratch: Path) -> list[dict]:
    """The study's verdicts built by today's code twice, from the records and with the reruns
    in place of theirs: the rows whose verdict differs (a change of the report code since the
    records were committed is in both, so it is not blamed on the reruns)."""
    from ftstudy.analysis import tables
    from ftstudy.planning import grid, tuning

    def rebuilt(folder: Path, swap: dict):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(results, folder)
        for rid, rerun in swap.items():
            shutil.rmtree(folder / "runs" / rid)
            shutil.copytree(rerun, folder / "runs" / rid)
            _like_for_like(folder / "runs" / rid, results / "runs" / rid)
        study = tables.collect(folder, grid.expand(params, folder), tuning.configured_rates(params))
        return study.verdicts.set_index("id")["verdict"]

    old = rebuilt(scratch / "records", {})
    new = rebuilt(scratch / "with-reruns", reruns)
    return [dict(id=vid, records=old[vid], reruns=new.get(vid, "missing")) for vid in old.index
            if old[vid] != new.get(vid, "missing")]


def _like_for_like(rerun: Path, committed: Path) -> None:
    """Make a rerun stand in for its record: the record's own `cell.json` and `fingerprint.json`
    (the tables would otherwise refuse to compare a rerun made by today's evaluation code with
    records made by an earlier one), and in its per-sample logs only the metrics the record
    has, so a record made before a metric existed has its verdicts decided on the same metric."""
    for name in ("cell.json", "fingerprint.json"):
        if (committed / name).is_file():
            shutil.copy(committed / name, rerun / name)

    for folder in (rerun / "lm_eval").iterdir():
        lines = list(samples.sample_lines(committed, folder.name))
        if not lines:
            continue
        recorded = set(json.loads(lines[0]).get("metrics") or [])
        kept = []
        for line in samples.sample_lines(rerun, folder.name):
            s = json.loads(line)
            for m in set(s.get("metrics") or []) - recorded:
                s.pop(m, None)
            s["metrics"] = [m for m in s.get("metrics") or [] if m in recorded]
            kept.append(json.dumps(s))
        for f in folder.glob("samples.jsonl*"):
            f.unlink()
        (folder / "samples.jsonl").write_text("\n".join(kept) + "\n")


def verify(results: str | Path, params_path: str | Path | None = None, runs: int = 3, run_ids=(),
           seed: int | None = None, scratch: str | Path | None = None, dtype: str | None = None,
           threads: int | None = None, own_kernels: bool = False, log=print) -> int:
    """Verify a committed study (see the module docstring); writes `<results>/verify.json`."""
    import tempfile

    from ftstudy.run import cell as cell_mod
    from ftstudy.record import fingerprint
    from ftstudy.config import params as params_mod
    from ftstudy.compute import paths, precision
    from ftstudy.analysis import tables
    from ftstudy.compute.methods import REFERENCES

    results = Path(results).resolve()
    try:
        if not (results / "runs").is_dir():
            raise CannotCompare(f"{results}: no runs/ folder (not a results folder)")
        params = params_mod.load(params_path or params_file(results), for_compute=False)
        data_dir = paths.data_dir(params.data_dir)
        records = tables.run_records(results)
        by_id = {r["run_id"]: r for r in records}
        missing = [r for r in run_ids if r not in by_id]
        if missing:
            raise CannotCompare(f"{results}: no run {', '.join(missing)}")
        if seed is None:
            seed = int(time.time()) % 100_000
        chosen = [by_id[r] for r in run_ids] if run_ids else pick(records, runs, seed)
        not_done = [r["run_id"] for r in chosen if r["status"] != "done" or not r.get("cell")
                    or not (results / "runs" / r["run_id"] / "env.json").is_file()]
        if not_done or not chosen:
            raise CannotCompare(f"{results}: run(s) {', '.join(not_done) or 'none'} did not finish or have no env.json: "
                                "nothing to compare")
    except (CannotCompare, params_mod.ParamsError) as err:
        log(f"verify: cannot compare: {err}")
        return 2
    log(f"verify: {len(chosen)} run(s) of {results.name}"
        + ("" if run_ids else f" (a reference, the cheapest trained run, the rest drawn with --seed {seed})")
        + ": " + ", ".join(f"{r['run_id']} {cell_mod.describe(r['grid_cell'] or r['cell'])}" for r in chosen))
    scratch = Path(scratch or tempfile.mkdtemp(prefix=f"verify-{results.name}-"))
    here = {"cpu": precision.cpu_capability(), "threads": threads or "as each record"}
    own = here["cpu"]["torch_cpu_capability"]
    recorded = {r["run_id"]: machine(results / "runs" / r["run_id"]) for r in chosen}
    environments = {}
    for r in chosen:  # compute as the record was computed, as far as this CPU can
        was = recorded[r["run_id"]]
        kernels = {} if own_kernels else kernels_for(was["kernels"], own)
        count = threads or was["threads"]
        environments[r["run_id"]] = {**(kernels or {}), **({"OMP_NUM_THREADS": str(count)} if count else {})}
        if kernels:
            log(f"verify: {r['run_id']} was computed with {was['kernels']} kernels: rerun with them ({own} here)")
        elif kernels is None:
            log(f"verify: {r['run_id']} was computed with {was['kernels']} kernels, which this CPU ({own}) cannot run")
    states = rerun_cells(chosen, scratch, data_dir, dtype, environments, log)
    failed = [rid for rid, s in states.items() if s != "done"]
    if failed:
        log(f"verify: cannot compare: the rerun of {', '.join(failed)} failed "
            f"(see {scratch}/runs/<id>/status.json)")
        return 2
    machines = {rid: (was, machine(scratch / "runs" / rid)) for rid, was in recorded.items()}
    tolerances = {rid: (dict(TOLERANCES[tier(*m)]) if tier(*m) in TOLERANCES else None) for rid, m in machines.items()}
    spread = [r for r in chosen if tier(*machines[r["run_id"]]) == "other arithmetic"
              and r["cell"]["method"] not in REFERENCES and not r["cell"].get("control")]
    for r in spread:
        rid = r["run_id"]
        was, now = machines[rid]
        used = now["kernels"]
        other = narrower(used, was["kernels"])
        if other is None:
            log(f"verify: {rid}: no kernels narrower than {used} (other than the record's) to measure its spread: "
                "the floor applies")
            continue
        log(f"verify: {rid} was computed with arithmetic this rerun did not repeat: rerun once more with "
            f"{other['ATEN_CPU_CAPABILITY']} kernels to measure how far other summation orders move it (its spread; "
            f"the tolerance is {SPREAD_MARGIN}x that, at least the floor)")
        states = rerun_cells([r], scratch / "spread", data_dir, dtype, {rid: {**environments[rid], **other}}, log)
        if states.get(rid) != "done":
            log(f"verify: cannot compare: the spread rerun of {rid} failed (see {scratch}/spread/runs/{rid}/status.json)")
            return 2
        s = compare_runs(scratch / "runs" / rid, scratch / "spread" / "runs" / rid, None)
        t = tolerances[rid]
        t["spread_kernels"] = other["ATEN_CPU_CAPABILITY"]
        t["spread"] = {task: d["max_abs"] for task, d in s["tasks"].items() if "max_abs" in d}
        t["tasks"] = {task: max(t["nats"], SPREAD_MARGIN * v) for task, v in t["spread"].items()}
        if s["loss"]:
            t["loss_spread"] = s["loss"]["max_abs"]
            t["loss"] = max(t["loss"], SPREAD_MARGIN * s["loss"]["max_abs"])
    report_runs, within = [], True
    for r in chosen:
        rid = r["run_id"]
        was, now = machines[rid]
        kind = tier(was, now)
        cmp_ = compare_runs(results / "runs" / rid, scratch / "runs" / rid, tolerances[rid])
        recorded_fp = json.loads((results / "runs" / rid / "fingerprint.json").read_text())
        rerun_fp = json.loads((scratch / "runs" / rid / "fingerprint.json").read_text())
        parts = fingerprint.differences(recorded_fp, rerun_fp)
        parts += [f"{k} ({was[k]} recorded, {now[k]} here)" for k in ("cpu_kind", "threads") if was[k] != now[k]]
        within &= cmp_["within"]
        report_runs.append(dict(run_id=rid, run=cell_mod.describe(r["grid_cell"] or r["cell"]), tier=kind,
                                tolerance=tolerances[rid], recorded=was, rerun=now, differs=parts, **cmp_))
        _log_run(report_runs[-1], log)
    log("verify: rebuilding the study's verdicts from the records and with the reruns in their place")
    changed = verdicts_with(results, params, {r["run_id"]: scratch / "runs" / r["run_id"] for r in chosen}, scratch)
    if changed:
        log(f"verify: {len(changed)} verdict(s) change with the reruns in place (reported; the numbers decide): "
            + "; ".join(f"{c['id']} {c['records']} -> {c['reruns']}" for c in changed[:5]))
    else:
        log("verify: every verdict of the study holds with the reruns in place")
    out = dict(checked=time.strftime("%Y-%m-%d %H:%M:%S"), seed=None if run_ids else seed,
               machine={**here, "options": dict(dtype=dtype, threads=threads, own_kernels=own_kernels)},
               runs=report_runs, verdicts_changed=changed, within_tolerance=within)
    # the record beside the results is the plain verification; one with other settings stays in scratch
    target = scratch / "verify.json" if (dtype or threads or own_kernels) else results / "verify.json"
    target.write_text(json.dumps(out, indent=1, default=str) + "\n")
    log(f"verify: {'within tolerance' if within else 'NOT within tolerance'}; wrote {target}")
    return 0 if within else 1


def _log_run(r: dict, log) -> None:
    tol = r["tolerance"]
    if tol is None:
        what = "(compute dtype differs: reported, not judged)"
    elif tol.get("tasks"):
        what = (f"(tolerance per item: {SPREAD_MARGIN}x its spread here, at least {tol['nats']:g} nats, + "
                f"{tol['relative']:g} x |log-likelihood|: " + ", ".join(f"{t} {v:.2g}" for t, v in tol["tasks"].items())
                + f" nats; loss {tol['loss']:.2g} nats)")
    else:
        what = (f"(tolerance {tol['nats']:g} nats + {tol['relative']:g} x |log-likelihood| per item, "
                f"loss {tol['loss']:g} nats)")
    log(f"{r['run_id']} {r['run']}: {r['tier']} {what}")
    if r["differs"]:
        log("  fingerprint parts that differ: " + "; ".join(r["differs"]))
    for task, t in r["tasks"].items():
        if "max_abs" in t:
            acc = "; ".join(f"{m} {v['committed']:.3f} -> {v['rerun']:.3f}" for m, v in (t.get("accuracy") or {}).items())
            log(f"  {task}: {t['items']} items, log-likelihood |difference| max {t['max_abs']:.2e}, median "
                f"{t['median_abs']:.2e} nats" + (f"; {len(t['over'])} over tolerance" if t.get("over") else "")
                + (f"; {acc}" if acc else ""))
        else:
            for m, v in (t.get("accuracy") or {}).items():
                log(f"  {task} {m}: {v['committed']:.3f} -> {v['rerun']:.3f} ({len(v['flipped'])} items flipped)")
    if r["loss"]:
        l = r["loss"]
        log(f"  training loss: {l['steps']} steps, |difference| max {l['max_abs']:.2e} (step {l['at_step']})")
    for p in r["problems"]:
        log(f"  NOT within tolerance: {p}")

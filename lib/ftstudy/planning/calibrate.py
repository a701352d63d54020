"""A short calibration of this machine, so that `ftstudy run --dry-run` can estimate cells of
a shape that has never run here.

Per model entry of a params file it times what a cell spends its time on: starting (a fresh
interpreter importing the stack, then loading the model), scoring a few items of every
evaluation task through lm-eval (unquantised, and 4-bit where a method needs it), and two
training steps of every method on the grid's data, batch and length. A cell's estimate is
then startup + items x seconds per item + steps x seconds per step (scaled by the tokens of
its training mix) + its curve points. Cached per CPU kind and settings in the cache folder;
`--calibrate` measures (a few minutes) or reuses it.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from ftstudy.compute import paths

GENERATION_ITEMS = 2  # a task that generates text is slow: two items; every other task four
DEFAULT_ITEMS = 4
TRAIN_STEPS = 2


def twin(task: str) -> str:
    """The task whose calibration a task's cost is read from: a validation log-likelihood task
    is scored like its training set's test task (a sweep's trials score it; the study's
    evaluation, which is calibrated, scores the test task)."""
    from ftstudy.compute import data, tasks

    entry = tasks.REGISTRY.get(task)
    if isinstance(entry, tasks.LogLikelihood) and entry.part == "validation":
        return data.TRAIN_SETS[entry.train_set]["target_nll"]
    return task


def _key(params, model_name: str) -> dict:
    from ftstudy.compute import precision

    entry = params.models[model_name]
    return {"cpu": precision.cpu_capability(), "model": entry.source(), "dtype": entry.dtype,
            "evaluation": params.evaluation.model_dump(), "training": params.training.model_dump(),
            "methods": {m: e.model_dump() for m, e in params.methods.items()},
            "train_data": params.train_data, "data_dir": str(paths.data_dir(params.data_dir))}


def cache_file(params, model_name: str) -> Path:
    blob = json.dumps(_key(params, model_name), sort_keys=True, default=str)
    return paths.cache_dir() / "calibration" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def load(params, model_name: str) -> dict | None:
    f = cache_file(params, model_name)
    return json.loads(f.read_text()) if f.is_file() else None


def _startup_s() -> float:
    """A fresh interpreter importing what every cell's kernel imports."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ftstudy, torch, transformers, peft, lm_eval, papermill"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def _seconds_per_item(model, tok, evaluation: dict, tasks: dict, out: Path, data_dir) -> tuple[dict, dict]:
    """({task: seconds per item}, {task: items it has}) from a few items of each task."""
    from lm_eval.tasks import TaskManager

    from ftstudy.compute import evaluate, tasks as registry

    per_item, docs = {}, {}
    for task, settings in tasks.items():
        n = GENERATION_ITEMS if registry.generates(task) else DEFAULT_ITEMS
        one = {**evaluation, "tasks": {task: {**(settings or {}), "limit": n}}}
        start = time.perf_counter()
        evaluate.evaluate(model, tok, one, out / task, data_dir)
        per_item[task] = (time.perf_counter() - start) / n
        manager = TaskManager(include_path=str(out / task / "tasks"), include_defaults=False)
        docs[task] = evaluate.count_docs(task, manager)
    return per_item, docs


def tokens_per_example(tok, mix: dict, max_length: int, data_dir, n: int = 32) -> float:
    """Mean tokens of a mix's training examples (the first `n` in seed 0's order)."""
    from ftstudy.compute import data

    examples, _ = data.training_set(tok, mix, n, 0, max_length, data_dir)
    return sum(len(e["input_ids"]) for e in examples) / max(1, len(examples))


def measure(params, data_dir=None, log=print) -> dict[str, dict]:
    """Calibrate every model entry of `params` (writes the cache); {model name: calibration}."""
    import tempfile

    from ftstudy.compute import data, methods, precision, train

    shared = params.training.model_dump(exclude_unset=True)
    evaluation = params.resolved_evaluation()
    tasks = dict(evaluation["tasks"])
    out = {}
    for name, entry in params.models.items():
        model = {"name": name, "source": entry.source(), "dtype": entry.dtype}
        cal = {"cpu": precision.cpu_capability(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        log(f"calibrating {name}: startup")
        cal["startup_s"] = _startup_s()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            spec = methods.resolve("base")
            start = time.perf_counter()
            tok, base = methods.load_model(spec, model)
            cal["load_s"] = time.perf_counter() - start
            log(f"calibrating {name}: a few items of each task")
            cal["s_per_item"], cal["docs"] = _seconds_per_item(base, tok, evaluation, tasks, tmp / "eval", data_dir)
            del base
            if any(methods.resolve(m, load=e.load)["load"].get("quantize_4bit") for m, e in params.methods.items()):
                log(f"calibrating {name}: the same in 4-bit")
                tok4, base4 = methods.load_model(methods.resolve("base_4bit"), model)
                cal["s_per_item_4bit"], _ = _seconds_per_item(base4, tok4, evaluation, tasks, tmp / "eval4", data_dir)
                del base4
            first_mix = next(iter(params.train_data.values()))
            cal["s_per_token"], cal["tokens_per_example"] = {}, {}
            for method, e in params.methods.items():
                log(f"calibrating {name}: {TRAIN_STEPS} training steps of {method}")
                # eager: a compile's minutes spread over two steps would say nothing of a step
                spec = methods.resolve(method, e.adapter, {**shared, **e.training, "max_steps": TRAIN_STEPS,
                                                           "epochs": None, "eval_every": 0, "compile": False}, e.load)
                tok_m, model_m = methods.load_model(spec, model)
                cfg = spec["training"]
                examples, _ = data.training_set(tok_m, first_mix, cfg["batch_size"] * cfg["gradient_accumulation_steps"]
                                                * TRAIN_STEPS, 0, cfg["max_length"], data_dir)
                tuned = methods.apply(model_m, spec, 0)
                cost = train.train(tuned, tok_m, examples, spec, tmp / method, 0)
                cal["s_per_token"][method] = cost["train_wall_s"] / max(1, cost["train_tokens"])
                del tuned, model_m
            for label, mix in params.train_data.items():
                cal["tokens_per_example"][label] = tokens_per_example(tok, mix, params.training.max_length, data_dir)
        f = cache_file(params, name)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(cal, indent=1))
        out[name] = cal
    return out


def estimate(cell: dict, cal: dict) -> float:
    """Estimated wall seconds of one grid cell from its model's calibration."""
    from ftstudy.compute import curves, methods, train

    quantised = bool((cell.get("load") or {}).get("quantize_4bit"))
    per_item = cal.get("s_per_item_4bit") if quantised and cal.get("s_per_item_4bit") else cal["s_per_item"]
    seconds = cal["startup_s"] + cal["load_s"]
    tasks = cell["evaluation"]["tasks"]

    def cost(task, settings):  # a limit's items, else every item the task has
        scored = twin(task)
        items = (settings or {}).get("limit") or cal.get("docs", {}).get(scored, 0)
        return per_item.get(scored, 0.0) * items

    seconds += sum(cost(t, s) for t, s in tasks.items())
    if cell["method"] in methods.REFERENCES or cell.get("control"):
        return seconds
    cfg = train.resolve(cell.get("training"))
    steps = train.steps_for(cfg, cell.get("train_size") or 0)
    tokens = steps * cfg["batch_size"] * cfg["gradient_accumulation_steps"] * \
        cal["tokens_per_example"].get(cell.get("train_data"), next(iter(cal["tokens_per_example"].values()), 0))
    seconds += tokens * cal["s_per_token"].get(cell["method"], max(cal["s_per_token"].values()))
    if cfg.get("eval_every"):
        points = 1 + max(0, steps - 1) // cfg["eval_every"]  # step 0 and every K before the last (the
        # last step's point is the final evaluation)
        curve_tasks = curves.tasks_of(cell["evaluation"])
        seconds += points * sum(cost(t, s) for t, s in curve_tasks.items())
    return seconds

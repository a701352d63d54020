"""Where a default cell's time goes on this CPU: imports, model load, training, and each
evaluation task split into building the task (reading its data) and scoring it.

Runs the phases of `params/cpu.yaml`'s cells in one process, LoRA on GSM8K for training,
and evaluates the unquantised and the 4-bit base. Saves `profile-<cpu kind>.json`.

    FTSTUDY_DATA_DIR=../shared/data python bench/cell_profile.py
"""
import time

T0 = time.perf_counter()
import ftstudy  # noqa: E402,F401  (thread settings)
import lm_eval  # noqa: E402,F401
import peft  # noqa: E402,F401
import torch  # noqa: E402,F401
import transformers  # noqa: E402,F401

IMPORT_S = time.perf_counter() - T0

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from common import ROOT, SMOLLM2, save  # noqa: E402

from ftstudy.compute import data, evaluate, methods, train
from ftstudy.config import params# noqa: E402


def eval_phases(model, tok, evaluation: dict, out: Path) -> dict:
    """Per task: seconds to build it (lm-eval reads and prepares its data) and to score it."""
    from lm_eval.tasks import TaskManager

    chat = bool(tok.chat_template)
    task_dir = evaluate.write_task_yamls(evaluation["tasks"], out / "tasks", None, chat)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    evaluate.prepare_for_eval(model)
    phases = {}
    for task, settings in evaluation["tasks"].items():
        start = time.perf_counter()
        n = evaluate.count_docs(task, manager)
        built = time.perf_counter() - start
        one = dict(evaluation, tasks={task: settings})
        start = time.perf_counter()
        evaluate.evaluate(model, tok, one, out / task)
        phases[task] = {"build_s": built, "evaluate_s": time.perf_counter() - start, "docs": n,
                        "limit": settings.get("limit")}
        print(task, {k: round(v, 1) if isinstance(v, float) else v for k, v in phases[task].items()},
              flush=True)
    return phases


def main():
    p = params.load(ROOT / "params" / "cpu.yaml")
    evaluation = evaluate.resolve(p.evaluation.model_dump(exclude_none=True))
    model = {"name": "smollm2-135m", "source": SMOLLM2, "dtype": "auto"}
    out = {"import_s": IMPORT_S}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = methods.resolve("lora", training=p.training.model_dump(exclude_unset=True))
        start = time.perf_counter()
        tok, base = methods.load_model(spec, model)
        out["load_s"] = time.perf_counter() - start
        out["compute_dtype"] = spec.get("compute_dtype")
        start = time.perf_counter()
        examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, p.train_sizes[0], 0,
                                        spec["training"]["max_length"])
        out["data_s"] = time.perf_counter() - start
        tuned = methods.apply(base, spec, 0)
        cost = train.train(tuned, tok, examples, spec, tmp / "lora", 0)
        out["train_s"] = cost["train_wall_s"]
        out["train_steps"] = spec["training"]["max_steps"]
        out["eval_lora"] = eval_phases(tuned, tok, evaluation, tmp / "lora-eval")
        qspec = methods.resolve("base_4bit")
        start = time.perf_counter()
        tok4, base4 = methods.load_model(qspec, model)
        out["load_4bit_s"] = time.perf_counter() - start
        out["eval_base_4bit"] = eval_phases(base4, tok4, evaluation, tmp / "base4-eval")
    save("profile", out)


if __name__ == "__main__":
    main()

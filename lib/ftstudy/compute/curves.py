"""Learning and forgetting along training: the log-likelihood tasks scored every K steps.

One end-of-training point cannot tell "forgets less" from "learns less" (Biderman et al.,
2024, compare methods at matched learning). A Trainer callback scores the run's
log-likelihood tasks (the same items as its final evaluation) at step 0 and every
`eval_every` steps, through lm-eval on the in-memory model (unmerged, its fp32 weights,
outside training's bf16 autocast, as the final evaluation): each point is compared with the
run's own step 0, item by item. Per-sample logs
go to `<run>/curve/step_<k>/lm_eval/<task>/`; `<run>/curve.json` lists the points.
Accuracy tasks stay end-of-training only (generation is too slow to repeat).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

FOLDER = "curve"


def tasks_of(evaluation: dict) -> dict:
    """The evaluation's tasks that a curve scores: the log-likelihood ones."""
    from ftstudy.compute import tasks

    return {t: s for t, s in evaluation["tasks"].items() if tasks.is_nll(t)}


def step_folder(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step_{step:05d}"


def callback(model, tokenizer, evaluation: dict, run_dir, data_dir, every: int):
    """A Trainer callback scoring the curve tasks at step 0, every `every` steps and at the
    last step. Random states are saved and restored around each evaluation (lm-eval reseeds
    them), so a run with a curve trains exactly as it would without one; `.wall_s` is the
    time it spent, and `.peak` (a `memory.AnonPeak`, when set) is paused meanwhile, so the
    training's peak memory does not include the evaluation's.

    Points are scored outside the bf16 autocast that accelerate wraps around the model's
    forward while training, on the fp32 weights: the precision of the final evaluation, so
    that every method is scored along training alike (`evaluation.dtype` must be float32;
    params check it)."""
    import numpy as np
    import torch
    from lm_eval.tasks import TaskManager
    from transformers import TrainerCallback

    from ftstudy.compute import evaluate

    ev = evaluate.resolve(evaluation)
    if ev["dtype"] != "float32":
        raise ValueError(f"training.eval_every: curves score the fp32 weights as they train; "
                         f"evaluation.dtype is {ev['dtype']}: set it to float32")
    ev["tasks"] = tasks_of(ev)
    chat = bool(getattr(tokenizer, "chat_template", None))
    run_dir = Path(run_dir)
    task_dir = evaluate.write_task_yamls(ev["tasks"], run_dir / FOLDER / "tasks", data_dir, chat)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)

    class Curve(TrainerCallback):
        def __init__(self):
            self.points: list[dict] = []
            self.wall_s = 0.0
            self.peak = None
            self.cuda_peak = 0  # training's CUDA peak up to each curve point (bytes); scoring's is not in it
            self.final_step = None
            self.step_log = None  # train's step timer: told of the time scoring took

        def score(self, step: int) -> None:
            if not ev["tasks"] or any(p["step"] == step for p in self.points):
                return
            start = time.perf_counter()
            states = random.getstate(), np.random.get_state(), torch.get_rng_state()
            was_training = model.training
            model.eval()
            # accelerate's autocast wrapper (bf16 training) keeps the plain forward beside it
            wrapped = model.__dict__.get("forward")
            if "_original_forward" in model.__dict__:
                model.forward = model.__dict__["_original_forward"]
            compiled = getattr(model, "_compiled_call_impl", None)  # training.compile: score eagerly
            model._compiled_call_impl = None
            if self.peak is not None:
                self.peak.paused = True
            if torch.cuda.is_available():
                self.cuda_peak = max(self.cuda_peak, torch.cuda.max_memory_allocated())
            try:
                with torch.no_grad(), evaluate.dequantised_4bit(model):
                    out, items, _ = evaluate.run_tasks(model, tokenizer, ev, step_folder(run_dir, step),
                                                    manager, chat, progress_dir=run_dir,
                                                    label=f"curve at step {step}:")
            finally:
                if self.peak is not None:
                    self.peak.paused = False
                if torch.cuda.is_available():  # the next training steps' peak, without this scoring
                    torch.cuda.reset_peak_memory_stats()
                model.train(was_training)
                model._compiled_call_impl = compiled
                if wrapped is not None:
                    model.forward = wrapped
                random.setstate(states[0])
                np.random.set_state(states[1])
                torch.set_rng_state(states[2])
            self.points.append({"step": step, "items": items, "metrics": evaluate.metric_rows(out)})
            self.save()
            self.wall_s += time.perf_counter() - start
            if self.step_log is not None:
                self.step_log.paused_s += time.perf_counter() - start

        def save(self) -> None:
            tmp = run_dir / "curve.json.tmp"  # atomic: a reader never sees half a file
            tmp.write_text(json.dumps({"eval_every": every, "final_step": self.final_step,
                                       "points": self.points}, indent=1))
            tmp.replace(run_dir / "curve.json")

        def on_train_begin(self, args, state, control, **kw):
            self.final_step = state.max_steps
            self.score(0)

        def on_step_end(self, args, state, control, **kw):
            # The last step's point is the run's final evaluation (same items, same precision):
            # scoring it here too would double the cost of the last point (see `record.samples.curve_points`).
            if state.global_step % every == 0 and state.global_step < state.max_steps:
                self.score(state.global_step)

    return Curve()

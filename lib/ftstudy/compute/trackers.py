"""Experiment tracking, opt-in from params: TensorBoard, MLflow or Weights & Biases through
the Trainer's own integrations, and the run's evaluation scores logged to the same run.

`tracking: {report_to: [tensorboard]}` in params. TensorBoard event files go to
`<run>/tensorboard/`; MLflow to a local file store `<outputs>/mlruns` unless
`MLFLOW_TRACKING_URI` says otherwise; W&B runs offline unless `WANDB_MODE` is set.
Credentials come only from the environment, never from params (they would be written into
the executed notebook). Tracking records; it never changes what a run computes.
"""
from __future__ import annotations

import os
from pathlib import Path

SUPPORTED = ("tensorboard", "mlflow", "wandb")


def tensorboard_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tensorboard"


def _names(tracking: dict | None) -> list[str]:
    return list((tracking or {}).get("report_to") or [])


def trainer_options(tracking: dict | None, run_dir: str | Path) -> tuple[dict, list]:
    """(TrainingArguments keywords, extra callbacks) for a run's trackers. `tracking["run_dir"]`,
    when set (a torchrun rank), names the cell's folder instead of `run_dir`."""
    names = _names(tracking)
    if not names:
        return {"report_to": []}, []
    run_dir = tracking.get("run_dir") or run_dir
    callbacks = []
    if "tensorboard" in names:  # our own writer: the event files belong in the run folder
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(tensorboard_dir(run_dir)))))
        names.remove("tensorboard")
    if "mlflow" in names:
        outputs = Path(run_dir).resolve().parents[1]
        os.environ.setdefault("MLFLOW_TRACKING_URI", (outputs / "mlruns").as_uri())
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", tracking.get("experiment") or "ftstudy")
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(Path(run_dir).resolve()))
        os.environ.setdefault("WANDB_PROJECT", tracking.get("experiment") or "ftstudy")
    return {"report_to": names, "run_name": tracking.get("run_name")}, callbacks


def log_scores(tracking: dict | None, run_dir: str | Path, record: dict) -> None:
    """Log a finished run's evaluation scores (`eval/<task>/<metric>`) to its trackers, at
    its last training step."""
    names = _names(tracking)
    if not names:
        return
    step = int((record.get("training") or {}).get("max_steps") or 0)
    scores = {f"eval/{m['task']}/{m['metric']}": float(m["value"]) for m in record["metrics"]}
    if "tensorboard" in names:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(tensorboard_dir(run_dir))) as writer:
            for tag, value in scores.items():
                writer.add_scalar(tag, value, global_step=step)
    if "mlflow" in names:
        import mlflow

        last = mlflow.last_active_run()
        with mlflow.start_run(run_id=last.info.run_id if last else None, run_name=tracking.get("run_name")):
            mlflow.log_metrics(scores, step=step)
    if "wandb" in names:
        import wandb

        run = wandb.run or wandb.init(name=tracking.get("run_name"))
        # no step=: W&B's own step is past the trainer's last one and would drop the scores
        run.log({**scores, "train/global_step": step})
        run.finish()

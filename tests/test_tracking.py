"""Opt-in tracking: a grid cell with `tracking: {report_to: [tensorboard]}` leaves TensorBoard
event files in its run folder with the training loss curve and the evaluation scores."""
import json

import pytest

from conftest import write_params
from ftstudy.planning import grid
from ftstudy.config import params


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for directory in sorted({e.parent for e in folder.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(directory))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return tags


@pytest.mark.slow
def test_a_tensorboard_run_has_the_loss_curve_and_the_scores(tmp_path, data_dir, tiny_model_dir):
    ev = {"batch_size": 4, "tasks": {"gsm8k_nll": {"limit": 4}, "hellaswag": {"limit": 4}}}
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                        evaluation=ev, tracking={"report_to": ["tensorboard"]})
    p = params.load(path)
    untracked = write_params(tmp_path / "q.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",), evaluation=ev)
    cells = grid.expand(p)
    # tracking records a run, it is not part of it: the same run ids with or without it
    assert [c["run_id"] for c in cells] == [c["run_id"] for c in grid.expand(params.load(untracked))]
    states = grid.run(p)
    assert set(states.values()) == {"done"}
    lora = next(c for c in cells if c["method"] == "lora")
    run = tmp_path / "out" / "runs" / lora["run_id"]
    scalars = _scalars(run / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    loss = {c["step"]: c["loss"] for c in metrics["loss_curve"]}
    assert all(abs(v - loss[s]) < 1e-4 for s, v in scalars["train/loss"])
    bpb = next(m["value"] for m in metrics["metrics"] if m["task"] == "gsm8k_nll" and m["metric"] == "bits_per_byte")
    [(step, value)] = scalars["eval/gsm8k_nll/bits_per_byte"]
    assert step == 3 and abs(value - bpb) < 1e-5
    assert "eval/hellaswag/acc" in scalars
    base = next(c for c in cells if c["method"] == "base")  # a reference logs its scores too
    assert "eval/gsm8k_nll/bits_per_byte" in _scalars(tmp_path / "out" / "runs" / base["run_id"] / "tensorboard")

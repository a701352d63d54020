"""A fresh machine gets a time estimate before any cell has run: a short calibration, cached,
turned into per-cell seconds that follow the cells' items, steps and curves."""
import pytest

from conftest import write_params
from ftstudy.planning import calibrate, grid
from ftstudy.config import params


def _cal(**over):
    cal = {"startup_s": 10.0, "load_s": 2.0,
           "s_per_item": {"gsm8k": 10.0, "hellaswag": 1.0, "gsm8k_nll": 0.5, "alpaca_nll": 0.5},
           "s_per_item_4bit": {"gsm8k": 20.0, "hellaswag": 2.0, "gsm8k_nll": 1.0, "alpaca_nll": 1.0},
           "s_per_token": {"lora": 0.01, "full": 0.02, "qlora": 0.03},
           "tokens_per_example": {"gsm8k": 100.0}}
    return {**cal, **over}


def test_estimate_adds_startup_items_steps_and_curve_points():
    ev = {"tasks": {"gsm8k": {"limit": 3}, "hellaswag": {"limit": 10}, "gsm8k_nll": {"limit": 8}}}
    base = {"method": "base", "evaluation": ev, "load": {}}
    assert calibrate.estimate(base, _cal()) == pytest.approx(12 + 30 + 10 + 4)
    quantised = {**base, "method": "base_4bit", "load": {"quantize_4bit": True}}
    assert calibrate.estimate(quantised, _cal()) == pytest.approx(12 + 60 + 20 + 8)
    lora = {"method": "lora", "evaluation": ev, "load": {}, "train_data": "gsm8k", "train_size": 16,
            "training": {"epochs": 1, "batch_size": 4, "eval_every": 2}}
    # 4 steps x 4 examples x 100 tokens x 0.01 s; curve at steps 0, 2 on gsm8k_nll (8 items);
    # step 4's point is the final evaluation, not scored twice
    assert calibrate.estimate(lora, _cal()) == pytest.approx(56 + 16 + 2 * 4)
    trial = {**lora, "evaluation": {"tasks": {"gsm8k_val_nll": {"limit": 6}}}, "training": {"max_steps": 4, "batch_size": 4}}
    assert calibrate.estimate(trial, _cal()) == pytest.approx(12 + 6 * 0.5 + 16)  # scored like gsm8k_nll


@pytest.mark.slow
def test_calibration_gives_a_dry_run_estimate_before_any_cell_ran(tmp_path, data_dir, tiny_model_dir,
                                                                   monkeypatch):
    monkeypatch.setenv("FTSTUDY_CACHE", str(tmp_path / "cache"))
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora", "qlora")))
    cells = grid.expand(p)
    assert grid.estimate_seconds(cells, tmp_path / "out", p)["unknown"] == len(cells)
    cal = calibrate.measure(p, data_dir)["tiny"]
    assert set(cal["s_per_token"]) == {"lora", "qlora"} and set(cal["s_per_item"]) == set(p.evaluation.tasks)
    assert "s_per_item_4bit" in cal and cal["startup_s"] > 0
    est = grid.estimate_seconds(cells, tmp_path / "out", p)
    assert est["from_calibration"] == len(cells) and est["unknown"] == 0
    assert all(s > cal["startup_s"] for s in est["seconds"].values())
    lines = []
    grid.run(p, dry_run=True, log=lines.append)
    assert f"for {len(cells)} of the {len(cells)} cells to run ({len(cells)} from this machine's calibration)" in lines[-1]

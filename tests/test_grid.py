"""The whole chain on the tiny model: params -> papermill notebooks -> lm-eval -> tables -> book."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from ftstudy import grid, params, report
from conftest import ROOT, write_params


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_model_dir, data_dir):
    tmp = tmp_path_factory.mktemp("study")
    path = write_params(tmp / "tiny.yaml", tiny_model_dir, tmp / "outputs", methods=("lora", "qlora"))
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return path, tmp / "outputs", proc


def test_grid_writes_one_complete_run_folder_per_cell(tiny_study):
    path, outputs, _ = tiny_study
    cells = grid.expand(params.load(path))
    assert len(cells) == 3
    for c in cells:
        run = outputs / "runs" / c["run_id"]
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "done", status.get("error")
        for name in ["cell.json", "metrics.json", "env.json", f"{c['method']}.ipynb"]:
            assert (run / name).is_file(), name
        for task in ["gsm8k", "hellaswag", "mmlu_high_school_computer_science"]:
            assert (run / "lm_eval" / task / "samples.jsonl").stat().st_size > 0
        metrics = json.loads((run / "metrics.json").read_text())
        env = json.loads((run / "env.json").read_text())
        assert env["packages"]["transformers"] and env["seed"] == c["seed"]
        assert any(k.startswith("gsm8k/") for k in env["data_files"])
        if c["method"] != "base":
            assert (run / "artifact" / "adapter_model.safetensors").is_file()
            assert metrics["train_wall_s"] > 0 and metrics["tokens_per_s"] > 0
            assert metrics["peak_rss_mb"] > 0 and metrics["artifact_bytes"] > 0
            assert 0 < metrics["trainable_params"] < metrics["total_params"]
            assert len(metrics["loss_curve"]) == 3
    assert not list((outputs / "runs").glob(".tmp-*"))


def test_results_table_has_every_run_task_and_metric(tiny_study):
    _, outputs, _ = tiny_study
    df = pd.read_csv(outputs / "results.csv")
    for col in ["run_id", "model", "method", "train_data", "train_size", "seed", "task",
                "metric", "value", "stderr"]:
        assert col in df.columns
    assert set(df["method"]) == {"base", "lora", "qlora"}
    per_run = df.groupby("run_id")["metric"].apply(set)
    expected = {"exact_match_strict-match", "exact_match_flexible-extract", "acc", "acc_norm"}
    assert all(m == expected for m in per_run)
    assert df["value"].between(0, 1).all()
    assert len(df) == 3 * 5  # 2 GSM8K filters + 2 HellaSwag + 1 MMLU per run


def test_rerun_skips_every_cell(tiny_study):
    path, outputs, _ = tiny_study
    before = {p: p.stat().st_mtime_ns for p in (outputs / "runs").rglob("metrics.json")}
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "3 already recorded, 0 to run" in proc.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (outputs / "runs").rglob("metrics.json")}
    dry = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path), "--dry-run"],
                         capture_output=True, text=True, cwd=ROOT)
    assert dry.stdout.count(" done ") == 3 and "0 to run" in dry.stdout


def test_book_builds_with_figures(tiny_study, tmp_path):
    path, outputs, _ = tiny_study
    book = tmp_path / "book"
    import shutil
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    report.build(params.load(path), book_dir=book)
    html = book / "_build" / "html"
    assert (html / "index.html").is_file()
    analysis = (html / "generated" / "analysis.html").read_text()
    assert analysis.count("<img") >= 3 and "Traceback" not in analysis
    images = list((html / "_images").glob("*.png"))
    assert len(images) >= 3 and all(p.stat().st_size > 1000 for p in images)
    prov = (html / "generated" / "provenance.html").read_text()
    runs = [c["run_id"] for c in grid.expand(params.load(path))]
    assert all(r in prov for r in runs)

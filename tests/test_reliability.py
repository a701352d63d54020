"""A grid survives kills and failing cells, reruns identically, and leaks no secrets."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ftstudy.planning import grid
from ftstudy.analysis import tables
from ftstudy.config import params
from conftest import ROOT, write_params

pytestmark = pytest.mark.slow  # papermill grids, browsers, torchrun, Slurm or report rebuilds


def _ftstudy(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "ftstudy", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, **kw)


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_during_training_then_resume(tmp_path, tiny_model_dir, data_dir):
    outputs = tmp_path / "outputs"
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, outputs, methods=("lora", "ia3", "full"),
                        training={"max_steps": 30, "batch_size": 4, "max_length": 128})
    cells = grid.expand(params.load(path))
    proc = subprocess.Popen([sys.executable, "-m", "ftstudy", "run", str(path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = outputs / "runs"
    deadline = time.time() + 300
    # wait until one cell is complete and the next one is training (its tmp folder has a notebook)
    while time.time() < deadline:
        done = list(runs.glob("[!.]*/status.json")) if runs.exists() else []
        training = [d for d in runs.glob(".tmp-*") if (d / "cell.json").is_file()] if runs.exists() else []
        if len(done) >= 2 and training:
            break
        time.sleep(0.5)
    else:
        pytest.fail("grid did not reach the second cell")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {d.name: _hashes(d) for d in runs.iterdir() if not d.name.startswith(".")}
    assert 2 <= len(finished) < len(cells)
    assert list(runs.glob(".tmp-*")), "the killed cell must still be in its temporary folder"

    rerun = _ftstudy("run", path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} already recorded" in rerun.stdout
    for name, hashes in finished.items():
        assert _hashes(runs / name) == hashes  # finished cells untouched, byte for byte
    assert not list(runs.glob(".tmp-*"))
    table = tables.collect(outputs, cells).runs
    assert sorted(table["run_id"]) == sorted(c["run_id"] for c in cells)  # each cell exactly once
    assert (table["status"] == "done").all()


def test_failing_cells_are_isolated_recorded_and_retried(tmp_path, tiny_model_dir, data_dir):
    outputs = tmp_path / "outputs"
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, outputs, methods=("lora", "full"))
    raw = params.load(path).model_dump(exclude_unset=True)
    raw["methods"]["full"] = {"training": {"learning_rate": 1e38}}   # weights overflow: loss NaN/inf
    raw["models"]["hubless"] = {"hub": "no-such-org/no-such-model", "dtype": "float32"}
    import yaml
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = _ftstudy("run", path, env=env)
    assert proc.returncode == 1
    cells = grid.expand(params.load(path))
    status = {c["run_id"]: json.loads((outputs / "runs" / c["run_id"] / "status.json").read_text())
              for c in cells}
    by = {(c["model_name"], c["method"]): status[c["run_id"]] for c in cells}
    assert by[("tiny", "lora")]["status"] == "done" and by[("tiny", "base")]["status"] == "done"
    assert by[("tiny", "full")]["status"] == "failed"
    assert "NonFiniteLoss: loss became" in by[("tiny", "full")]["error"]
    assert all(by[("hubless", m)]["status"] == "failed" for m in ("base", "lora", "full"))
    failed_ids = [r for r, s in status.items() if s["status"] == "failed"]
    assert all(r in proc.stderr for r in failed_ids) and "--retry-failed" in proc.stderr
    for r in failed_ids:  # the executed notebook keeps the traceback
        nb = outputs / "runs" / r / status[r]["notebook"]
        exception = status[r]["error"].split(":")[0]          # e.g. NonFiniteLoss, OSError
        assert nb.is_file() and exception in nb.read_text() and '"output_type": "error"' in nb.read_text()
    runs_csv = tables.collect(outputs, cells).runs
    assert set(runs_csv.loc[runs_csv["status"] == "failed", "run_id"]) == set(failed_ids)

    ok = [r for r, s in status.items() if s["status"] == "done"]
    before = {r: _hashes(outputs / "runs" / r) for r in ok}
    plain = _ftstudy("run", path, env=env)          # failed cells are not rerun by default
    assert f"{len(cells)} already recorded, 0 to run" in plain.stdout and plain.returncode == 1
    retry = _ftstudy("run", path, "--retry-failed", env=env)
    assert f"{len(failed_ids)} to run" in retry.stdout and retry.returncode == 1
    assert before == {r: _hashes(outputs / "runs" / r) for r in ok}


def test_same_cell_twice_gives_identical_metrics_and_weights(tmp_path, tiny_model_dir, data_dir):
    records = []
    for i in range(2):
        outputs = tmp_path / f"out{i}"
        path = write_params(tmp_path / f"p{i}.yaml", tiny_model_dir, outputs, methods=("lora",))
        assert _ftstudy("run", path).returncode == 0
        cell = [c for c in grid.expand(params.load(path)) if c["method"] == "lora"][0]
        run = outputs / "runs" / cell["run_id"]
        m = json.loads((run / "metrics.json").read_text())
        env = json.loads((run / "env.json").read_text())
        weights = hashlib.sha256((run / "artifact" / "adapter_model.safetensors").read_bytes()).hexdigest()
        records.append((m["loss_curve"], m["metrics"], weights, env["seed"]))
    assert records[0] == records[1]
    assert records[0][3] == 0


def test_hf_token_never_reaches_outputs_or_book(tmp_path, tiny_model_dir, data_dir):
    token = "hf_FAKEtokenDoNotLeak0123456789"
    outputs = tmp_path / "outputs"
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, outputs, methods=("lora",))
    env = {**os.environ, "HF_TOKEN": token, "HUGGING_FACE_HUB_TOKEN": token}
    assert _ftstudy("run", path, env=env).returncode == 0
    import shutil
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    from ftstudy.book import report
    os.environ["HF_TOKEN"] = token
    try:
        report.build(params.load(path), book_dir=book)
    finally:
        del os.environ["HF_TOKEN"]
    leaks = [p for folder in (outputs, book) for p in folder.rglob("*")
             if p.is_file() and token.encode() in p.read_bytes()]
    assert not leaks
    assert (book / "_build" / "html" / "index.html").is_file()

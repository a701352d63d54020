"""The grid on a real Slurm cluster (one node, with accounting), through submitit.

`make test` starts the cluster first (tests/services.sh, `make services` alone); where no
cluster answers, these tests are skipped and the reason is printed in pytest's summary (-ra).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_params


def _cluster_missing() -> str | None:
    if shutil.which("sbatch") is None:
        return "no Slurm client on PATH: `make services` installs and starts a one-node cluster (as root)"
    info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if info.returncode != 0 or not {"idle", "mixed", "allocated"} & set(info.stdout.split()):
        return (f"Slurm controller or node not answering: {(info.stderr or info.stdout).strip()[:200]} "
                "(`make services` starts them)")
    acct = subprocess.run(["sacct", "-n", "-X"], capture_output=True, text=True)
    if acct.returncode != 0:
        return f"Slurm accounting (sacct) unavailable: {acct.stderr.strip()[:200]} (`make services` starts it)"
    return None


MISSING = _cluster_missing()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(MISSING is not None, reason=f"Slurm test skipped: {MISSING}")]
SLURM = {"kind": "slurm", "slurm": {"time_min": 10, "cpus_per_task": 1, "mem_gb": 2}}


def _ftstudy(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftstudy", *map(str, args)], capture_output=True, text=True)


def _scores(outputs: Path) -> dict:
    from ftstudy.analysis import tables

    df = tables.collect(outputs).results
    return {(r.method, r.task, r.metric): r.value for r in df.itertuples()}


def test_grid_runs_as_slurm_jobs_and_matches_local(tiny_model_dir, data_dir, tmp_path):
    params = write_params(tmp_path / "slurm.yaml", tiny_model_dir, tmp_path / "slurm-out",
                          methods=("lora",), executor=SLURM)
    proc = _ftstudy("run", params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submitted 2 Slurm job(s)" in proc.stdout + proc.stderr

    statuses = [json.loads(p.read_text()) for p in (tmp_path / "slurm-out" / "runs").glob("*/status.json")]
    assert sorted(s["method"] for s in statuses) == ["base", "lora"]
    assert all(s["status"] == "done" and s.get("slurm_job_id") for s in statuses)
    ids = ",".join(s["slurm_job_id"] for s in statuses)
    sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ids, "-o", "JobID,State"],
                           capture_output=True, text=True, check=True).stdout.split()
    states = dict(line.split("|") for line in sacct)
    assert set(states) == {s["slurm_job_id"] for s in statuses}
    assert set(states.values()) == {"COMPLETED"}

    # Nothing left to do: no new job is submitted.
    again = _ftstudy("run", params)
    assert again.returncode == 0 and "submitted" not in again.stdout + again.stderr
    assert "0 to run" in again.stdout + again.stderr

    # The same grid run locally gives the same results table.
    local = write_params(tmp_path / "local.yaml", tiny_model_dir, tmp_path / "local-out", methods=("lora",))
    assert _ftstudy("run", local).returncode == 0
    slurm_scores, local_scores = _scores(tmp_path / "slurm-out"), _scores(tmp_path / "local-out")
    assert slurm_scores.keys() == local_scores.keys() and slurm_scores
    for key, value in local_scores.items():
        assert slurm_scores[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


def test_dead_slurm_job_is_recorded_failed_and_retried(tiny_model_dir, data_dir, tmp_path):
    """A job that Slurm ends before the cell writes anything (here: scancel) leaves a failed
    status.json naming the job and its state; --retry-failed submits the cell again."""
    params = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                          executor={"kind": "slurm", "slurm": {"time_min": 1, "cpus_per_task": 1, "mem_gb": 2}})
    from ftstudy.planning import grid
    from ftstudy.config import params as params_mod
    from ftstudy.run import slurm
    p = params_mod.load(params)
    cells = [c for c in grid.expand(p) if c["method"] == "base"]
    options = {**p.executor.slurm.model_dump(), "log_dir": str(tmp_path / "logs")}
    ex = slurm.make_executor(options, tmp_path / "logs")
    job = ex.submit(subprocess.run, ["sleep", "600"])  # stands in for a cell that overruns
    subprocess.run(["scancel", job.job_id], check=True)
    with pytest.raises(Exception):
        job.result()
    status = slurm._outcome(job, cells[0], tmp_path / "out")
    assert status == "failed"
    recorded = json.loads((tmp_path / "out" / "runs" / cells[0]["run_id"] / "status.json").read_text())
    assert recorded["status"] == "failed" and job.job_id in recorded["error"]
    assert "CANCELLED" in recorded["error"]

    dry = _ftstudy("run", params, "--dry-run")
    assert "1 failed" in dry.stdout
    retry = _ftstudy("run", params, "--retry-failed", "--time-min", "10")  # the flag beats the file
    assert retry.returncode == 0, retry.stderr[-2000:]
    done = json.loads((tmp_path / "out" / "runs" / cells[0]["run_id"] / "status.json").read_text())
    assert done["status"] == "done" and done["slurm_job_id"]

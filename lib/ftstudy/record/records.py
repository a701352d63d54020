"""Reading a results folder's run records for a report or an export, so that bad input is
refused in one line that names the file, before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

# The JSON records of a run folder (what `ftstudy export` keeps besides lm-eval's logs).
RECORDS = ("cell.json", "status.json", "metrics.json", "env.json", "fingerprint.json", "curve.json")


class RecordError(ValueError):
    """A run record that cannot be read, said in one line that names the file."""


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: damaged record, not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                          "restore it (e.g. git checkout) or rerun that run") from None


def finished_runs(outputs: str | Path, run_ids) -> list[str]:
    """The runs among `run_ids` that have a record in `outputs/runs`, after reading every JSON
    record of each (a damaged one raises `RecordError` naming it)."""
    found = []
    for rid in run_ids:
        folder = Path(outputs) / "runs" / rid
        if not (folder / "status.json").is_file():
            continue
        for name in RECORDS:
            if (folder / name).is_file():
                read_json(folder / name)
        found.append(rid)
    return found

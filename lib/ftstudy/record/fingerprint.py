"""Fingerprints: what a run's numbers depend on, so that a changed input is seen.

A fingerprint has four parts: the data files' sha256s, the versions of the packages that
train and score, the hashes of the task definitions (upstream lm-eval YAMLs, ours), and a
hash of the code (`lib/ftstudy` and the notebook that ran). A finished run whose
fingerprint differs from today's is *stale*; two runs whose *evaluation* parts differ are
not compared (their numbers were not measured the same way).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ftstudy import compute
from ftstudy.compute import data, evaluate, paths, tasks as registry
from ftstudy.compute.provenance import dataset_hashes, file_sha256, versions

# The packages whose versions can change a run's numbers.
SCORING_PACKAGES = ["torch", "transformers", "peft", "bitsandbytes", "lm_eval"]
# The parts that decide whether two runs' scores may be compared item by item.
EVALUATION_PARTS = ("eval_data", "eval_packages", "tasks", "eval_code")


def _hash_files(files) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=str):
        h.update(Path(f).name.encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()[:16]


def _upstream_files(yaml_file: Path) -> list[Path]:
    """An upstream task YAML, the YAMLs it includes, and the Python helpers beside them."""
    import yaml

    files, todo = [], [yaml_file]
    while todo:
        f = todo.pop()
        if f in files or not f.is_file():
            continue
        files.append(f)
        text = yaml.safe_load(f.read_text().replace("!function", "")) or {}
        if isinstance(text, dict) and text.get("include"):
            todo.append(f.parent / text["include"])
        files += [p for p in f.parent.glob("*.py") if p not in files]
    return files


def task_hashes(tasks) -> dict[str, str]:
    """Per evaluation task, a hash of its definition (upstream files, or ours for NLL tasks);
    which rows and files a task reads is its registry entry, hashed with the evaluation code."""
    out = {}
    for task in sorted(tasks):
        if registry.is_nll(task):  # the data file itself is in `eval_data`
            blob = json.dumps(evaluate.nll_task_config(task, "<held-out file>", True), sort_keys=True)
            blob += (Path(evaluate.__file__).parent / "nll.py").read_text()
            out[task] = hashlib.sha256(blob.encode()).hexdigest()[:16]
        else:
            out[task] = _hash_files(_upstream_files(evaluate.upstream_yaml(task)))
    return out


def code_hash(notebook: Path) -> dict[str, str]:
    """The compute package's source (everything that computes a cell's numbers: editing any
    other package never makes a finished cell stale) and the notebook's code cells (not its
    outputs)."""
    nb = json.loads(Path(notebook).read_text())
    # code cells only: a notebook executed in place (outputs, counts) is the same recipe
    source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return {"lib": _hash_files(compute_sources()),
            "notebook": hashlib.sha256(source.encode()).hexdigest()[:16]}


def compute_sources() -> list[Path]:
    """The files of `ftstudy.compute`, the package that computes a cell."""
    return sorted(Path(compute.__file__).parent.glob("*.py"))


def of_cell(cell: dict, notebook: Path, data_dir=None) -> dict:
    """Today's fingerprint of a grid cell (nothing is run)."""
    data_dir = paths.data_dir(data_dir)
    tasks = list(cell["evaluation"]["tasks"])
    eval_sets = [data.task_dataset(t) for t in tasks]
    train_sets = [data.TRAIN_SETS[n]["dataset"] for n in (cell.get("mix") or {})]
    from ftstudy.compute import precision

    packages = versions(SCORING_PACKAGES)
    load = cell.get("load") or {}
    lib = Path(compute.__file__).parent
    return {"eval_data": dataset_hashes(eval_sets, data_dir),
            "train_data": dataset_hashes(train_sets, data_dir),
            "eval_packages": {k: packages[k] for k in ("torch", "transformers", "lm_eval")},
            "train_packages": {k: packages[k] for k in ("peft", "bitsandbytes")},
            "tasks": task_hashes(tasks),
            "eval_code": {"evaluate": _hash_files([lib / f for f in ("evaluate.py", "tasks.py", "nll.py", "scoring.py")])},
            # `auto` resolved on this machine: a run made where bf16 is native is stale here
            "compute": {"dtype": precision.resolve_dtype(load.get("dtype", cell["model"].get("dtype")))},
            "code": code_hash(notebook)}


def differences(old: dict | None, new: dict | None, parts=None) -> list[str]:
    """Which parts (and keys within them) differ between two fingerprints."""
    if old is None or new is None:
        return ["no fingerprint recorded"]
    out = []
    for part in parts or sorted(set(old) | set(new)):
        a, b = old.get(part) or {}, new.get(part) or {}
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if keys:
            out.append(f"{part} ({', '.join(keys)})")
    return out


# Parts that describe the machine reading the records rather than the run: where `auto`
# resolves to another precision, a run is not reproduced here (`ftstudy run` calls it stale),
# but its recorded numbers stand and a report must not say its code or data changed.
MACHINE_PARTS = ("compute",)


def code_and_data_differences(diffs: list[str]) -> list[str]:
    """`differences` without the MACHINE_PARTS."""
    return [d for d in diffs if d.split(" (")[0] not in MACHINE_PARTS]


def evaluation_differences(a: dict | None, b: dict | None) -> list[str]:
    """Why two runs' scores may not be compared; empty when they may (or a record predates
    fingerprints: then staleness, not comparison, flags it)."""
    if a is None or b is None:
        return []
    return differences(a, b, EVALUATION_PARTS)

"""One source for each default: the notebooks' parameters cells, evaluation, training and the
params schema read `ftstudy.compute.defaults`, so a default patched there reaches every one of
them (a value typed twice would not follow)."""
import importlib.util
import json
import sys

import pytest

from conftest import ROOT
from ftstudy.compute import defaults, evaluate, recipe, tasks, train
from ftstudy.config import params

NOTEBOOKS = ["base", "full", "lora", "qlora", "dora", "ia3", "prompt_tuning"]
# Every default, changed to a value nobody would type.
PATCHED = dict(
    MODEL={"name": "patched", "source": {"path": "/patched"}, "dtype": "float32"},
    EVALUATION=dict(batch_size=3, dtype="bfloat16", sample_seed=11, tasks={"alpaca_nll": {"limit": 2}}),
    TRAINING=dict(max_steps=7, batch_size=6, gradient_accumulation_steps=2, max_length=99, learning_rate=1e-3,
                  lr_scheduler_type="cosine", warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=0.5,
                  keep_checkpoints=True, epochs=2.0, eval_every=3),
    QUICK_RUN=dict(train_data={"alpaca": 1.0}, train_data_name="alpaca", train_size=5, training={"max_steps": 2}),
    SEED=9)


@pytest.fixture
def patched(monkeypatch):
    for name, value in PATCHED.items():
        monkeypatch.setattr(defaults, name, value)
    return PATCHED


def parameters_cell(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])


def injected(name: str) -> set[str]:
    """The names papermill injects into a notebook (`recipe.parameters_for` on a grid cell)."""
    cell = {"run_id": "x", "model": {}, "evaluation": {}, "method": name, "load": {}, "seed": 0, "mix": {},
            "train_data": "d", "train_size": 1, "training": {}, "adapter": {}, "distributed": {"processes": 2}}
    return set(recipe.parameters_for(cell, ROOT, None))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebooks_parameters_cell_reads_the_defaults(name, patched):
    """Run by hand, a notebook takes every default from the module; every name the grid
    injects is defined, so the cell stays a complete, runnable set of parameters."""
    ns = {}
    exec(parameters_cell(name), ns)
    assert injected(name) <= set(ns)
    assert ns["model"] == patched["MODEL"] and ns["evaluation"] == patched["EVALUATION"]
    if name != "base":
        quick = patched["QUICK_RUN"]
        assert {k: ns[k] for k in quick} == quick and ns["seed"] == patched["SEED"]


def test_evaluation_and_training_resolve_to_the_defaults(patched):
    assert evaluate.resolve(None) == patched["EVALUATION"]
    assert evaluate.resolve({"batch_size": 1})["dtype"] == "bfloat16"
    assert train.resolve(None) == patched["TRAINING"]  # an option at its default is absent
    assert train.resolve({"compile": False}) == patched["TRAINING"]  # off is absent


def test_the_params_schema_takes_its_defaults_from_the_module(patched, monkeypatch):
    """params.py as it would be imported with these defaults (a fresh copy of the module)."""
    spec = importlib.util.spec_from_file_location("ftstudy_params_probe", params.__file__)
    probe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, probe)
    spec.loader.exec_module(probe)
    training = probe.Training().model_dump()
    assert training.pop("learning_rate") is None  # unset: each method's own rate
    assert training == {k: v for k, v in patched["TRAINING"].items() if k != "learning_rate"} | {
        k: False for k in defaults.OPTIONAL_TRAINING}  # off unless a params file turns one on
    evaluation = probe.Evaluation(tasks={}).model_dump()
    assert {k: evaluation[k] for k in ("batch_size", "dtype", "sample_seed")} == {
        k: patched["EVALUATION"][k] for k in ("batch_size", "dtype", "sample_seed")}
    assert probe.ModelEntry(path="x").dtype == patched["MODEL"]["dtype"]
    assert probe.Params.model_fields["seeds"].default_factory() == [patched["SEED"]]


def test_the_defaults_name_registered_tasks_and_a_quick_run():
    assert set(defaults.EVALUATION["tasks"]) <= set(tasks.REGISTRY)
    assert set(defaults.QUICK_RUN["training"]) <= set(defaults.TRAINING)
    assert defaults.QUICK_RUN["training"]["max_steps"] <= defaults.TRAINING["max_steps"]
    params.Evaluation.model_validate(defaults.EVALUATION)
    params.Training.model_validate(defaults.TRAINING)
    params.ModelEntry.model_validate(defaults.MODEL["source"] | {"dtype": defaults.MODEL["dtype"]})

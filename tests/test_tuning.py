"""Equal tuning budget: validation rows apart from training and test, the selection rule,
trials before study runs in the grid, epochs, and curves that do not change training."""
import json

import pandas as pd
import pytest
import torch

from conftest import write_params
from ftstudy.compute import curves, data, evaluate, methods, results, train
from ftstudy.planning import grid, tuning
from ftstudy.config import params
from ftstudy.analysis import stats, tables
from ftstudy.record import samples


@pytest.mark.parametrize("train_set", ["gsm8k_train", "alpaca"])
def test_validation_training_and_test_items_are_disjoint(train_set, data_dir):
    spec = data.TRAIN_SETS[train_set]
    training = {p for p, _ in data.pairs(train_set, data_dir)}
    validation = {p for p, _ in data.heldout_pairs(spec["validation_nll"], data_dir)}
    test = {p for p, _ in data.heldout_pairs(spec["target_nll"], data_dir)}
    assert len(validation) == data.VALIDATION_ROWS and len(test) > 0 and len(training) > 4000
    assert not training & validation and not training & test and not validation & test
    # the files lm-eval reads hold exactly those parts
    for task, part in ((spec["validation_nll"], validation), (spec["target_nll"], test)):
        scored = {json.loads(line)["prompt"] for line in data.heldout_jsonl(task, data_dir).read_text().splitlines()}
        assert scored == part
    if train_set == "gsm8k_train":  # lm-eval's GSM8K task scores the test split: never trained on
        assert not training & {r["question"] for r in data.load_records("gsm8k", "test", data_dir)}


def test_selection_picks_the_lowest_validation_score_ties_to_the_smaller_rate():
    assert tuning.select({1e-4: 2.0, 3e-4: 1.5, 1e-3: 1.7, 3e-3: None}) == 3e-4
    assert tuning.select({1e-3: 1.5, 3e-4: 1.5 + 1e-12, 1e-4: 1.9}) == 3e-4   # a tie: smaller rate
    assert tuning.select({1e-3: 1.2, 3e-4: float("nan")}) == 1e-3             # a diverged trial loses
    assert tuning.select({1e-3: None}) is None


def _fake_trial(outputs, cell, score=None, status="done", error=None):
    folder = outputs / "runs" / cell["run_id"]
    folder.mkdir(parents=True)
    results.write_json(folder / "cell.json", cell)
    results.write_json(folder / "status.json", {"run_id": cell["run_id"], "method": cell["method"], "status": status,
                                                 "wall_s": 1.0, "error": error})
    metrics = ([{"task": tuning.validation_task(cell["mix"]), "metric": "bits_per_byte", "value": score}]
               if score is not None else [])
    results.write_json(folder / "metrics.json", {"cell": cell, "metrics": metrics})


def test_grid_runs_trials_first_then_the_study_run_at_the_chosen_rate(tmp_path, data_dir, tiny_model_dir):
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora", "ia3"),
                                 tuning={"factors": [0.5, 1, 2], "validation_limit": 8}))
    cells, waiting = grid.plan(p)
    trials = [c for c in cells if c.get("trial")]
    assert {c["method"] for c in waiting} == {"lora", "ia3"} and len(trials) == 6
    assert [c["training"]["learning_rate"] for c in trials if c["method"] == "lora"] == [1e-4, 2e-4, 4e-4]
    assert all(list(c["evaluation"]["tasks"]) == ["gsm8k_val_nll"] for c in trials)
    # a known synthetic series: lora's best is its middle rate, ia3's a tie (smaller wins)
    scores = {("lora", 1e-4): 2.0, ("lora", 2e-4): 1.4, ("lora", 4e-4): 1.6,
              ("ia3", 1.5e-3): 1.9, ("ia3", 3e-3): 1.3, ("ia3", 6e-3): 1.3}
    for c in trials:
        _fake_trial(tmp_path / "out", c, scores[(c["method"], c["training"]["learning_rate"])])
    cells, waiting = grid.plan(p)
    chosen = {c["method"]: c["training"]["learning_rate"] for c in cells
              if not c.get("trial") and c["method"] not in methods.REFERENCES}
    assert not waiting and chosen == {"lora": 2e-4, "ia3": 3e-3}
    table = tuning.table(tables.run_records(tmp_path / "out"), tuning.configured_rates(p))
    assert sorted(table[table["selected"]]["learning_rate"]) == [2e-4, 3e-3]
    assert dict(zip(table["method"], table["default_rate"])) == {"lora": 2e-4, "ia3": 3e-3}


def test_grid_run_trains_the_study_runs_in_a_second_round(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    """An executor that records what it is asked and fakes each cell's outcome: round one gets
    the references and every trial; round two the study runs, at the rates their trials chose."""
    import sys
    import types

    from ftstudy.run import executors

    rounds = []

    def run_cells(cells, outputs, data_dir, options, log=print):
        rounds.append([(c["method"], bool(c.get("trial")), c["training"]["learning_rate"] if c.get("training") else None)
                       for c in cells])
        for c in cells:
            rate = (c.get("training") or {}).get("learning_rate") or 0
            _fake_trial(outputs, c, score=abs(rate - 2e-4) if c.get("trial") else None)  # best: 2e-4
        return {c["run_id"]: "done" for c in cells}

    module = types.ModuleType("ftstudy_test_recorder")
    module.check_available, module.run_cells = (lambda: None), run_cells
    monkeypatch.setitem(sys.modules, "ftstudy_test_recorder", module)
    monkeypatch.setitem(executors.REGISTRY, "recorder", "ftstudy_test_recorder")
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                 tuning={"factors": [0.5, 1, 2]}, executor={"kind": "recorder"}))
    lines = []
    states = grid.run(p, log=lines.append)
    assert rounds[0] == [("base", False, None), ("lora", True, 1e-4), ("lora", True, 2e-4), ("lora", True, 4e-4)]
    assert rounds[1] == [("lora", False, 2e-4)] and len(rounds) == 2
    assert len(states) == 5 and set(states.values()) == {"done"}
    assert "(1 after their learning-rate trials)" in lines[0]
    assert grid.run(p, log=lines.append) and len(rounds) == 2  # all done: nothing is run again


def test_a_pending_trial_keeps_the_study_run_waiting(tmp_path, data_dir, tiny_model_dir):
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                 tuning={"factors": [1, 2]}))
    trials = [c for c in grid.plan(p)[0] if c.get("trial")]
    _fake_trial(tmp_path / "out", trials[0], 1.0)
    cells, waiting = grid.plan(p)
    assert len(waiting) == 1 and "1 of 2" in waiting[0]["waiting"]
    _fake_trial(tmp_path / "out", trials[1], status="failed", error="OutOfMemoryError: ...")
    assert "other than divergence" in grid.plan(p)[1][0]["waiting"]  # says nothing about the rate: wait
    import shutil
    shutil.rmtree(tmp_path / "out" / "runs" / trials[1]["run_id"])
    _fake_trial(tmp_path / "out", trials[1], status="failed", error="NonFiniteLoss: loss became nan at step 2")
    cells, waiting = grid.plan(p)
    assert waiting == []  # a diverged trial loses; the other rate is chosen
    assert next(c for c in cells if c["method"] == "lora" and not c.get("trial"))["training"]["learning_rate"] == \
        trials[0]["training"]["learning_rate"]


def test_a_sweep_extends_past_an_edge_until_the_score_turns_up(tmp_path, data_dir, tiny_model_dir):
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                 tuning={"learning_rates": {"lora": [1e-4, 3e-4, 9e-4]}, "extend": 2}))
    out = tmp_path / "out"
    scores = {1e-4: 1.0, 3e-4: 0.9, 9e-4: 0.8, 2.7e-3: 0.7, 8.1e-3: 0.75}

    def trials():
        return {c["training"]["learning_rate"]: c for c in grid.plan(p)[0] if c.get("trial")}

    for rate, cell in trials().items():
        _fake_trial(out, cell, scores[rate])
    first = trials()  # the largest rate won: one step (x3) beyond it, and the study run waits
    assert sorted(first) == [1e-4, 3e-4, 9e-4, 2.7e-3] and "1 of 4" in grid.plan(p)[1][0]["waiting"]
    _fake_trial(out, first[2.7e-3], scores[2.7e-3])
    second = trials()  # won again: a second extension, the last one allowed
    assert sorted(second)[-1] == 8.1e-3
    _fake_trial(out, second[8.1e-3], scores[8.1e-3])
    cells, waiting = grid.plan(p)  # turned up: bracketed at 2.7e-3, no third extension
    study = next(c for c in cells if not c.get("trial") and c["method"] == "lora")
    assert waiting == [] and study["training"]["learning_rate"] == 2.7e-3
    assert study["tuned_over"] == [1e-4, 3e-4, 9e-4, 2.7e-3, 8.1e-3]
    assert tuning.beyond([1e-4, 3e-4], 1e-4) == pytest.approx(3.333e-5)  # the small edge goes down
    assert tuning.beyond([1e-4, 3e-4, 9e-4], 3e-4) is None


def test_an_extension_stops_at_the_cap_and_the_summary_says_the_edge(tmp_path, data_dir, tiny_model_dir):
    from ftstudy.analysis import views

    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                 tuning={"learning_rates": {"lora": [1e-4, 3e-4]}, "extend": 1}))
    out = tmp_path / "out"
    for round_ in range(2):
        for c in grid.plan(p)[0]:
            if c.get("trial") and not (out / "runs" / c["run_id"]).exists():
                _fake_trial(out, c, 1.0 / c["training"]["learning_rate"])  # larger is always better
    cells, waiting = grid.plan(p)
    study = next(c for c in cells if not c.get("trial") and c["method"] == "lora")
    assert waiting == [] and study["tuned_over"] == [1e-4, 3e-4, 9e-4] and study["training"]["learning_rate"] == 9e-4
    trials = tuning.table(tables.run_records(out), tuning.configured_rates(p))
    summary = views.tuning_summary(trials)
    assert summary["edge"].tolist() == ["largest"] and summary["trials"].tolist() == [3]
    from ftstudy.narrative import answers  # the book's rates sentence says so

    text = answers.rates_source(p, trials)
    assert "at most 1 time" in text and "the best rate may lie beyond it: lora (largest of 3 rates)" in text
    trials.loc[trials["learning_rate"] == 9e-4, "validation_bpb"] = 5000.0  # now 3e-4 wins: bracketed
    trials["selected"] = trials["learning_rate"] == 3e-4
    assert "Bracketed (the best rate inside the range tried): lora." in answers.rates_source(p, trials)
    assert "3 trials per method" in answers.tuning_lines(summary)[0] and "Trials per method" not in text
    extra = trials.iloc[:1].assign(learning_rate=3e-5, selected=False)
    more = pd.concat([trials, pd.concat([trials, extra]).assign(method="ia3")], ignore_index=True)
    assert "Trials per method: ia3 4, lora 3 (an extension gives" in answers.rates_source(p, more)
    both = pd.concat([summary, summary.assign(method="ia3", trials=5)], ignore_index=True)
    assert "3-5 trials per method (the sweep extends past an edge)" in answers.tuning_lines(both)[0]


def test_a_sweep_whose_every_trial_diverged_extends_below_its_smallest_rate(tmp_path, data_dir, tiny_model_dir):
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                 tuning={"learning_rates": {"lora": [1e-4, 3e-4]}, "extend": 1}))
    out = tmp_path / "out"
    for c in grid.plan(p)[0]:
        if c.get("trial"):
            _fake_trial(out, c, status="failed", error="NonFiniteLoss: loss became nan at step 1")
    trials = [c for c in grid.plan(p)[0] if c.get("trial")]
    assert sorted(c["training"]["learning_rate"] for c in trials) == pytest.approx([3.333e-5, 1e-4, 3e-4])
    _fake_trial(out, min(trials, key=lambda c: c["training"]["learning_rate"]), 0.5)
    cells, waiting = grid.plan(p)
    study = next(c for c in cells if not c.get("trial") and c["method"] == "lora")
    assert waiting == [] and study["training"]["learning_rate"] == pytest.approx(3.333e-5)


def test_trials_train_with_the_tuning_seed_outside_the_study_seeds(tmp_path, data_dir, tiny_model_dir):
    """`tuning.seed`: every trial trains with it, so a study run is never the very training the
    selection favoured; sweeps per condition then differ only where more than the seed does."""
    p = params.load(write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                 seeds=[1, 2], designs={"main": {"seeds": [1, 2]}},
                                 tuning={"factors": [1, 2], "seed": 0}))
    trials = [c for c in grid.plan(p)[0] if c.get("trial")]
    assert len(trials) == 2 and {c["seed"] for c in trials} == {0}
    for c, score in zip(trials, [1.0, 0.5]):
        _fake_trial(tmp_path / "out", c, score)
    study = [c for c in grid.plan(p)[0] if c["method"] == "lora" and not c.get("trial")]
    assert sorted(c["seed"] for c in study) == [1, 2]
    assert {c["training"]["learning_rate"] for c in study} == {trials[1]["training"]["learning_rate"]}


def test_a_method_sweeps_in_the_main_condition_whatever_the_designs_order_once_per_model(
        tmp_path, data_dir, tiny_model_dir):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                        train_sizes=[16, 8], designs={"size": {"train_sizes": [8], "training": {"epochs": 2}},
                                                      "main": {"models": ["tiny", "other"]}},
                        tuning={"factors": [1, 2], "per": "method"})
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw["models"]["other"] = {"path": str(other), "dtype": "float32"}
    raw["training"] = {"epochs": 1, "batch_size": 4, "max_length": 128}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # the size design stays first
    trials = [c for c in grid.plan(params.load(path))[0] if c.get("trial")]
    assert len(trials) == 4 and {(c["model_name"], c["train_size"], c["training"]["epochs"]) for c in trials} == \
        {("tiny", 16, 1), ("other", 16, 1)}  # the main condition (16 examples, 1 epoch), on each model


def test_one_sweep_per_model_and_method_sets_every_seed_and_size(tmp_path, data_dir, tiny_model_dir):
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                        seeds=[0, 1], train_sizes=[16, 8],
                        designs={"main": {"seeds": [0, 1]}, "size": {"train_sizes": [8]}},
                        tuning={"factors": [1, 2], "per": "method"})
    p = params.load(path)
    trials = [c for c in grid.plan(p)[0] if c.get("trial")]
    assert len(trials) == 2 and {(c["seed"], c["train_size"]) for c in trials} == {(0, 16)}  # the first condition
    for c, score in zip(trials, [1.0, 0.5]):
        _fake_trial(tmp_path / "out", c, score)
    cells, waiting = grid.plan(p)
    study = [c for c in cells if c["method"] == "lora" and not c.get("trial")]
    assert waiting == [] and len(study) == 3
    assert {c["training"]["learning_rate"] for c in study} == {trials[1]["training"]["learning_rate"]}
    per_condition = params.load(write_params(tmp_path / "q.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                                             seeds=[0, 1], designs={"main": {"seeds": [0, 1]}},
                                             tuning={"factors": [1, 2]}))
    assert len([c for c in grid.plan(per_condition)[0] if c.get("trial")]) == 4  # the default: a sweep each


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r.update(tuning={"learning_rates": {"lora": [1e-4, 1e-3]}}),
     "every method needs the same number of trials"),
    (lambda r: r.update(tuning={"learning_rates": {"dora": [1e-4]}}), "tuning.learning_rates.dora: not a method"),
    (lambda r: r.update(tuning={"factors": [1, 1]}), "tuning.factors: factors must be distinct"),
    (lambda r: r.update(tuning={"per": "seed"}), "tuning.per"),
    (lambda r: r.update(tuning={"extend": -1}), "tuning.extend"),
    (lambda r: r["training"].update(epochs=2), "give either max_steps or epochs"),
    (lambda r: (r["training"].update(eval_every=1), r.update(distributed={"processes": 2})),
     "eval_every (curves) needs distributed.processes: 1"),
    (lambda r: (r["methods"].update(lora={"training": {"compile": True}}), r.update(distributed={"processes": 2})),
     "training.compile and training.padding_free are measured and tested in one training process"),
    (lambda r: (r["training"].update(eval_every=1), r["evaluation"].update(dtype="bfloat16")),
     "evaluation.dtype: learning curves (training.eval_every) score the fp32 weights"),
    (lambda r: (r["training"].update(eval_every=1), r["evaluation"].update(dtype="auto")),
     "evaluation.dtype: learning curves (training.eval_every) score the fp32 weights"),
])
def test_bad_tuning_and_budget_sections(mutate, expect, tmp_path, data_dir, tiny_model_dir):
    import yaml

    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora", "ia3"))
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(params.ParamsError) as e:
        params.load(path)
    assert expect in str(e.value) and str(path) in str(e.value)


def test_epochs_fix_the_steps_so_sizes_compare_at_equal_passes():
    assert train.steps_for({"epochs": 1, "batch_size": 4}, 32) == 8
    assert train.steps_for({"epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2}, 30) == 8
    assert train.steps_for({"max_steps": 5}, 1000) == 5


def _lora(model_dir, data_dir, out, eval_every):
    spec = methods.resolve("lora", adapter={"lora_dropout": 0.1},  # dropout draws random masks
                           training={"max_steps": 3, "batch_size": 4, "max_length": 96,
                                     "learning_rate": 1e-2, "eval_every": eval_every})
    tok, model = methods.load_model(spec, {"name": "tiny", "source": {"path": str(model_dir)},
                                           "dtype": "float32"})
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 12, 0, 96, data_dir)
    tuned = methods.apply(model, spec, seed=0)
    ev = {"batch_size": 4, "tasks": {"gsm8k_nll": {"limit": 6}, "alpaca_nll": {"limit": 6},
                                     "hellaswag": {"limit": 4}}}
    cost = train.train(tuned, tok, examples, spec, out, seed=0, curve={"evaluation": ev, "data_dir": data_dir})
    return tuned, tok, ev, cost


@pytest.mark.slow
def test_a_curve_does_not_change_training_and_its_last_point_is_the_final_evaluation(
        tiny_model_dir, data_dir, tmp_path):
    plain, *_ = _lora(tiny_model_dir, data_dir, tmp_path / "plain", eval_every=0)
    tuned, tok, ev, cost = _lora(tiny_model_dir, data_dir, tmp_path / "curve", eval_every=1)
    trained = {n: p for n, p in plain.named_parameters() if p.requires_grad}
    assert any(float(p.abs().sum()) > 0 for n, p in trained.items() if "lora_B" in n)
    for n, p in tuned.named_parameters():  # lm-eval reseeds the RNGs: restored, same dropout masks
        if p.requires_grad:
            assert torch.equal(p, trained[n]), n
    run = tmp_path / "curve"
    curve = json.loads((run / "curve.json").read_text())
    # the last step is not scored in training: its point is the final evaluation's
    assert [p["step"] for p in curve["points"]] == [0, 1, 2] and curve["final_step"] == 3
    assert cost["curve_eval_wall_s"] > 0 and (tmp_path / "plain" / "curve.json").exists() is False
    # hellaswag (accuracy) is end-of-training only; the log-likelihood tasks are on the curve
    assert {m["task"] for m in curve["points"][0]["metrics"]} == {"gsm8k_nll", "alpaca_nll"}
    out = evaluate.evaluate(tuned, tok, ev, run, data_dir)
    results.write_json(run / "metrics.json", {"eval_items": 6, "metrics": evaluate.metric_rows(out["tasks"])})
    points = samples.curve_points(run)
    assert [p["step"] for p in points] == [0, 1, 2, 3] and points[-1]["final"]
    assert {m["task"] for m in points[-1]["metrics"]} == {"gsm8k_nll", "alpaca_nll"}
    for task in ("gsm8k_nll", "alpaca_nll"):
        final = samples.load_samples(run, task).query("metric == 'bits_per_byte'")
        last, first = samples.curve_item_values(run, 3, task), samples.curve_item_values(run, 0, task)
        assert last.equals(final.set_index("doc_id")["value"].astype(float).sort_index())
        assert first.index.equals(last.index)
        assert float((last - first).abs().max()) > 1e-3  # the curve moved: not a constant series
    # scored in training at the last step (as curves did before), the final evaluation's numbers
    check = curves.callback(tuned, tok, ev, tmp_path / "check", data_dir, every=1)
    check.score(3)
    for task in ("gsm8k_nll", "alpaca_nll"):
        final = samples.item_logliks(run, task)
        in_training = samples.item_logliks(curves.step_folder(tmp_path / "check", 3), task)
        # equal up to fp32 rounding of a sum of ~1000 nats (one ulp there is 1.2e-4; AVX512 and
        # AVX2 kernels sum in different orders): a bf16 or different-weights score is off by ~1e-2
        assert final.index.equals(in_training.index)
        assert float(((final - in_training).abs() / final.abs().clip(lower=1.0)).max()) <= 1e-6


def _fake_curve(outputs, run_id, method, target, other):
    """A run whose curve has mean bits/byte `target[k]` (4 equal items) on gsm8k_nll and
    per-item values `other[k]` on alpaca_nll at steps 0, 2, 4."""
    folder = outputs / "runs" / run_id
    points = []
    for k, step in enumerate((0, 2, 4)):
        for task, values in (("gsm8k_nll", [target[k]] * 4), ("alpaca_nll", other[k])):
            lm = folder / "curve" / f"step_{step:05d}" / "lm_eval" / task
            lm.mkdir(parents=True)
            (lm / "samples.jsonl").write_text("".join(json.dumps(
                {"doc_id": i, "filter": "none", "metrics": ["bits_per_byte"], "bits_per_byte": v}) + "\n"
                for i, v in enumerate(values)))
        points.append({"step": step, "metrics": [
            {"task": "gsm8k_nll", "metric": "bits_per_byte", "value": target[k]},
            {"task": "alpaca_nll", "metric": "bits_per_byte", "value": sum(other[k]) / 4}]})
    (folder / "curve.json").write_text(json.dumps({"points": points}))
    results.write_json(folder / "metrics.json", {"cell": {"target_nll": "gsm8k_nll", "replayed_nll": []}})
    return dict(run_id=run_id, status="done", model="m", method=method, train_data="gsm8k",
                train_size=8, seed=0)


def test_forgetting_at_matched_learning_interpolates_item_by_item(tmp_path):
    import pandas as pd

    from ftstudy.analysis import views

    v0 = [1.0, 1.0, 1.0, 1.0]
    runs = pd.DataFrame([
        # a learns 0.08 then 0.16; its retention items lose +0.1/+0.2, then +0.5/+0.6
        _fake_curve(tmp_path, "a", "lora", [2.0, 1.92, 1.84], [v0, [1.1, 1.2, 1.1, 1.2], [1.5, 1.6, 1.5, 1.6]]),
        # b learns 0.05 then 0.10 (the level both reach) and loses 0.3 on every item at the end
        _fake_curve(tmp_path, "b", "full", [2.0, 1.95, 1.90], [v0, [1.1] * 4, [1.3] * 4]),
    ])
    curve = views.curve_table(tmp_path, runs)
    assert set(curve["role"]) == {"target", "other"}
    m, between = views.matched_forgetting(tmp_path, curve)
    m = m.set_index("method")
    assert m["matched_learning"].iloc[0] == pytest.approx(0.10)
    # a reaches 0.10 a quarter of the way from step 2 to 4: items +0.2 and +0.3, mean 0.25
    assert m.loc["lora", "at_step"] == pytest.approx(2.5) and m.loc["lora", "forgetting"] == pytest.approx(0.25)
    assert m.loc["full", "at_step"] == pytest.approx(4.0) and m.loc["full", "forgetting"] == pytest.approx(0.3)
    assert pd.isna(m.loc["full", "ci_low"])  # every item changed alike: no interval
    # between methods, item by item: full - lora = 0.3 - (0.2, 0.3, 0.2, 0.3)
    [row] = between.to_dict("records")
    assert (row["method"], row["other"]) == ("full", "lora") and row["difference"] == pytest.approx(0.05)
    assert row["n"] == 4 and row["p_value"] == pytest.approx(0.5)  # two items of +0.1: 2 of 4 sign patterns as extreme


def test_the_book_says_whether_tuning_changed_the_ranking_and_flags_edge_choices():
    import pandas as pd

    from ftstudy.analysis import views
    from ftstudy.narrative import answers

    rows = []
    # at default rates lora (1.50) beats ia3 (1.60); at chosen rates ia3 (1.20) beats lora (1.40)
    for method, default, scores in (("lora", 2e-4, {1e-4: 1.55, 2e-4: 1.50, 4e-4: 1.40}),
                                    ("ia3", 3e-3, {1.5e-3: 1.70, 3e-3: 1.60, 6e-3: 1.20})):
        for rate, score in scores.items():
            rows.append(dict(model="m", method=method, train_data="gsm8k", train_size=8, seed=0,
                             learning_rate=rate, validation_task="gsm8k_val_nll", validation_bpb=score,
                             status="done", wall_s=10.0, selected=rate == min(scores, key=scores.get),
                             default_rate=default))
    summary = views.tuning_summary(pd.DataFrame(rows))
    assert list(summary["edge"]) == ["largest", "largest"] and list(summary["sweep_wall_s"]) == [30.0, 30.0]
    text = " ".join(answers.tuning_lines(summary))
    assert "at the configured rates: lora < ia3; at the chosen rates: ia3 < lora" in text
    assert "the order of point estimates changed" in text and "ia3 (largest)" in text
    unchanged = summary.assign(validation_bpb_default=summary["method"].map({"ia3": 1.3, "lora": 1.5}))  # ia3 ahead at both
    assert "the same order" in " ".join(answers.tuning_lines(unchanged))
    # a flip is claimed only where the pair is separated at both rates (several seeds), opposite signs
    ident = dict(model="m", train_data="gsm8k", train_size=8, seed=0, method="ia3", other="lora", seeds=3)
    pairs = pd.DataFrame([{**ident, "rates": "default", "difference": 0.1, "p_adjusted": 0.01, "significant": True},
                          {**ident, "rates": "chosen", "difference": -0.2, "p_adjusted": 0.01, "significant": True}])
    assert "lora ahead of ia3 at the configured rates, behind at the chosen ones" in " ".join(answers.tuning_lines(summary, pairs))
    noisy = pairs.assign(significant=[True, False], p_adjusted=[0.01, 0.2])
    assert "No pair of methods reversed its order" in " ".join(answers.tuning_lines(summary, noisy))
    one_seed = pairs.assign(seeds=1)  # one seed: training randomness unmeasured, no flip claimed
    assert "is not tested" in " ".join(answers.tuning_lines(summary, one_seed))


def test_export_refuses_a_destination_overlapping_the_outputs(tmp_path):
    from ftstudy.record import export

    (tmp_path / "out" / "runs").mkdir(parents=True)
    for dest in (tmp_path / "out", tmp_path / "out" / "results", tmp_path):
        with pytest.raises(ValueError, match="overlaps the outputs folder"):
            export.export(tmp_path / "out", [], dest, "p.yaml")
    assert (tmp_path / "out" / "runs").is_dir()  # nothing deleted

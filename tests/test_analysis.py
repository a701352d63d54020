"""Statistics and generated sentences follow the numbers (synthetic runs, known answers)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftstudy.analysis import views, stats, tables, verdicts
from ftstudy.narrative import answers
from ftstudy.compute import data, results

EVAL = {"batch_size": 8, "tasks": {"mmlu_high_school_computer_science": {"limit": 200},
                                   "gsm8k_nll": {"limit": 200}, "alpaca_nll": {"limit": 200}}}


def _fake_run(outputs: Path, run_id: str, method: str, correct: np.ndarray, bpb: dict,
              train_data="gsm8k", seed=0, mix=None, model=None, fingerprint=None):
    run = outputs / "runs" / run_id
    (run / "lm_eval").mkdir(parents=True)
    base = method == "base"
    mix = None if base else (mix or {"gsm8k_train": 1.0})
    cell = dict(run_id=run_id, method=method, model_name="m", evaluation=EVAL,
                model=model or {"name": "m", "source": {"path": "/m"}, "dtype": "float32"},
                train_data=None if base else train_data, mix=mix,
                train_size=0 if base else 100, seed=None if base else seed, **data.targets(mix))
    if fingerprint is not None:
        results.write_json(run / "fingerprint.json", fingerprint)
    metrics = [dict(task="mmlu_high_school_computer_science", metric="acc", value=float(correct.mean()),
                    stderr=float(correct.std(ddof=1) / np.sqrt(len(correct))))]
    folder = run / "lm_eval" / "mmlu_high_school_computer_science"
    folder.mkdir()
    with open(folder / "samples.jsonl", "w") as f:
        for i, c in enumerate(correct):
            pred = 0 if c else 1
            resps = [[-1.0 if k == pred else -2.0, False] for k in range(4)]
            f.write(json.dumps(dict(doc_id=i, target=0, filtered_resps=resps, filter="none",
                                    metrics=["acc"], acc=float(c))) + "\n")
    for task, values in bpb.items():
        (run / "lm_eval" / task).mkdir()
        with open(run / "lm_eval" / task / "samples.jsonl", "w") as f:
            for i, v in enumerate(values):
                f.write(json.dumps(dict(doc_id=i, target="x", filtered_resps=[[-v, False]], filter="none",
                                        metrics=["bits_per_byte"], bits_per_byte=float(v))) + "\n")
        metrics.append(dict(task=task, metric="bits_per_byte", value=float(np.mean(values)),
                            stderr=float(np.std(values, ddof=1) / np.sqrt(len(values)))))
    results.write_json(run / "cell.json", cell)
    results.write_json(run / "metrics.json", dict(cell=cell, run_id=run_id, method=method, model="m",
                                                   metrics=metrics))
    results.write_json(run / "status.json", dict(run_id=run_id, method=method, model="m", status="done"))


def _base_run(outputs: Path, seed: int, n: int):
    """A base run with no MMLU item right and random per-item bits per byte on both NLL
    tasks; returns (correct, gsm8k_nll values, alpaca_nll values) to derive runs from."""
    rng = np.random.default_rng(seed)
    correct = np.zeros(n, bool)
    g, a = rng.normal(1.0, 0.1, n), rng.normal(1.2, 0.1, n)
    _fake_run(outputs, "base0", "base", correct, {"gsm8k_nll": g, "alpaca_nll": a})
    return correct, g, a


@pytest.fixture()
def synthetic(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    base_correct = np.zeros(n, bool)
    base_correct[:100] = True
    lora_correct = base_correct.copy()
    lora_correct[100:130] = True                      # +30 items, none lost: +15 points
    ia3_correct = base_correct.copy()
    ia3_correct[100:102] = True                        # +2 and -2: no change
    ia3_correct[0:2] = False
    base_g, base_a = rng.normal(1.0, 0.1, n), rng.normal(1.2, 0.1, n)
    _fake_run(tmp_path, "base0", "base", base_correct, {"gsm8k_nll": base_g, "alpaca_nll": base_a})
    _fake_run(tmp_path, "lora0", "lora", lora_correct,
              {"gsm8k_nll": base_g - 0.2, "alpaca_nll": base_a + 0.05})   # learns 0.2, forgets 0.05
    _fake_run(tmp_path, "ia30", "ia3", ia3_correct,
              {"gsm8k_nll": base_g - 0.05 + rng.normal(0, 0.001, n), "alpaca_nll": base_a})
    tables.collect(tmp_path).write(tmp_path)
    return tmp_path


def test_paired_bootstrap_and_mcnemar_on_known_difference(synthetic):
    p = pd.read_csv(synthetic / "paired.csv")
    row = p[(p["run_id"] == "lora0") & (p["comparison"] == "vs base") &
            (p["task"] == "mmlu_high_school_computer_science")].iloc[0]
    assert row["mean_diff"] == pytest.approx(0.15) and row["n"] == 200
    assert 0.09 < row["ci_low"] < 0.15 < row["ci_high"] < 0.21
    assert row["gained"] == 30 and row["lost"] == 0 and row["p_value"] < 1e-8
    assert row["test"] == "mcnemar" and row["significant"]
    same = p[(p["run_id"] == "ia30") & (p["comparison"] == "vs base") & (p["metric"] == "acc")].iloc[0]
    assert same["mean_diff"] == 0 and same["ci_low"] < 0 < same["ci_high"] and same["p_value"] == 1.0
    assert not same["significant"]
    nll = p[(p["run_id"] == "lora0") & (p["task"] == "gsm8k_nll") & (p["comparison"] == "vs base")].iloc[0]
    # every item changed by exactly -0.2: a point, not an interval; the test still decides
    assert nll["mean_diff"] == pytest.approx(-0.2) and np.isnan(nll["ci_low"]) and np.isnan(nll["ci_high"])
    assert nll["test"] == "sign-flip" and nll["p_value"] < 0.001 and nll["significant"]
    vs_method = p[p["comparison"] == "vs method"]
    assert set(vs_method["method"]) | set(vs_method["reference"]) == {"ia3", "lora"}


def _answers(outputs) -> str:
    ans, cit = answers.build(tables.Tables.read(outputs).as_dict())
    return answers.markdown(ans, cit)


def test_generated_sentences_follow_the_numbers(synthetic):
    text = _answers(synthetic)
    # one seed: shown with its items' verdict, never called separated; accuracy beside p(correct)
    assert "**mmlu_high_school_computer_science** (p(correct choice), 200 items): lora +0.045 [" in text
    assert "accuracy beside it (acc, no verdict drawn): ia3 +0.00 [-0.02, +0.02]; lora +0.15 [+0.10, +0.20]." in text
    assert "On its target gsm8k_nll, lora (single seed) and ia3 (single seed) changed on the items but ran one seed" in text
    assert "lora has the largest point estimate; against the runner-up ia3 the verdict on the gap is single seed" in text
    assert "Forgetting: lora on alpaca_nll +0.050 (no interval) (single seed)" in text
    assert "(separated" not in text
    paired = tables.Tables.read(synthetic).aggregated
    lf = views.learning_forgetting(paired, "nll")
    lora = lf[lf["method"] == "lora"].iloc[0]
    assert lora["learning"] == pytest.approx(0.2) and lora["forgetting"] == pytest.approx(0.05)
    assert not lora["learned"] and lora["forgot_on"] == ""  # one seed: not separated
    assert set(lf[lf["pareto"]]["method"]) == {"lora", "ia3"}  # ia3 forgets less, lora learns more


def test_sentences_change_when_results_change(synthetic):
    agg = pd.read_csv(synthetic / "aggregated.csv")
    m = (agg["method"] == "lora") & (agg["metric"] == "p_correct") & (agg["comparison"] == "vs base")
    agg.loc[m, ["mean_diff", "ci_low", "ci_high", "seeds"]] = [-0.045, -0.06, -0.03, 3]
    agg.to_csv(synthetic / "aggregated.csv", index=False)
    text = _answers(synthetic)
    assert "lora -0.045 [-0.060, -0.030] (separated)" in text
    assert "lora on mmlu_high_school_computer_science -0.045 [-0.060, -0.030] (separated)" in text  # a loss


def test_grid_limits_are_said_plainly(synthetic):
    text = _answers(synthetic)
    assert "The grid has one base model (m)" in text
    assert "The grid does not vary the training examples" in text


def test_baselines_and_one_answer_warning(tmp_path):
    correct = np.zeros(40, bool)
    correct[:10] = True   # pred 0 where correct, else 1: 75% of answers are "B"
    _fake_run(tmp_path, "b", "base", correct, {})
    tables.collect(tmp_path).write(tmp_path)
    b = tables.Tables.read(tmp_path).baselines
    row = b.iloc[0]
    assert row["chance"] == 0.25 and row["majority_baseline"] == 1.0
    assert row["top_answer"] == 1 and row["top_answer_share"] == 0.75
    warn = answers.warnings(b)
    assert len(warn) == 1 and "base on mmlu_high_school_computer_science: 75% of answers are choice B" in warn[0]
    _fake_run(tmp_path, "l", "lora", correct, {})
    tables.collect(tmp_path).write(tmp_path)
    warn = answers.warnings(tables.Tables.read(tmp_path).baselines)
    assert len(warn) == 2 and "1 of 1 fine-tuned runs also put at least 60%" in warn[1] and "(lora)" in warn[1]


def test_min_paired_detectable_is_the_exact_sign_tests_resolution():
    from scipy import stats as sps

    assert stats.min_paired_detectable(12) == 6 / 12
    assert sps.binomtest(6, 6).pvalue <= 0.05 < sps.binomtest(5, 5).pvalue


def test_min_detectable_difference_shrinks_with_items():
    assert stats.min_detectable_difference(100) == pytest.approx(0.198, abs=0.002)
    assert stats.min_detectable_difference(1000) < stats.min_detectable_difference(100) / 3


def test_mcnemar_decides_not_the_bootstrap(tmp_path):
    """3 of 4 items gained: a percentile bootstrap interval excludes zero, but the exact
    McNemar test gives p = 0.25: inside the noise."""
    base = np.array([False, False, False, False])
    tuned = np.array([True, True, True, False])
    _fake_run(tmp_path, "b", "base", base, {})
    _fake_run(tmp_path, "l", "lora", tuned, {})
    tables.collect(tmp_path).write(tmp_path)
    row = tables.Tables.read(tmp_path).aggregated.iloc[0]
    assert row["ci_low"] > 0  # the interval alone would have said "outside the noise"
    assert row["p_value"] == pytest.approx(0.25) and not row["significant"]
    assert verdicts.decide(row)[0] == verdicts.NOT_AFTER_HOLM  # not separated


def test_holm_correction_within_a_family():
    df = pd.DataFrame({"comparison": ["vs base"] * 3 + ["vs method"], "headline": [True] * 4,
                       "p_value": [0.01, 0.04, 0.03, 0.04]})
    out = stats.adjust(df, ["comparison", "headline"])
    assert out["p_adjusted"].tolist() == pytest.approx([0.03, 0.06, 0.06, 0.04])
    assert out["significant"].tolist() == [True, False, False, True]


def test_several_seeds_are_aggregated_per_configuration(tmp_path):
    correct, g, a = _base_run(tmp_path, seed=1, n=200)
    for seed, shift in [(0, 0.10), (1, 0.20), (2, 0.15)]:
        _fake_run(tmp_path, f"lora{seed}", "lora", correct, {"gsm8k_nll": g - shift, "alpaca_nll": a},
                  seed=seed)
    tables.collect(tmp_path).write(tmp_path)
    agg = tables.Tables.read(tmp_path).aggregated
    row = agg[(agg["task"] == "gsm8k_nll") & (agg["metric"] == "bits_per_byte")].iloc[0]
    assert len(agg[(agg["task"] == "gsm8k_nll") & (agg["metric"] == "bits_per_byte")]) == 1
    assert row["seeds"] == 3 and row["interval"] == "seeds x items"
    assert row["mean_diff"] == pytest.approx(-0.15)
    assert row["ci_low"] < -0.15 < row["ci_high"] and row["ci_high"] - row["ci_low"] > 0.05  # seed spread
    text = _answers(tmp_path)
    assert "seeds per method: lora 3" in text and "lora -0.150 [" in text
    assert len(pd.read_csv(tmp_path / "paired.csv").query("task == 'gsm8k_nll' and metric == 'bits_per_byte'")) == 3


def test_seeds_share_their_items_in_the_interval_and_the_test():
    """Seeds score the same items: repeating one seed's differences must not make a
    difference look surer (it would if items were resampled independently per seed)."""
    rng = np.random.default_rng(4)
    d = rng.normal(0.05, 0.5, 60)
    one = stats.paired(pd.DataFrame({"doc_id": range(60), "metric": "m", "value": 0.0}),
                       pd.DataFrame({"doc_id": range(60), "metric": "m", "value": d}), "m")
    three = stats.crossed([d, d, d])
    assert three["p_value"] == pytest.approx(one["p_value"], abs=0.02)
    assert three["ci_high"] - three["ci_low"] == pytest.approx(one["ci_high"] - one["ci_low"], rel=0.15)
    # 0/1 items, 3 of 4 gained in each of 3 seeds: still inside the noise (as McNemar says for one).
    gained = np.array([1.0, 1.0, 1.0, 0.0])
    assert stats.crossed([gained] * 3)["p_value"] >= 0.05
    # every item +1 in every seed: no interval to report
    assert np.isnan(stats.crossed([np.ones(5), np.ones(5)])["ci_low"])


def test_report_uses_exactly_the_grid_and_pairs_by_model_source(tmp_path):
    correct = np.zeros(40, bool)
    correct[:20] = True
    bpb = {"gsm8k_nll": np.linspace(1, 2, 40), "alpaca_nll": np.linspace(1, 2, 40)}
    _fake_run(tmp_path, "base0", "base", correct, bpb)
    _fake_run(tmp_path, "lora0", "lora", correct, bpb)
    _fake_run(tmp_path, "old0", "lora", ~correct, bpb)  # another grid's run in the same outputs
    # Same display name, another dtype: a different model, never paired with base0.
    _fake_run(tmp_path, "bf16", "ia3", correct, bpb,
              model={"name": "m", "source": {"path": "/m"}, "dtype": "bfloat16"})
    # Same display name, another source (another checkpoint): not paired with base0 either.
    _fake_run(tmp_path, "other", "dora", correct, bpb,
              model={"name": "m", "source": {"path": "/another"}, "dtype": "float32"})
    grid_cells = [{"run_id": r} for r in ("base0", "lora0", "bf16", "other")]
    tables.collect(tmp_path, grid_cells).write(tmp_path)
    assert set(pd.read_csv(tmp_path / "runs.csv")["run_id"]) == {"base0", "lora0", "bf16", "other"}
    assert pd.read_csv(tmp_path / "outside_grid.csv")["run_id"].tolist() == ["old0"]
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert set(paired["run_id"]) == {"lora0"}  # the others' references are absent
    refused = pd.read_csv(tmp_path / "refused.csv")  # said, not silently dropped
    unpaired = refused[refused["comparison"] == "vs base"]
    assert set(unpaired["run_id"]) == {"bf16", "other"}
    assert unpaired["differs"].str.startswith("no reference run with the same model source").all()


def test_runs_with_different_evaluation_fingerprints_are_not_compared(tmp_path):
    correct = np.zeros(40, bool)
    fp = {"eval_data": {"mmlu/test.csv": "aaa"}, "eval_packages": {"lm_eval": "0.4.13"},
          "tasks": {"mmlu_high_school_computer_science": "t1"}, "code": {"lib": "x"}}
    _fake_run(tmp_path, "base0", "base", correct, {}, fingerprint=fp)
    _fake_run(tmp_path, "lora0", "lora", correct, {},
              fingerprint={**fp, "eval_data": {"mmlu/test.csv": "bbb"}, "code": {"lib": "y"}})
    _fake_run(tmp_path, "ia30", "ia3", correct, {}, fingerprint={**fp, "code": {"lib": "z"}})
    tables.collect(tmp_path).write(tmp_path)
    refused = pd.read_csv(tmp_path / "refused.csv")
    assert set(refused["run_id"]) == {"lora0"} and len(refused) == 2  # vs base and vs ia3
    assert refused["differs"].str.contains("evaluation fingerprints differ: eval_data").all()
    assert not refused["differs"].str.contains("code").any()  # code alone does not refuse
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert set(paired["run_id"]) == {"ia30"}


def test_a_replayed_retention_task_is_said_next_to_its_number(tmp_path):
    correct, g, a = _base_run(tmp_path, seed=2, n=100)
    # Label says nothing about the target: the largest component (gsm8k_train) decides.
    _fake_run(tmp_path, "mix0", "lora", correct, {"gsm8k_nll": g - 0.2, "alpaca_nll": a - 0.05},
              train_data="replay", mix={"alpaca": 0.2, "gsm8k_train": 0.8})
    tables.collect(tmp_path).write(tmp_path)
    paired = tables.Tables.read(tmp_path).aggregated
    lf = views.learning_forgetting(paired, "nll")
    assert lf.iloc[0]["target"] == "gsm8k_nll" and lf.iloc[0]["replayed"] == "alpaca_nll"
    assert "lora -0.050 (no interval) (single seed); its training mix replays alpaca_nll's source data" in _answers(tmp_path)


def test_a_control_shift_is_said_beside_the_trained_change(tmp_path):
    correct, g, a = _base_run(tmp_path, seed=3, n=100)
    _fake_run(tmp_path, "pt", "prompt_tuning", correct, {"gsm8k_nll": g - 0.1, "alpaca_nll": a + 0.3})
    _fake_run(tmp_path, "pt0", "prompt_tuning", correct, {"gsm8k_nll": g, "alpaca_nll": a + 0.25})
    cell = json.loads((tmp_path / "runs" / "pt0" / "cell.json").read_text())
    cell.update(control=True, train_data=None, mix=None, train_size=0)
    results.write_json(tmp_path / "runs" / "pt0" / "cell.json", cell)
    metrics = json.loads((tmp_path / "runs" / "pt0" / "metrics.json").read_text())
    results.write_json(tmp_path / "runs" / "pt0" / "metrics.json", {**metrics, "cell": cell})
    tables.collect(tmp_path).write(tmp_path)
    text = _answers(tmp_path)
    assert "prompt_tuning +0.300 (no interval) (single seed); at 0 steps (its control, one initialisation) already +0.250" in text
    table = views.controls(tmp_path, tables.Tables.read(tmp_path).paired)
    assert table.iloc[0]["method"] == "prompt_tuning" and not table.iloc[0]["identity"]


def test_a_clear_change_survives_holm_in_a_large_family():
    """A Monte Carlo p-value has a floor of 1/(resamples+1): with too few sign flips, Holm over
    the default grid's ~60 comparisons could never call even a large change outside the noise."""
    rng = np.random.default_rng(5)
    clear = rng.normal(-0.2, 0.05, 24)  # 24 items: 2^24 sign patterns, so Monte Carlo, floor 1/(B+1)
    p = stats.sign_flip_p(clear)
    assert p < 1e-4
    family = pd.DataFrame({"comparison": "vs base", "headline": True,
                           "p_value": [p] + [0.5] * 99})
    assert stats.adjust(family, ["comparison", "headline"])["significant"].iloc[0]


def test_holm_and_sign_flip_agree_with_statsmodels_and_scipy():
    """The two tests written out for speed give the libraries' answers: Holm's adjusted
    p-values are statsmodels' (ties and p near 1 included), and the sign-flip p-value is
    scipy's exact one where it enumerates every sign, and within Monte Carlo error of it
    otherwise."""
    from scipy import stats as sps
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for p in (rng.uniform(0, 1, 17), np.array([0.01, 0.01, 0.04, 0.9, 0.9, 0.002]), rng.uniform(0, 0.02, 5)):
        np.testing.assert_allclose(stats.holm(p), multipletests(p, method="holm")[1])
    for n, shift in ((6, 0.0), (11, 0.5), (15, 0.2)):
        d = rng.normal(shift, 1, n)
        exact = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
        assert stats.sign_flip_p(d) == pytest.approx(exact)
    d = rng.normal(0.3, 1, 40)
    scipy_p = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=stats.SIGN_FLIPS,
                                   random_state=np.random.default_rng(0)).pvalue
    assert abs(stats.sign_flip_p(d) - scipy_p) < 0.01


def test_a_run_pairs_only_with_a_reference_evaluated_in_its_precision(monkeypatch):
    """`evaluation.dtype: auto` is bf16 on one CPU kind and fp32 on another: the recorded cell
    holds the precision used, so a run is never paired with a reference evaluated otherwise."""
    from ftstudy.compute import methods, precision

    model = {"name": "m", "source": {"path": "/m"}, "dtype": "float32"}
    keys = []
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16", lambda: native)
        cell = results.cell("r", methods.resolve("base"), model, {"dtype": "auto", "tasks": {"hellaswag": {}}})
        keys.append(tables.reference_key(cell))
        assert cell["evaluation"]["dtype"] == ("bfloat16" if native else "float32")
    assert keys[0] != keys[1]

"""Measures with power: continuous multiple-choice scores from lm-eval's per-choice
log-likelihoods, one interval with training randomness and items in it, and a planner whose
item counts a simulation confirms."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.special import softmax

from ftstudy.compute import evaluate, models
from ftstudy.analysis import measures, power, stats, verdicts
from ftstudy.record import samples


def test_continuous_scores_equal_a_hand_computation_from_lm_evals_log_likelihoods(tiny_model_dir, data_dir,
                                                                                   tmp_path):
    """On the tiny model through lm-eval: p(correct) is the softmax of the choices'
    log-likelihoods (each divided by its choice's length for acc_norm, as lm-eval's doc lists
    the choices), the margin is the correct choice's lead over the best distractor, and its
    sign is lm-eval's own accuracy item by item."""
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    tasks = {"hellaswag": {"limit": 5}, "mmlu_high_school_computer_science": {"limit": 5, "num_fewshot": 0}}
    evaluate.evaluate(model, tok, {"batch_size": 4, "tasks": tasks}, tmp_path, data_dir)
    for task, norms in (("hellaswag", ("acc", "acc_norm")), ("mmlu_high_school_computer_science", ("acc",))):
        table = samples.load_samples(tmp_path, task)
        lines = [json.loads(x) for x in (tmp_path / "lm_eval" / task / "samples.jsonl").read_text().splitlines()]
        assert len(lines) == 5
        for s in lines:
            ll = np.array([r[0] for r in s["filtered_resps"]])
            gold = int(s["target"])
            choices = s["doc"]["choices"] if task == "hellaswag" else ["A", "B", "C", "D"]
            for acc in norms:
                lengths = np.array([len(c) for c in choices])
                score = ll / lengths * lengths.mean() if acc == "acc_norm" else ll
                row = table[table["doc_id"] == s["doc_id"]].set_index("metric")["value"]
                assert row[measures.CONTINUOUS[acc]] == pytest.approx(softmax(score)[gold], rel=1e-9)
                margin = score[gold] - np.max(np.delete(score, gold))
                assert row[measures.MARGINS[acc]] == pytest.approx(margin, rel=1e-9)
                assert (margin > 0) == (float(s[acc]) == 1.0)  # the sign is lm-eval's accuracy


@pytest.mark.parametrize("items", [32, 48])
def test_crossed_interval_covers_at_three_seeds_and_says_two_undercover(items):
    """Synthetic seeds x items data with a known change, at the study's item counts: the crossed
    interval (seed, item and residual variance, Satterthwaite's degrees of freedom) covers it at
    least 93% of the time at three seeds (at most 97% where items vary, as they do), where an
    items-only interval (what one seed gives) falls short; at two seeds it covers about 90% where
    seeds vary (what the book warns of). With a small seed variance and none between items, the
    seed term is kept although its estimate often falls below the residual's (dropping it there
    covered 91% at two seeds)."""
    rng = np.random.default_rng(0)
    truth, reps = 0.1, 1500
    for seeds in (3, 2):
        for seed_sd, item_sd, resid_sd in ((0.02, 0.05, 0.02), (0.05, 0.01, 0.01), (0.0, 0.05, 0.02),
                                           (0.01, 0.0, 0.05)):
            d = (truth + rng.normal(0, seed_sd, (reps, seeds, 1)) + rng.normal(0, item_sd, (reps, 1, items))
                 + rng.normal(0, resid_sd, (reps, seeds, items)))
            mean, se, df = stats.crossed_batch(d)
            half = sps.t.ppf(0.975, df) * se
            cover = np.mean((mean - half <= truth) & (truth <= mean + half))
            case = (seeds, seed_sd, item_sd, resid_sd, cover)
            if seeds == 3:
                assert cover >= 0.93 and (cover <= 0.97 or item_sd == 0), case
                rows = [stats.crossed(list(x)) for x in d[:300]]  # the per-comparison function: the same estimate
                assert np.mean([r["ci_low"] <= truth <= r["ci_high"] for r in rows]) == pytest.approx(
                    np.mean((mean[:300] - half[:300] <= truth) & (truth <= mean[:300] + half[:300])))
            else:
                assert cover >= (0.95 if item_sd == 0 else 0.87), case
                assert cover < 0.93 or seed_sd < 0.02, case  # two seeds undercover where seeds vary
            if seed_sd >= 0.02:  # items alone (one seed's interval) would miss the seeds' spread
                items_only = np.mean([abs(x[0].mean() - truth) <= 1.96 * x[0].std(ddof=1) / np.sqrt(items)
                                      for x in d])
                assert items_only < 0.9


def test_crossed_interval_stays_finite_and_keeps_the_residual_where_seeds_agree():
    """Two seeds whose means agree exactly and items barely above the residual: the estimated
    variance MS_seeds + MS_items - MS_residual was near zero and Satterthwaite's degrees of
    freedom with it, and the t quantile at df ~ 1e-12 made an interval of about +-10^5 (the
    committed study had two such). The interval now rests on the residual's share at least,
    with the seed term's one degree of freedom."""
    rng = np.random.default_rng(1)
    a, e = rng.normal(0, 0.05, 48), rng.normal(0, 0.05, 48)
    a, e = a - a.mean(), e - e.mean()
    a *= np.sqrt((1 + 1e-6) * (e ** 2).sum() / (a ** 2).sum())  # item and residual mean squares equal
    out = stats.crossed([0.01 + a + e, 0.01 + a - e])
    residual_share = np.sqrt(out["resid_var"] / (2 * 48))
    assert out["seed_var"] == 0.0 and out["df"] == pytest.approx(1.0)
    assert out["se"] == pytest.approx(residual_share) and out["ci_high"] - out["ci_low"] < 1.0


def test_a_single_seed_change_is_shown_and_never_called_separated():
    row = pd.Series(dict(mean_diff=-0.2, ci_low=-0.25, ci_high=-0.15, p_adjusted=1e-5, significant=True, seeds=1))
    assert verdicts.decide(row)[0] == verdicts.SINGLE_SEED
    seeded = row.copy()
    seeded["seeds"] = 3
    assert verdicts.decide(seeded)[0] == verdicts.SEPARATED


def test_planner_item_count_reaches_the_power_a_simulation_gives():
    seed_var, item_var, resid_var, change = 0.005 ** 2, 0.05 ** 2, 0.02 ** 2, 0.02
    n = power.items_needed(change, seed_var, item_var, resid_var, seeds=3, pool=10_000)
    assert n is not None and 20 < n < 2000
    assert power.power(change, seed_var, item_var, resid_var, n, 3, reps=4000, seed=1) >= 0.77
    assert power.power(change, seed_var, item_var, resid_var, int(n * 0.6), 3, reps=4000, seed=1) < 0.75
    # a pool too small for it (MMLU-HS-CS has 100 test items): no plan at that many seeds
    assert power.items_needed(change, seed_var, item_var, resid_var, seeds=3, pool=min(n // 2, 100)) is None
    # seed variance caps what items can buy: too few seeds reach no power at any n
    assert power.items_needed(0.02, 0.03 ** 2, item_var, resid_var, seeds=2, pool=100_000) is None


@pytest.mark.parametrize("study", ["cpu-study-2026-11-28", "cpu-study"])
def test_plan_reads_the_committed_study_and_respects_item_pools(capsys, data_dir, study):
    """The planner on the study params/cpu-study.yaml was sized from, and on that study itself
    (with its own learning-rate sweep, as the README's plan command runs it)."""
    from conftest import ROOT
    from ftstudy import cli

    pilot = ["plan", str(ROOT / "params" / f"{study}.yaml"), "--results", str(ROOT / "results" / study)]
    rc = cli.main([*pilot,
                   "--change", "hellaswag=0.05", "--change", "mmlu_high_school_computer_science=0.05",
                   "--max-seeds", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "q2 hellaswag (p_correct_norm)" in out and "s per evaluated item" in out
    mmlu = out.split("mmlu_high_school_computer_science (p_correct)", 1)[1].split("\n\n", 1)[0]
    assert "of 100)" in mmlu or "within the 100 items" in mmlu  # MMLU-HS-CS has 100 test items
    assert " 2 seeds" not in out and " 3 seeds" in out  # plans start at three seeds
    assert cli.main([*pilot, "--change", "hellaswag"]) == 2  # a change without its size


def test_the_plan_is_set_beside_what_each_question_achieved():
    """`against_plan`: per question the main condition's detectable change (q1 its target task,
    q2 the others; never another condition's) or a factor's change of the gap (q4), beside the
    planner's `mde` with the pilot's variances at the items and seeds each comparison had."""
    from ftstudy.book import pages

    main = ("m", "gsm8k", 24)
    vs = dict(comparison="vs base", model="m", train_data="gsm8k", train_size=24, training_randomness="measured")
    detectable = pd.DataFrame([
        {**vs, "task": "gsm8k_nll", "metric": "bits_per_byte", "n": 32, "seeds": 3, "mde": 0.05, "mde_max": 0.06},
        {**vs, "task": "hellaswag", "metric": "p_correct_norm", "n": 48, "seeds": 3, "mde": 0.02, "mde_max": 0.2},
        {**vs, "task": "hellaswag", "metric": "acc_norm", "n": 48, "seeds": 3, "mde": 0.3, "mde_max": 0.3},
        {**vs, "train_size": 12, "task": "gsm8k_nll", "metric": "bits_per_byte", "n": 32, "seeds": 2,
         "mde": 0.9, "mde_max": 0.9},
        dict(comparison="method x train_size", model="m", train_data="gsm8k", task="gsm8k_nll",
             metric="bits_per_byte", **{"from": 24}, to=48, n=32, seeds=2, mde=0.08, mde_max=0.08,
             training_randomness="measured"),
        dict(comparison="method x train_size", model="m", train_data="gsm8k", task="gsm8k_nll",  # not from main
             metric="bits_per_byte", **{"from": 12}, to=48, n=32, seeds=2, mde=0.7, mde_max=0.7,
             training_randomness="measured"),
        dict(comparison="method x model", model=np.nan, train_data="gsm8k", train_size=24, task="hellaswag",
             metric="p_correct_norm", **{"from": "m"}, to="g", n=48, seeds=2, mde=0.09, mde_max=0.09,
             training_randomness="measured")])
    aggregated = pd.DataFrame([dict(comparison="vs base", model="m", train_data="gsm8k", train_size=24, task=t,
                                    metric=mt, target_nll="gsm8k_nll", headline=True)
                               for t, mt in (("gsm8k_nll", "bits_per_byte"), ("hellaswag", "p_correct_norm"))])
    pilot = pd.DataFrame([dict(question="q1", task="gsm8k_nll", metric="bits_per_byte", seed_var=2e-4, item_var=8e-3,
                               resid_var=4e-4),
                          dict(question="q2", task="hellaswag", metric="p_correct_norm", seed_var=0.0, item_var=3e-4,
                               resid_var=6e-5),
                          dict(question="q3", task="hellaswag", metric="acc_norm", seed_var=0.0, item_var=0.2,
                               resid_var=0.0),  # another metric: no plan for p_correct_norm
                          dict(question="q4", task="gsm8k_nll", metric="bits_per_byte", seed_var=8e-4, item_var=3e-3,
                               resid_var=0.0)])
    out = power.against_plan(pilot, detectable, aggregated, main)
    assert out[["question", "task", "metric"]].values.tolist() == [
        ["q1", "gsm8k_nll", "bits_per_byte"], ["q2", "hellaswag", "p_correct_norm"],
        ["q3", "hellaswag", "p_correct_norm"], ["q4", "gsm8k_nll", "bits_per_byte"]]
    assert out["achieved"].tolist() == [0.05, 0.02, 0.09, 0.08]
    assert out["planned"].tolist()[:2] + out["planned"].tolist()[3:] == pytest.approx(
        [power.mde(2e-4, 8e-3, 4e-4, 32, 3), power.mde(0.0, 3e-4, 6e-5, 48, 3), power.mde(8e-4, 3e-3, 0.0, 32, 2)])
    assert np.isnan(out["planned"].iloc[2])
    line = pages.detectable_line(out[out["question"] == "q2"], "results/pilot")
    assert "hellaswag 0.020" in line and "least sensitive method 0.200" in line and "48 items x 3 seeds" in line
    assert f"planned {power.mde(0.0, 3e-4, 6e-5, 48, 3):.3f}" in line and "`results/pilot`" in line
    assert "(with 48 examples)" in pages.detectable_line(out[out["question"] == "q4"], "results/pilot")
    assert "undercovers" in pages.detectable_line(out[out["question"] == "q4"], "results/pilot")  # 2 seeds
    assert "undercovers" not in line and "; no plan" in pages.detectable_line(out[out["question"] == "q3"], "x")
    assert "the median method's smallest change against its reference" in line
    assert "the smallest change of the gap between the two methods" in pages.detectable_line(
        out[out["question"] == "q4"], "x")
    # the math target's verdict metric postdates the pilot's runs: planned from the whole
    # answer's bits/byte the pilot had, and the line says so
    detectable.loc[0, "metric"], aggregated.loc[0, "metric"] = "math_bits_per_byte", "math_bits_per_byte"
    math = power.against_plan(pilot, detectable, aggregated, main)
    q1 = math[math["question"] == "q1"]
    assert q1["metric"].tolist() == ["math_bits_per_byte"] and q1["planned_metric"].tolist() == ["bits_per_byte"]
    assert q1["planned"].tolist() == pytest.approx([power.mde(2e-4, 8e-3, 4e-4, 32, 3)])
    assert "from its bits_per_byte, as that study had no math_bits_per_byte" in pages.detectable_line(q1, "x")
    # where the achieved change is off the plan, the variances behind each say why
    # (this study's own: the main condition's methods for q1/q2, the factor's contrast row for q3/q4)
    measured = aggregated.assign(seeds=3, seed_var=0.0, item_var=[8e-3, 3e-2], resid_var=[4e-4, 6e-5])
    contrasts = pd.DataFrame([dict(factor="method x train_size", task="gsm8k_nll", metric="bits_per_byte", seeds=2,
                                   **{"from": 24}, to=to, seed_var=v, item_var=1e-3, resid_var=1e-4)
                              for to, v in ((48, 5e-4), (12, 0.0))])
    out = power.against_plan(pilot, detectable, measured, main, contrasts=contrasts)
    q4 = out[out["question"] == "q4"]
    assert q4[["to", "seed_var"]].values.tolist() == [[48, 5e-4]]  # its own contrast row, not a median
    hs = out[(out["question"] == "q2") & (out["task"] == "hellaswag")]
    assert hs[["pilot_item_var", "item_var"]].values.tolist() == [[3e-4, 3e-2]]
    assert ("(variances here: seed 0, item 0.03, residual 6e-05; in the plan: seed 0, item 0.0003, "
            "residual 6e-05)") in pages.detectable_line(hs, "x")
    on_plan = hs.assign(achieved=hs["planned"])
    assert "variances here" not in pages.detectable_line(on_plan, "x")

"""The front page's answers: contrasts of one changed factor (differences of changes, each
vs its own reference), and sentences whose every number is a cited table value."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from ftstudy.narrative import answers
from ftstudy.analysis import detectable, stats, tables, verdicts

EV = {"tasks": {"gsm8k_nll": {"limit": 4}}}


def _run(outputs, run_id, method, values, size=16, data="gsm8k", model="m", seed=0, quantised=False):
    """A finished run folder whose gsm8k_nll items (doc ids 0..3) score `values`."""
    folder = outputs / "runs" / run_id / "lm_eval" / "gsm8k_nll"
    folder.mkdir(parents=True)
    folder.joinpath("samples.jsonl").write_text("".join(json.dumps(
        {"doc_id": i, "filter": "none", "metrics": ["bits_per_byte"], "bits_per_byte": v}) + "\n"
        for i, v in enumerate(values)))
    cell = {"method": method, "model_name": model, "model": {"source": {"path": model}, "dtype": "float32"},
            "evaluation": EV, "load": {"quantize_4bit": True} if quantised else {},
            "train_data": None if method.startswith("base") else data,
            "train_size": 0 if method.startswith("base") else size, "seed": None if method.startswith("base") else seed}
    return {"run_id": run_id, "status": "done", "cell": cell}


def test_contrasts_compare_changes_each_against_its_own_reference(tmp_path):
    records = [
        _run(tmp_path, "base", "base", [1.0, 1.0, 1.0, 1.0]),
        _run(tmp_path, "b4", "base_4bit", [1.2, 1.2, 1.2, 1.2], quantised=True),
        _run(tmp_path, "lora", "lora", [0.9, 0.8, 0.9, 0.8]),            # change -0.15
        _run(tmp_path, "qlora", "qlora", [1.0, 1.0, 1.1, 1.1], quantised=True),  # change -0.15 vs its 4-bit base
        _run(tmp_path, "lora48", "lora", [0.7, 0.7, 0.8, 0.8], size=48),   # change -0.25
    ]
    df = tables.contrasts_table(tmp_path, records, {"method": ["lora", "qlora"], "train_size": [16, 48]})
    method = df[df["factor"] == "method"].iloc[0]
    # final scores differ by +0.2 bits/byte (QLoRA starts 0.2 worse), the learning does not
    assert (method["from"], method["to"]) == ("lora", "qlora")
    assert method["mean_diff"] == pytest.approx(0.0) and method["change_from"] == pytest.approx(-0.15)
    size = df[df["factor"] == "train_size"].iloc[0]
    assert (size["from"], size["to"], size["method"]) == (16, 48, "lora")
    assert size["mean_diff"] == pytest.approx(-0.10) and size["n"] == 4
    assert len(df) == 2  # qlora at 16 vs lora at 48 differ in two factors: not a contrast


def _tables(models=("m",)):
    rows = []
    for model in models:
        for method, d, lo, hi, sig in (("full", -0.27, -0.33, -0.21, True), ("lora", -0.11, -0.13, -0.08, True),
                                       ("prompt_tuning", -0.02, -0.05, 0.01, False)):
            for task, shift in (("gsm8k_nll", 0.0), ("alpaca_nll", 0.25)):
                rows.append(dict(comparison="vs base", model=model, method=method, reference="base",
                                 train_data="gsm8k", train_size=16, target_task="gsm8k", target_nll="gsm8k_nll",
                                 replayed_nll=np.nan, task=task, metric="bits_per_byte", headline=True, seeds=3,
                                 n=32, mean_diff=d + shift, ci_low=lo + shift, ci_high=hi + shift, p_value=0.001,
                                 test="sign-flip", p_adjusted=0.004 if sig else 0.3,
                                 significant=sig and task == "gsm8k_nll"))
    contrasts = pd.DataFrame([dict(factor="method", method=np.nan, model="m", train_data="gsm8k", train_size=16,
                                   **{"from": "full", "to": "lora"}, task="gsm8k_nll", metric="bits_per_byte",
                                   seeds=3, n=32, run_id_from="a,b,c", run_id_to="d,e,f", change_from=-0.27,
                                   change_to=-0.11, mean_diff=0.16, ci_low=0.1, ci_high=0.22, p_value=0.001,
                                   test="sign-flip", p_adjusted=0.002, significant=True),
                              dict(factor="train_size", method="full", model="m", train_data="gsm8k", train_size=np.nan,
                                   **{"from": "16", "to": "48"}, task="gsm8k_nll", metric="bits_per_byte", seeds=1,
                                   n=32, run_id_from="a", run_id_to="g", change_from=-0.27, change_to=-0.4,
                                   mean_diff=-0.13, ci_low=-0.2, ci_high=-0.07, p_value=0.001, test="sign-flip",
                                   p_adjusted=0.001, significant=True)])
    return {"aggregated": pd.DataFrame(rows), "contrasts": contrasts}


def assert_every_number_is_cited(text: str, cit: answers.Citations, tables_: dict) -> None:
    """Each number a reader sees is one of the citations, and each citation is its table
    cell formatted: no number in the answers was typed by hand."""
    cited = {c["text"] for c in cit.cited}
    for n in answers.numbers_in(text):
        assert n in cited, f"{n} in the answers is not a table value"
    for c in cit.cited:
        value = tables_[c["table"]].loc[c["row"], c["column"]]
        if "verdict_id" in c:  # a verdict, in one of its phrasings
            assert c["text"].lower() in verdicts.PHRASES[value], c
            continue
        expected = (str(int(value)) if c["fmt"] == "d" else format(float(value), c["fmt"]) if c["fmt"]
                    else str(value))
        assert c["text"] == expected, c


def assert_no_typed_number(raw: str) -> None:
    """The sentences as generated, before the cited numbers are put in: no number at all."""
    left = answers.numbers_in(re.sub("\x00\\d+\x00", "", raw))
    assert not left, f"typed into the answers: {left}"


def test_answers_cite_every_number_and_say_what_they_cannot_answer():
    t = _tables()
    ans, cit = answers.build(t)
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    assert "-0.270 [-0.330, -0.210]" in text and "full learned most: against the runner-up lora the verdict on the gap is separated" in text
    assert "(3 examples" not in text and "16" in answers.numbers_in(text)
    # a method that learned from another reference (QLoRA from its 4-bit base) is ranked apart
    t["aggregated"].loc[t["aggregated"]["method"] == "full", "reference"] = "base_4bit"
    lead = answers.markdown(*answers.build(t))
    assert ("Of the methods measured against the base model, lora has the largest point estimate on gsm8k_nll; "
            "no paired test of it against prompt_tuning was recorded. full changed more, but against base_4bit, "
            "the quantised base it trains on") in lead
    assert "one base model (m)" in text and "stays open" in text  # Q3 cannot be answered
    assert "16 → 48" in text  # Q4 from the contrasts table
    # a number typed into a sentence is caught, even one equal to a cited value
    with pytest.raises(AssertionError, match="not a table value"):
        assert_every_number_is_cited(text + " It learned 0.5 more.", cit, cit.tables)
    raw = "\n".join(line for lines in ans.values() for line in lines)
    with pytest.raises(AssertionError, match="typed"):
        assert_no_typed_number(raw + " full -0.270 better.")
    assert_no_typed_number(raw)


def test_a_cited_number_links_to_the_runs_behind_it():
    ans, cit = answers.build(_tables())
    linked = answers.markdown(ans, cit, link=lambda c: f"[{c['text']}]({','.join(c['run_ids'])})")
    assert "[0.160](a,b,c,d,e,f)" in linked.replace("+0.160", "0.160")


def test_an_interaction_says_whether_a_factor_changes_the_gap_between_methods(tmp_path):
    records = [
        _run(tmp_path, "base", "base", [1.0, 1.0, 1.0, 1.0]),
        _run(tmp_path, "full16", "full", [0.8, 0.8, 0.8, 0.8]),             # -0.2
        _run(tmp_path, "lora16", "lora", [0.9, 0.9, 0.9, 0.9]),             # -0.1: gap +0.1
        _run(tmp_path, "full48", "full", [0.6, 0.6, 0.6, 0.6], size=48),    # -0.4
        _run(tmp_path, "lora48", "lora", [0.7, 0.8, 0.7, 0.8], size=48),    # -0.25: gap +0.15
    ]
    df = tables.contrasts_table(tmp_path, records, {"method": ["full", "lora"], "train_size": [16, 48]})
    row = df[df["factor"] == "method x train_size"].iloc[0]
    assert (row["method"], row["from"], row["to"]) == ("lora - full", 16, 48)
    assert row["change_from"] == pytest.approx(0.1) and row["change_to"] == pytest.approx(0.15)
    assert row["mean_diff"] == pytest.approx(0.05)


def _with_reversal(separated_at_48: bool):
    """`_tables()` plus an accuracy task no item of which changed for two methods, and LoRA
    overtaking full fine-tuning at 48 examples (separated there or not)."""
    t = _tables()
    acc = [dict(t["aggregated"].iloc[0], task="hellaswag", metric="acc", method=m, mean_diff=d, ci_low=lo,
                ci_high=hi, p_value=p, p_adjusted=p, significant=False)
           for m, d, lo, hi, p in (("full", 0.0, np.nan, np.nan, 1.0), ("lora", 0.0, np.nan, np.nan, 1.0),
                                   ("prompt_tuning", 0.08, -0.17, 0.33, 1.0))]
    t["aggregated"] = pd.concat([t["aggregated"], pd.DataFrame(acc)], ignore_index=True)
    base = t["contrasts"].iloc[0].to_dict()
    at48 = dict(base, train_size=48, change_from=-0.40, change_to=-0.45, mean_diff=-0.05, ci_low=-0.08,
                ci_high=-0.02 if separated_at_48 else 0.01, p_adjusted=0.01 if separated_at_48 else 0.2,
                significant=separated_at_48)
    gap = dict(base, factor="method x train_size", method="lora - full", train_size=np.nan,
               **{"from": "16", "to": "48"}, change_from=0.16, change_to=-0.05, mean_diff=-0.21, ci_low=-0.3,
               ci_high=-0.12, p_adjusted=0.001, significant=True)
    t["contrasts"] = pd.concat([t["contrasts"], pd.DataFrame([at48, gap])], ignore_index=True)
    return t


def test_answers_say_what_each_verdict_means_and_fold_what_did_not_move():
    """An interval that excludes zero but fails Holm is said so (not "inside the noise"); an
    accuracy no item of which moved is one clause, not a row of "+0.00" per method; a
    separated change of an effect says better or worse; two methods "change places" only
    when each side's own test separates them in opposite directions."""
    ans, cit = answers.build(_with_reversal(separated_at_48=True))
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    assert "lora +0.140 [+0.120, +0.170] (not significant after Holm's correction)" in text
    assert "full -0.020 [-0.080, +0.040] (inside the noise)" in text
    assert "no item changed for full, lora" in text and "+0.00 (no interval)" not in text
    assert "full, training examples 16 → 48" in text and "-0.130 [-0.200, -0.070] (single seed; better)" in text
    assert "change places" in text
    ans, cit = answers.build(_with_reversal(separated_at_48=False))
    assert "change places" not in answers.markdown(ans, cit)


def _learned(t: dict, size, gains: dict) -> dict:
    """`t` plus vs-base target rows at training size `size`: per method its change on
    gsm8k_nll, separated from zero or inside the noise (`gains`: method -> (change, separated))."""
    rows = [dict(t["aggregated"].iloc[0], method=m, train_size=size, mean_diff=d, ci_low=d - 0.03,
                 ci_high=d + 0.03 if sep else 0.05, p_adjusted=0.001 if sep else 0.6, significant=sep)
            for m, (d, sep) in gains.items()]
    return dict(t, aggregated=pd.concat([t["aggregated"], pd.DataFrame(rows)], ignore_index=True))


def test_a_method_that_did_not_learn_its_target_gets_no_verdict():
    """LoRA overtakes full fine-tuning at 48 examples only because full did not train there
    (its loss diverged): the answer says it cannot be told, and never "change places"."""
    t = _learned(_with_reversal(separated_at_48=True), 48, {"full": (-0.01, False), "lora": (-0.45, True)})
    t["runs"] = pd.DataFrame([dict(run_id="g", model="m", method="full", train_data="gsm8k", train_size=48,
                                   seed=0, status="done", loss_first=1.58, loss_max=8.98)])
    ans, cit = answers.build(t)
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    assert_no_typed_number("\n".join(line for lines in ans.values() for line in lines))
    lead = cit.render(ans["q4"][0])
    assert lead.startswith("For lora and full on gsm8k_nll (seeds: 3), cannot be told")
    assert "full showed no detectable gain on its target gsm8k_nll with 48 examples" in lead
    assert "its training loss rose from 1.58 at the first step to 8.98" in text
    assert "change places" not in text
    # both trained: the reversal stands
    ans, cit = answers.build(_learned(_with_reversal(separated_at_48=True), 48,
                                      {"full": (-0.40, True), "lora": (-0.45, True)}))
    lead = cit.render(ans["q4"][0])
    assert lead.startswith("For lora and full on gsm8k_nll (seeds: 3), yes:") and "change places" in lead


def test_a_single_seed_change_is_shown_and_never_called_separated():
    """Full fine-tuning's effect moves by -0.13 with 48 examples on one seed: its items reject
    no change, but with one seed training randomness is unmeasured, so it is not a finding;
    the same on three seeds (their spread in the interval) is."""
    t = _tables()
    ans, cit = answers.build(t)
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    assert "-0.130 [-0.200, -0.070] (single seed; better)" in text and "(separated; better)" not in text
    t["contrasts"].loc[1, "seeds"] = 3
    assert "-0.130 [-0.200, -0.070] (separated; better)" in answers.markdown(*answers.build(t))


def test_contrasts_put_the_shared_seeds_spread_in_their_interval(tmp_path):
    """Three seeds of full and LoRA at 16 examples, one seed of everything else: full vs LoRA
    on their three shared seeds is one crossed interval whose width carries how the gap varies
    by seed (0.1, 0.14, 0.12: every item alike within a seed); a comparison on one shared seed
    (LoRA vs IA3, the change of the gap at 48 examples) has an items-only interval and is
    never called separated."""
    records = [_run(tmp_path, "base", "base", [1.0] * 4), _run(tmp_path, "ia3", "ia3", [0.85, 0.86, 0.85, 0.86])]
    for seed, lora in enumerate((0.9, 0.94, 0.92)):
        records += [_run(tmp_path, f"full16-{seed}", "full", [0.8] * 4, seed=seed),
                    _run(tmp_path, f"lora16-{seed}", "lora", [lora] * 4, seed=seed)]
    records += [_run(tmp_path, "full48", "full", [0.6] * 4, size=48),
                _run(tmp_path, "lora48", "lora", [0.75, 0.76, 0.75, 0.76], size=48)]
    df = tables.contrasts_table(tmp_path, records, {"method": ["full", "lora", "ia3"], "train_size": [16, 48]})
    method = df[(df["factor"] == "method") & (df["train_size"] == 16)].set_index(["from", "to"])
    pair = method.loc[("full", "lora")]
    gaps = np.array([0.1, 0.14, 0.12])
    assert pair["seeds"] == 3 and pair["mean_diff"] == pytest.approx(gaps.mean())
    assert pair["seed_var"] == pytest.approx(gaps.var(ddof=1))  # items alike: all spread is the seeds'
    half = stats_t(2) * gaps.std(ddof=1) / np.sqrt(3)
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx((gaps.mean() - half, gaps.mean() + half))
    t = verdicts.annotate({"aggregated": pd.DataFrame(), "contrasts": df})["contrasts"]
    one = t[(t["factor"] == "method x train_size") | ((t["factor"] == "method") & (t["to"] == "ia3"))]
    assert len(one) == 3 and (one["seeds"] == 1).all()  # full and lora vs ia3, and the gap's change at 48 and verdicts.SEPARATED not in set(one["verdict"])


def test_no_method_lost_claims_the_least_sensitive_methods_detectable_change():
    """Q2's "no method lost" is as strong as its noisiest method: the detectable change it
    states comes from the widest interval (full's, 0.12 wide), not the median."""
    ans, cit = answers.build(_tables())
    lead = cit.render(ans["q2"][0])
    widest = detectable.MDE_FACTOR * 0.12 / (2 * 1.96)
    assert f"a loss of about {widest:.3f} bits/byte would likely have been detected for every method" in lead


def stats_t(dof: int) -> float:
    from scipy import stats as sps
    return float(sps.t.ppf(0.975, dof))


def test_a_run_on_the_4bit_base_is_also_compared_with_the_unquantised_base(tmp_path):
    """QLoRA learns as much as LoRA against its own 4-bit reference, but the quantisation cost
    0.2 bits/byte: the tables carry its net change against the unquantised base, and the
    answer says both."""
    records = [
        _run(tmp_path, "base", "base", [1.0, 1.1, 1.0, 1.1]),
        _run(tmp_path, "b4", "base_4bit", [1.2, 1.3, 1.2, 1.3], quantised=True),
        _run(tmp_path, "lora", "lora", [0.9, 1.0, 0.9, 1.0]),
        _run(tmp_path, "qlora", "qlora", [1.1, 1.2, 1.1, 1.2], quantised=True),
    ]
    for r in records:
        r["cell"].update(target_nll="gsm8k_nll", target_task="gsm8k")
    _, aggregated, _ = tables.paired_tables(tmp_path, records)
    net = aggregated[aggregated["comparison"] == "vs unquantised base"].set_index("method")["mean_diff"]
    assert net.to_dict() == pytest.approx({"base_4bit": 0.2, "qlora": 0.1})
    ans, cit = answers.build({"aggregated": aggregated, "contrasts": pd.DataFrame()})
    lead = cit.render(ans["q1"][0])
    assert_every_number_is_cited(answers.markdown(ans, cit), cit, cit.tables)
    assert "qlora is measured against the quantised base it trains on" in lead
    assert "changed gsm8k_nll by +0.200" in lead and "net change is +0.100" in lead


def test_an_accuracy_no_item_of_which_changed_counts_as_least_sensitive():
    """On 12 HellaSwag items one method moved a few items (an interval) and the others none
    (no interval): the detectable change "no method lost" can claim is the unmeasured
    methods' conservative bound, not the one measured method's narrower one."""
    row = dict(comparison="vs base", headline=True, model="m", train_data="gsm8k", train_size=16,
               task="hellaswag", metric="acc_norm", n=12, seeds=1)
    aggregated = pd.DataFrame([{**row, "method": "prompt_tuning", "mean_diff": 0.08, "ci_low": -0.17, "ci_high": 0.33},
                               {**row, "method": "lora", "mean_diff": 0.0, "ci_low": np.nan, "ci_high": np.nan},
                               {**row, "method": "full", "mean_diff": 0.0, "ci_low": np.nan, "ci_high": np.nan}])
    d = detectable.detectable(aggregated).iloc[0]
    assert d["mde_max"] == pytest.approx(stats.min_detectable_difference(12))
    assert d["mde"] == pytest.approx(stats.min_detectable_difference(12))  # the median of three


def test_a_few_changed_items_do_not_make_an_accuracy_look_sensitive():
    """Every method moved one of 12 items: their bootstrap intervals are narrow, but no paired
    test on 12 items detects a change below 6/12, and that is what the table must say."""
    row = dict(comparison="vs base", headline=True, model="m", train_data="gsm8k", train_size=16,
               task="hellaswag", metric="acc_norm", n=12, seeds=1, mean_diff=-1 / 12, ci_low=-0.25, ci_high=0.0)
    d = detectable.detectable(pd.DataFrame([{**row, "method": m} for m in ("lora", "full")])).iloc[0]
    assert d["mde"] == pytest.approx(0.5) and d["mde_max"] == pytest.approx(0.5)


def test_an_accuracy_on_too_few_items_says_no_change_could_be_detected():
    """On 3 GSM8K items no paired test can reject "no change": the answers say so rather
    than "changes smaller than about 2.00 accuracy are unlikely to be detected"."""
    t = _tables()
    acc = t["aggregated"].query("task == 'gsm8k_nll'").assign(task="gsm8k", metric="exact_match", n=3, mean_diff=0.0,
                                                              ci_low=np.nan, ci_high=np.nan, significant=False)
    t["aggregated"] = pd.concat([t["aggregated"], acc], ignore_index=True)
    ans, cit = answers.build(t)
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    assert "**gsm8k** (accuracy, 3 items): no item changed for full, lora, prompt_tuning; with 3 items no change " \
           "could be detected against the reference." in text
    assert "on gsm8k no change could be detected with 3 items" in cit.render(ans["q2"][0])
    assert "2.00" not in text and "1.14" not in text
    # with 6 items all six changing one way is significant (p = 1/32): a change can be detected
    t["aggregated"].loc[t["aggregated"]["task"] == "gsm8k", "n"] = 6
    ans, cit = answers.build(t)
    text = answers.markdown(ans, cit)
    assert "no change could be detected" not in text
    assert f"changes smaller than about {stats.min_detectable_difference(6):.2f} accuracy" in text


def test_among_equal_conditions_the_main_one_is_where_the_factors_start():
    """The demo grid trains every method on GSM8K and on Alpaca, one seed each: the answers
    rest on GSM8K, the condition its training-data contrast starts from, not on whichever
    sorts first (Alpaca), which left that contrast unread."""
    t = _tables()
    alpaca = t["aggregated"].assign(train_data="alpaca", target_nll="alpaca_nll", seeds=1)
    t["aggregated"] = pd.concat([t["aggregated"].assign(seeds=1), alpaca], ignore_index=True)
    row = t["contrasts"].iloc[1].to_dict()
    t["contrasts"] = pd.DataFrame([{**row, "factor": "train_data", "train_data": np.nan, "train_size": 16.0,
                                    "from": "gsm8k", "to": "alpaca"}])
    assert answers.main_condition(t["aggregated"], t["contrasts"]) == ("m", "gsm8k", 16)
    assert answers.main_condition(t["aggregated"]) == ("m", "alpaca", 16)  # without contrasts: first in order
    # three training sets: every pair is contrasted (alpaca -> replay starts at alpaca too), but
    # gsm8k starts the most factors (training data and size) and the most pairs
    replay = alpaca.assign(train_data="gsm8k+replay")
    t["aggregated"] = pd.concat([t["aggregated"], replay], ignore_index=True)
    pairs = [("gsm8k", "alpaca"), ("gsm8k", "gsm8k+replay"), ("alpaca", "gsm8k+replay")]
    t["contrasts"] = pd.DataFrame([{**row, "factor": "train_data", "train_data": np.nan, "train_size": 16.0,
                                    "from": a, "to": b} for a, b in pairs]
                                  + [{**row, "factor": "train_size", "train_data": "alpaca", "train_size": np.nan,
                                      "from": "16", "to": "48"},
                                     {**row, "factor": "train_size", "train_data": "gsm8k", "train_size": np.nan,
                                      "from": "16", "to": "48"}])
    assert answers.main_condition(t["aggregated"], t["contrasts"]) == ("m", "gsm8k", 16)


def test_with_several_seeds_the_sign_tests_resolution_is_per_seed():
    """Three seeds per item: a mean change of 6 items by one seed each (6/36) is already the
    smallest a paired test can call significant, so the floor is 6/(12*3), not 6/12."""
    row = dict(comparison="vs base", headline=True, model="m", train_data="gsm8k", train_size=16,
               task="hellaswag", metric="acc_norm", n=12, seeds=3, mean_diff=-1 / 36, ci_low=-0.08, ci_high=0.0)
    d = detectable.detectable(pd.DataFrame([{**row, "method": "lora"}])).iloc[0]
    assert d["mde"] == pytest.approx(6 / 36)


def _split_solution(t: dict) -> dict:
    """`_tables` as runs scored with the split of GSM8K solutions (`ftstudy.compute.nll`): the verdict on
    the working; the whole solution, and its nats in all and in the format bytes, beside it."""
    agg = t["aggregated"]
    solution = agg[agg["task"] == "gsm8k_nll"]
    whole = solution.assign(headline=False)
    working = solution.assign(metric="math_bits_per_byte", mean_diff=solution["mean_diff"] / 2,
                              ci_low=solution["ci_low"] / 2, ci_high=solution["ci_high"] / 2)
    # nats: full -20 [-25, -15], lora -8 [-10, -6], prompt tuning -1 [-3, +1]; in the format -12, -2, -0.5
    nats = solution.assign(metric="nll", headline=False, mean_diff=[-20.0, -8.0, -1.0],
                           ci_low=[-25.0, -10.0, -3.0], ci_high=[-15.0, -6.0, 1.0])
    fmt = solution.assign(metric="format_nll", headline=False, mean_diff=[-12.0, -2.0, -0.5],
                          ci_low=[-15.0, -3.0, -1.0], ci_high=[-9.0, -1.0, 0.0])
    rows = pd.concat([agg[agg["task"] != "gsm8k_nll"], working, whole, nats, fmt], ignore_index=True)
    return {**t, "aggregated": tables.format_share(rows)}


def test_the_math_target_rests_on_the_working_and_gives_the_formats_share():
    """Where runs split GSM8K solutions, the verdict is on the working alone, the whole solution
    is beside it, and the format's share of each change is given where the change is beyond
    its interval (full 12 of 20 nats, LoRA 2 of 8; prompt tuning's change includes zero); runs
    scored before the split say their verdict counts the format too."""
    t = _split_solution(_tables())
    agg = t["aggregated"]
    assert agg.loc[agg["metric"] == "format_nll", "format_share"].tolist() == pytest.approx([0.6, 0.25, 0.5])
    ans, cit = answers.build(t)
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    line = next(x for x in text.splitlines() if x.startswith("- **gsm8k_nll**"))
    assert "bits/byte of working" in line and "full -0.135 [-0.165, -0.105] (separated" in line
    assert "the whole solution beside it (bits_per_byte, no verdict drawn): " in line and "-0.270" in line
    assert "full 60%, lora 25%" in line and "prompt_tuning 50%" not in line
    old = answers.markdown(*answers.build(_tables()))
    assert "scored before the solutions were split" in old and "scored before" not in text


def test_the_data_size_answer_says_which_sizes_compare_at_equal_steps_and_which_at_equal_epochs():
    """Q4's lead names each size's recorded steps beside the main condition's: 8 examples in
    4 steps (repeated: equal steps) and 48 in 12 (equal epochs), every number cited."""
    t = _with_reversal(separated_at_48=True)
    rows = [dict(run_id=f"{m}{n}", model="m", method=m, train_data="gsm8k", train_size=n, seed=0, status="done",
                 control=False, steps=s) for m in ("full", "lora") for n, s in ((16, 4), (8, 4), (48, 12))]
    t["runs"] = pd.DataFrame(rows + [dict(run_id="b", model="m", method="base", train_data=None, train_size=0,
                                          seed=None, status="done", control=False, steps=None)])
    ans, cit = answers.build(t)
    lead = cit.render(ans["q4"][0])
    assert ("Sizes compared, batch and learning rate fixed: 8 examples in 4 steps: equal steps, each example seen "
            "more often, so only the data changes; 16 examples in 4 steps (the main condition); 48 examples in 12 "
            "steps: equal epochs, so the steps change with the data.") in lead
    assert_every_number_is_cited(answers.markdown(ans, cit), cit, cit.tables)
    t["runs"].loc[t["runs"]["run_id"] == "lora48", "steps"] = 6  # two step counts at one size: said, not typed
    ans, cit = answers.build(t)
    assert "The runs of one size differ in their steps" in cit.render(ans["q4"][0])


def test_the_base_model_answer_says_where_a_rate_sits_at_its_sweeps_edge():
    """Full fine-tuning's rate on the second model is the smallest its sweep tried (after its
    extensions): the third question's lead says so, citing the rate, for that model only; a
    bracketed rate (LoRA) and the main model's rates are not mentioned."""
    trial = dict(train_data="gsm8k", train_size=24, seed=0, status="done", default_rate=np.nan, validation_bpb=1.0,
                 wall_s=1.0)
    tuning = pd.DataFrame([{**trial, "model": "g", "method": "full", "learning_rate": r, "selected": r == 1.667e-05}
                           for r in (1.667e-05, 5e-05, 1.5e-4)]
                          + [{**trial, "model": "g", "method": "lora", "learning_rate": r, "selected": r == 1.8e-3}
                             for r in (6e-4, 1.8e-3, 5.4e-3)]
                          + [{**trial, "model": "m", "method": "lora", "learning_rate": r, "selected": r == 5.4e-3}
                             for r in (6e-4, 1.8e-3, 5.4e-3)])
    c = answers.Citations({"tuning": tuning})
    text = c.render(answers._rate_edges(c, "g"))
    assert text == (" full's rate on g, 1.67e-05, is the smallest its sweep tried (extensions included), so its best "
                    "rate there may lie below it.")
    assert_no_typed_number(answers._rate_edges(c, "g"))
    assert c.render(answers._rate_edges(c, "m")).startswith(" lora's rate on m, 0.0054, is the largest")

"""The committed learning-rate sweep (results/cpu-sweep) rebuilds its report with no
training or evaluation; the numbers its sentences state are the tables' numbers, and each
run's fingerprint either matches today's code and data or is flagged stale."""
import re
import shutil

import pandas as pd

import pytest

from conftest import ROOT
from ftstudy.planning import grid
from ftstudy.config import params
from ftstudy.analysis import tables
from ftstudy.book import report

pytestmark = pytest.mark.slow  # papermill grids, browsers, torchrun, Slurm or report rebuilds

RESULTS = ROOT / "results" / "cpu-sweep"


def test_committed_sweep_rebuilds_its_report(tmp_path, data_dir):
    import json

    p = params.load(ROOT / "params" / "cpu-sweep.yaml", for_compute=False)
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)  # the report rewrites the tables: never in the checkout
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    report.build(p, book=False, book_dir=book, results_dir=results)
    cells = grid.expand(p, results)
    assert len(cells) == 26 and not grid.plan(p, results)[1]  # every study run's trials finished
    trials = pd.read_csv(results / "tuning.csv")
    chosen = trials[trials["selected"]].set_index("method")["learning_rate"]
    nb = json.loads((book / "generated" / "analysis.ipynb").read_text())
    text = "".join("".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"]
                   for o in c.get("outputs", []))
    stated = dict(re.findall(r"(\w+) ([0-9.e-]+) \((?:configured [0-9.e-]+|its default)\)", text))
    assert set(stated) == set(p.methods)
    for method, rate in stated.items():
        assert float(rate) == float(f"{chosen[method]:.3g}"), method  # the sentence's rate is the table's
    prov = (book / "generated" / "provenance.md").read_text()
    assert prov.count("Fingerprint: matches today's code") + prov.count("**Stale**") == len(cells)
    for table in ("results", "paired", "tuning"):  # rebuilt from the committed records: the same numbers
        pd.testing.assert_frame_equal(pd.read_csv(results / f"{table}.csv"), pd.read_csv(RESULTS / f"{table}.csv"))


STUDY = ROOT / "results" / "cpu-study"


def test_committed_study_answers_are_its_tables_numbers(tmp_path, data_dir, monkeypatch):
    """The CPU study's book from its committed records: the front page leads with the four
    answers, each beside the change it could detect (as achieved and as planned from the study
    it was sized from); every number in the answers is a value of the rebuilt tables, the
    README shows those same answers, the tables match the committed ones, and each run's
    fingerprint matches today's code and data or is flagged stale (one run's recorded
    fingerprint is edited here, as if its packages had changed since: the book must flag it,
    and name peft for it alone). Read as on a CPU without native bf16, where `dtype: auto` is
    not the bf16 the runs trained in: the book says so, without calling their code or data changed."""
    import json

    from test_answers import assert_every_number_is_cited, assert_no_typed_number

    from ftstudy.narrative import answers
    from ftstudy.compute import precision

    monkeypatch.setattr(precision, "native_bf16", lambda: False)

    p = params.load(ROOT / "params" / "cpu-study.yaml", for_compute=False)
    results = tmp_path / "results"
    shutil.copytree(STUDY, results)
    edited = sorted(f.parent.name for f in (results / "runs").glob("*/fingerprint.json"))[0]
    fp = results / "runs" / edited / "fingerprint.json"
    record = json.loads(fp.read_text())
    record["train_packages"]["peft"] = "0.0-older"  # not an evaluation part: its scores still compare
    fp.write_text(json.dumps(record))
    older = sorted(f.parent.name for f in (results / "runs").glob("*/fingerprint.json"))[1]
    fp_older = results / "runs" / older / "fingerprint.json"
    record = json.loads(fp_older.read_text())
    del record["compute"]  # recorded before precision was part of a fingerprint: stale, not "another precision"
    fp_older.write_text(json.dumps(record))
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    report.build(p, book=False, book_dir=book, results_dir=results)
    ans, cit = answers.build(tables.Tables.read(results).as_dict())
    text = answers.markdown(ans, cit)
    assert_every_number_is_cited(text, cit, cit.tables)
    assert_no_typed_number("\n".join(line for lines in ans.values() for line in lines))
    for c in cit.cited:  # and those tables are the committed ones
        if c["fmt"] not in ("", "d"):
            committed = pd.read_csv(STUDY / f"{c['table']}.csv").loc[c["row"], c["column"]]
            assert format(float(committed), c["fmt"]) == c["text"], c
    # the committed answers are what today's code says from the committed records
    assert (STUDY / "answers.md").read_text().strip() == text.strip()
    done = sum(json.loads(f.read_text())["status"] == "done" for f in (STUDY / "runs").glob("*/status.json"))
    readme = (ROOT / "README.md").read_text()
    block = readme.split(f"<!-- answers:cpu-study from {done} runs -->", 1)[1].split("<!-- /answers:cpu-study -->", 1)[0]
    assert answers.markdown(ans, cit, brief=True) in block and "results/cpu-study/headline.png" in block
    assert "(results/cpu-study/answers.md)" in block
    assert not any("stays open" in line or "does not vary" in line for q in ans.values() for line in q)
    front = (book / "generated" / "front.md").read_text()
    assert "{ref}`" in front and "figures/headline.png" in front
    # it leads with the four answers, each with the change it could detect, planned and achieved
    headings = [line for line in front.splitlines() if line.startswith("## ")]
    assert headings[:5] == [f"## {answers.QUESTIONS[q]}" for q in ("q1", "q2", "q3", "q4")] + \
        ["## How these answers are made"]
    planned = pd.read_csv(results / "planned.csv")
    assert set(planned["question"]) == {"q1", "q2", "q3", "q4"}
    assert planned["achieved"].notna().all() and planned["planned"].notna().all()
    for q in ("q1", "q2", "q3", "q4"):
        section = front.split(f"## {answers.QUESTIONS[q]}", 1)[1].split("\n## ", 1)[0]
        assert "**Could detect**" in section and "; planned " in section, q
    pd.testing.assert_frame_equal(planned, pd.read_csv(STUDY / "planned.csv"))
    lead_q4 = cit.render(ans["q4"][0])
    assert "equal steps" in lead_q4 and "equal epochs" in lead_q4
    # every run's interval holds training randomness: three seeds in the main condition and in each
    # factor's change of the gap between two methods (the planner's minimum)
    main = answers.main_condition(cit.tables["aggregated"], cit.tables.get("contrasts"))
    agg = cit.tables["aggregated"]
    vs = agg[(agg["comparison"] == "vs base") & (agg["model"] == main.model) & (agg["train_data"] == main.train_data)
             & (agg["train_size"] == main.train_size)]
    assert vs["method"].nunique() == 6 and (vs["seeds"] >= 3).all()
    k = cit.tables["contrasts"]
    assert (k[k["factor"].isin(["method x model", "method x train_size"])]["seeds"] >= 3).all()
    cells = grid.expand(p, results)
    assert not grid.plan(p, results)[1]  # every sweep chose a rate: no study run waits
    trials = pd.read_csv(STUDY / "tuning.csv")  # the runs and the trials, counted alike on every page
    assert f"{len(cells)} of {len(cells)} runs done, {len(trials)} of them learning-rate trials (0 failed)" in front
    assert f"{len(cells)} cells ({len(trials)} learning-rate trials)" in " ".join(readme.split())
    assert (STUDY / "README.md").read_text().startswith(f"# Results of `params/cpu-study.yaml`\n\n{len(cells)} runs")
    prov = (book / "generated" / "provenance.md").read_text()
    assert prov.count("Fingerprint: matches today's code") + prov.count("**Stale**") == len(cells)
    assert ("runs are stale" in front) == ("**Stale**" in prov)
    section = prov.split(f"(run-{edited})=", 1)[1].split("(run-", 1)[0]
    assert "**Stale**" in section and "peft" in section and edited in front.split("runs are stale", 1)[1]
    stale = prov.count("**Stale**")
    assert f"**{stale} of {len(cells)} runs are stale**" in front and older in front.split("runs are stale", 1)[1]
    assert sum("peft" in s.split("\n", 1)[0] for s in prov.split("**Stale**")[1:]) == 1  # the edited run alone
    assert prov.count("compute (dtype)") == 1 and "compute (dtype)" in prov.split(f"(run-{older})=", 1)[1]
    assert "runs ran in another precision than `dtype: auto` means on this machine (float32)" in front
    # the front page says where the learning rates came from: this study's own sweep
    assert "Learning rates: chosen by this study's own sweep" in front and "every trial trained with seed 0" in front
    for table in ("results", "aggregated", "contrasts", "detectable", "verdicts", "tuning"):  # rebuilt: the same
        pd.testing.assert_frame_equal(pd.read_csv(results / f"{table}.csv"), pd.read_csv(STUDY / f"{table}.csv"))

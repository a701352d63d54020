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

from ftstudy import data, evaluate, methods, stats, train

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
        a, b = stats.item_logliks(run_a, task), stats.item_logliks(run_b, task)
        assert len(a) > 0 and a.index.equals(b.index), task
        gaps.append(float((a - b).abs().max()))
    return max(gaps)


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
    train.train(tuned, tok, examples, spec, tmp_path / "train", seed=0)
    # The same trained weights, in fp32, unmerged: scored here with a plain forward pass.
    pairs = data.heldout_pairs("alpaca_nll", data_dir)
    reference = copy.deepcopy(tuned)
    for module in reference.modules():
        if hasattr(module, "compute_dtype"):
            module.compute_dtype = torch.float32
    for p in reference.parameters():
        if p.is_floating_point():
            p.data = p.data.float()
    reference.eval()
    evaluate.evaluate(tuned, tok, {"batch_size": 4, "tasks": {"alpaca_nll": {"limit": 6}}},
                      tmp_path / "kit", data_dir)
    kit = stats.item_logliks(tmp_path / "kit", "alpaca_nll")
    for (doc_id, _), ll in kit.items():
        prompt, answer = pairs[doc_id]
        expected = _answer_loglik(reference, tok, prompt, answer)
        assert abs(ll - expected) <= 1e-4, (method, doc_id, ll, expected)


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

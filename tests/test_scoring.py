"""Per-token scoring equals lm-eval's own, and a GSM8K solution splits into working and format."""
import math

import pytest

from ftstudy.compute import data, evaluate, models, nll
from ftstudy.analysis import stats
from ftstudy.compute.scoring import TokenScoringHFLM
from ftstudy.record import samples


def _requests(data_dir, n=5):
    from lm_eval.api.instance import Instance

    pairs = data.heldout_pairs("gsm8k_nll", data_dir)[:n]
    # a trailing space in one context: lm-eval moves it onto the continuation
    args = [(p + ("\nAnswer: " if k == 1 else "\n"), a) for k, (p, a) in enumerate(pairs)]
    return [Instance("loglikelihood", {}, a, k, ("ftstudy_gsm8k_nll", k, 1)) for k, a in enumerate(args)]


@pytest.mark.parametrize("case", ["plain", "truncated", "prompt tuning"])
def test_token_scoring_equals_stock_lm_eval(case, tiny_model_dir, data_dir):
    """Summed log-likelihood and is_greedy as stock lm-eval's HFLM gives them (1e-4 nats, fp32),
    with left truncation and prompt tuning's virtual tokens; the pieces cover the continuation
    exactly and sum to it."""
    from lm_eval.models.huggingface import HFLM

    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    if case == "prompt tuning":
        import peft

        model = peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    kwargs = dict(pretrained=model, tokenizer=tok, batch_size=3)
    requests = _requests(data_dir)
    if case == "truncated":  # shorter than prompt + solution: lm-eval drops tokens on the left
        longest = max(len(tok.encode(r.args[1])) for r in requests)
        assert max(len(tok.encode(r.args[0] + r.args[1])) for r in requests) > longest + 8
        kwargs["max_length"] = longest + 4
    stock = HFLM(**kwargs).loglikelihood(requests)
    lm = TokenScoringHFLM(token_tasks=["ftstudy_gsm8k_nll"], **kwargs)
    ours = lm.loglikelihood(requests)
    for req, (ll, greedy), (ll2, greedy2, pieces) in zip(requests, stock, ours):
        assert abs(ll - ll2) < 1e-4 and greedy == greedy2
        assert "".join(p for p, _ in pieces) == req.args[1]
        assert math.isclose(sum(v for _, v in pieces), ll2, abs_tol=1e-4)
        # each piece is its own token's text (the first may straddle the context's end)
        tokens = lm._encode_pair(*req.args)[1]
        assert len(pieces) == len(tokens) and all(p == tok.decode([t]) for (p, _), t in zip(pieces[1:], tokens[1:]))
    other = TokenScoringHFLM(token_tasks=["another task"], **kwargs).loglikelihood(requests)
    assert [r[:2] for r in other] == [r[:2] for r in stock] and all(len(r) == 2 for r in other)


def test_solution_split_by_hand():
    answer = "2 + 2 = <<2+2=4>>4\n#### 4"
    fmt_chars = len("<<2+2=4>>") + len("#### 4")
    assert sum(nll.format_mask(answer)) == fmt_chars
    # one token straddles working and format ("= <<"), one is format only, one working only
    pieces = [["2 + 2 ", -1.0], ["= <<", -2.0], ["2+2=4>>", -0.5], ["4\n", -0.25], ["#### 4", -0.125]]
    fmt, other, fmt_bytes, other_bytes = nll.split(answer, pieces)
    assert fmt_bytes == fmt_chars and other_bytes == len(answer) - fmt_chars
    assert math.isclose(fmt, 2.0 * 2 / 4 + 0.5 + 0.125) and math.isclose(other, 1.0 + 2.0 * 2 / 4 + 0.25)
    out = nll.process_solution_results({"answer": answer}, [(-3.875, False, pieces)])
    assert math.isclose(out["format_nll"] + out["math_bits_per_byte"] * math.log(2) * other_bytes, out["nll"])
    assert math.isclose(out["format_bits_per_byte"], fmt / fmt_bytes / math.log(2))
    # a delimiter before the solution counts with the working, as it counts in the whole
    fmt2, other2, _, _ = nll.split(answer, [[" \n", -1.0]] + pieces)
    assert math.isclose(fmt2, fmt) and math.isclose(other2, other + 1.0)
    # the stock model class (no pieces): the whole solution only
    assert set(nll.process_solution_results({"answer": answer}, [(-3.875, False)])) == {"bits_per_byte", "nll"}
    with pytest.raises(ValueError, match="does not end with the solution"):
        nll.split(answer + "!", pieces)


def test_evaluation_reports_the_split(tiny_model_dir, data_dir, tmp_path):
    """Through the kit's evaluation: per item, the nats of the format bytes and of the working add
    up to the solution's, and the task's results carry each part."""
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    ev = {"batch_size": 4, "tasks": {"gsm8k_nll": {"limit": 4}, "alpaca_nll": {"limit": 2}}}
    res = evaluate.evaluate(model, tok, ev, tmp_path, data_dir)["tasks"]
    assert {"math_bits_per_byte,none", "format_bits_per_byte,none", "format_nll,none"} <= set(res["gsm8k_nll"])
    assert "math_bits_per_byte,none" not in res["alpaca_nll"]
    items = samples.load_samples(tmp_path, "gsm8k_nll").pivot(index="doc_id", columns="metric", values="value")
    assert len(items) == 4
    for doc_id, row in items.iterrows():
        answer = data.heldout_pairs("gsm8k_nll", data_dir)[int(doc_id)][1]
        fmt_bytes = sum(nll.format_mask(answer))
        math_nats = row["math_bits_per_byte"] * math.log(2) * (len(answer.encode()) - fmt_bytes)
        assert math.isclose(row["format_nll"] + math_nats, row["nll"], rel_tol=1e-6)
        assert 0.05 < fmt_bytes / len(answer.encode()) < 0.6  # GSM8K: about a fifth is format


def _choice_requests(tok, data_dir, items=4):
    """Multiple-choice-shaped requests from mirror text: per item one context and four endings of
    different lengths (HellaSwag's shape; one context ends in a space that lm-eval moves onto
    the endings), single-token answers (MMLU's), and one context of its own."""
    from lm_eval.api.instance import Instance

    texts = [p + " " + a for p, a in data.heldout_pairs("alpaca_nll", data_dir)[:items + 6]]
    args = []
    for i in range(items):
        context = texts[i][:160] + (" " if i == 1 else "")
        args += [(context, " " + texts[items + j][:20 + 25 * j]) for j in range(4)]
    args += [(texts[0][:90] + "\nAnswer:", f" {letter}") for letter in "ABCD"]
    args.append((texts[-1][:120], " alone"))
    return [Instance("loglikelihood", {}, a, k, ("hellaswag", k, 1)) for k, a in enumerate(args)]


def _greedy_requests(tok, model, context: str, steps: int = 4):
    """Two requests sharing `context` whose continuations are the model's own greedy tokens
    (all of them, and all but the last): `is_greedy` must say True for both."""
    import torch
    from lm_eval.api.instance import Instance

    ids = tok.encode(context)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    whole = tok.decode(ids[-steps:])
    return [Instance("loglikelihood", {}, (context, c), k, ("hellaswag", 100 + k, 1))
            for k, c in enumerate([whole, tok.decode(ids[-steps:-1])])]


@pytest.mark.parametrize("case", ["plain", "truncated", "prompt tuning", "batch of 2"])
def test_shared_contexts_score_as_stock_lm_eval(case, tiny_model_dir, data_dir):
    """Each context run once and its endings scored from its KV cache: per-request
    log-likelihood within 1e-4 nats of stock lm-eval in fp32 and the same is_greedy; requests
    lm-eval truncates, a context of its own, and prompt tuning's virtual tokens take the stock path."""
    from lm_eval.models.huggingface import HFLM

    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    if case == "prompt tuning":
        import peft

        model = peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    kwargs = dict(pretrained=model, tokenizer=tok, batch_size=2 if case == "batch of 2" else 8)
    requests = _choice_requests(tok, data_dir)
    greedy = _greedy_requests(tok, model, requests[0].args[0][:60])
    requests += greedy
    if case == "truncated":
        kwargs["max_length"] = 48
    stock = HFLM(**kwargs).loglikelihood(requests)
    lm = TokenScoringHFLM(share_contexts=True, **kwargs)
    ours = lm.loglikelihood(requests)
    assert max(abs(a[0] - b[0]) for a, b in zip(stock, ours)) < 1e-4
    assert [a[1] for a in stock] == [b[1] for b in ours]
    if case != "prompt tuning":  # the virtual tokens change what the model would say
        assert [r[1] for r in ours[-2:]] == [True, True] and not all(r[1] for r in ours[:-2])
    shared = {"plain": 22, "batch of 2": 22, "prompt tuning": 0}
    if case in shared:
        assert lm.scored == {"shared_context": shared[case], "per_token": 0, "stock": len(requests) - shared[case]}
    else:  # the long contexts exceed the window: only what fits whole is shared
        assert lm.scored["stock"] > 1 and sum(lm.scored.values()) == len(requests)


def test_stock_requests_run_in_batches_of_like_length():
    """With shared contexts on, requests that take lm-eval's stock path (one continuation per
    context, as the held-out answer tasks) are batched by like length: each batch holds at most
    the batch size, longest first, and is padded by at most a quarter of its tokens."""
    lm = TokenScoringHFLM.__new__(TokenScoringHFLM)  # only the batch size is read
    lm.batch_size_per_gpu = 4
    lengths = [400, 60, 390, 100, 10, 380, 90, 80, 70]
    batches = lm._length_batches(lengths)
    assert sorted(k for b in batches for k in b) == list(range(len(lengths)))
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    for b in batches:
        assert len(b) <= 4 and lengths[b[0]] == max(lengths[k] for k in b)
        assert lengths[b[0]] * len(b) <= 1.25 * sum(lengths[k] for k in b)
    fixed = sorted(lengths, reverse=True)
    padded = sum(lengths[b[0]] * len(b) for b in batches)
    assert padded < sum(max(fixed[i:i + 4]) * len(fixed[i:i + 4]) for i in range(0, len(fixed), 4))

"""Training against its limit: per method, the kit's steady-state step beside a bare PyTorch loop on
the very same batches, padded (today's path) and padding-free (`training.padding_free`), against
this CPU's matmul rate, with where a kit step's time goes.

For each method one model (SmolLM2-135M-Instruct, fp32 weights) takes rounds of four runners in
turn (the order turning each round): the kit (`ftstudy.compute.train.train`: the Trainer, our
callbacks, the cost record), padded and padding-free, and a bare loop (forward, backward,
gradient clipping, fused AdamW: what the Trainer does, nothing else), padded and packed the way
the kit packs, over the batches the kit's Trainer drew, in the training precision this CPU
resolves `auto` to (or `--dtype`). Each round's first `--warmup` steps are left out. Hooks time
the kit's forward, backward, clipping and optimizer; the rest of its step is data, collation and
the Trainer's own work. Then, once each on the bare loop, two more options: one example at a
time (no padding, gradients accumulated) and the other precision.

The fraction of the limit is the step's useful FLOPs (every linear layer on every real token:
forward, input gradients, and weight gradients where the weight trains; causal attention within
each example) over its time, against this CPU's median matmul rate at the model's shapes in the
training dtype. Tokens/s count real (non-padding) tokens, as the kit records them.

    FTSTUDY_DATA_DIR=../shared/data python bench/train_limit.py [--methods full lora] [--rounds 2]
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: shared cores

import common  # noqa: E402

METHODS = ("full", "lora", "qlora", "dora", "ia3", "prompt_tuning")
OPTIONS_FOR = ("full", "lora")  # one example at a time and the other precision are measured on these


def matmul_ceiling(dtype, shapes, reps: int = 20) -> float:
    """Median GFLOP/s of this CPU's matmul at `shapes` [(m, k, n)] in `dtype`."""
    import torch

    rates = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        rates.append(2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def linear_params(model) -> tuple[int, int]:
    """(all, trained) weight elements of the model's linear layers, the output head included
    (4-bit layers counted by their logical shape)."""
    import torch

    total = trained = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or w is None:
            continue
        n = module.in_features * module.out_features
        total += n
        trained += n if w.requires_grad else 0
    return total, trained


def useful_flops(batch: dict, model, config) -> float:
    """Training FLOPs a perfect loop spends on `batch`: every linear layer on every real token
    (forward, input gradients, and weight gradients where the weight trains) and causal
    attention within each example (forward and two backward products); padding, and the
    masked half of a square, count nothing."""
    lengths = [int(n) for n in batch["attention_mask"].sum(dim=1)]
    total, trained = linear_params(model)
    linear = 2 * sum(lengths) * (2 * total + trained)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head_dim
    attention = 3 * 2 * config.num_hidden_layers * sum(n * n for n in lengths) * width
    return float(linear + attention)


class KitTimer:
    """Forward, backward, clipping and optimizer times of the kit's steps, and the batches it drew."""

    def __init__(self, model):
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self.batches, self.marks = [], []
        self._handles = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),
            model.register_forward_hook(lambda *a: self.marks.append(("fwd_end", time.perf_counter()))),
            register_optimizer_step_pre_hook(
                lambda *a: self.marks.append(("opt_start", time.perf_counter()))),
            register_optimizer_step_post_hook(
                lambda *a: self.marks.append(("opt_end", time.perf_counter())))]
        self._clip = torch.nn.utils.clip_grad_norm_

        def clip(*a, **k):
            self.marks.append(("clip_start", time.perf_counter()))
            out = self._clip(*a, **k)
            self.marks.append(("clip_end", time.perf_counter()))
            return out
        torch.nn.utils.clip_grad_norm_ = clip

    def _pre(self, module, args, kwargs):
        self.marks.append(("fwd_start", time.perf_counter()))
        self.batches.append({k: v.detach().clone() for k, v in kwargs.items()
                             if k in ("input_ids", "attention_mask", "labels")})

    def close(self):
        import torch

        for h in self._handles:
            h.remove()
        torch.nn.utils.clip_grad_norm_ = self._clip

    def parts(self) -> list[dict]:
        """Per step: forward, backward (to the clip), clip, optimizer seconds."""
        out, cur = [], {}
        for name, t in self.marks:
            cur[name] = t
            if name == "opt_end":
                out.append(dict(forward=cur["fwd_end"] - cur["fwd_start"], backward=cur["clip_start"] - cur["fwd_end"],
                                clip=cur["clip_end"] - cur["clip_start"], optimizer=cur["opt_end"] - cur["opt_start"]))
                cur = {}
        return out


def bare_round(model, batches, dtype, lr: float, mode: str = "padded") -> list[float]:
    """Seconds per step of a bare loop over `batches` (a fresh fused AdamW, the kit's clipping)."""
    import torch
    from transformers import DataCollatorWithFlattening  # as the kit packs (`train.collator`)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)  # the kit's defaults
    flatten = DataCollatorWithFlattening()
    walls = []
    for batch in batches:
        start = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")  # forward only
        if mode == "padded":
            with autocast:
                loss = model(**batch, use_cache=False).loss
            loss.backward()
        else:
            rows = [{"input_ids": ids[m.bool()].tolist(), "labels": lab[m.bool()].tolist()}
                    for ids, m, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"])]
            counts = [sum(1 for x in r["labels"][1:] if x != -100) for r in rows]
            if mode == "padding-free row":
                with autocast:
                    loss = model(**flatten(rows), use_cache=False).loss
                loss.backward()
            else:  # one example at a time, each loss weighted by its share of the step's tokens
                for r, n in zip(rows, counts):
                    with autocast:
                        out = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]),
                                    use_cache=False)
                    (out.loss * n / sum(counts)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        walls.append(time.perf_counter() - start)
    return walls


def measure(method: str, a, data_dir) -> dict:
    import copy

    from ftstudy.compute import data, methods, train

    steps = a.warmup + a.steps
    spec = methods.resolve(method, training={"max_steps": steps, "batch_size": a.batch, "max_length": a.max_length})
    tok, model = methods.load_model(spec, {"name": "smollm2-135m", "source": common.SMOLLM2, "dtype": a.dtype})
    dtype = spec["compute_dtype"]
    packed_spec = copy.deepcopy(spec)
    packed_spec["training"]["padding_free"] = True
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, a.batch * steps, 0, a.max_length, data_dir)
    tuned = methods.apply(model, spec, seed=0)
    lr = spec["training"]["learning_rate"]
    walls, parts, batches, first = {}, {}, [], []  # first: each kit round's first step
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-train-limit-"))

    def kit_round(runner, which_spec):
        timer = KitTimer(tuned)
        try:
            cost = train.train(tuned, tok, examples, which_spec, tmp / runner.replace(" ", "_"), seed=0)
        finally:
            timer.close()
        if not batches:
            batches.extend(timer.batches)
        step_walls = [x["wall_s"] for x in cost["step_costs"]]
        first.append(step_walls[0])
        walls.setdefault(runner, []).extend(step_walls[a.warmup:])
        parts.setdefault(runner, []).extend(timer.parts()[a.warmup:])

    runners = {"kit": lambda: kit_round("kit", spec),
               "bare": lambda: walls.setdefault("bare", []).extend(bare_round(tuned, batches, dtype, lr)[a.warmup:])}
    if method != "prompt_tuning":  # its virtual tokens prefix each example: it cannot pack
        runners["kit, padding-free"] = lambda: kit_round("kit, padding-free", packed_spec)
        runners["bare, padding-free"] = lambda: walls.setdefault("bare, padding-free", []).extend(
            bare_round(tuned, batches, dtype, lr, "padding-free row")[a.warmup:])
    runners["kit"]()  # the kit first: its Trainer draws the batches every runner then uses
    first_step = first[0]  # the process's first training step: warm-up included
    walls.clear(), parts.clear()
    names = list(runners)
    for i in range(a.rounds):  # the order turns round by round (ABCD, BCDA, ...)
        for name in names[i % len(names):] + names[:i % len(names)]:
            runners[name]()
    timed = batches[a.warmup:]
    tokens = statistics.mean(int(b["attention_mask"].sum()) for b in timed)
    work = statistics.mean(useful_flops(b, tuned, model.config) for b in timed)
    step = {name: statistics.median(w) for name, w in walls.items()}
    result = dict(method=method, dtype=dtype, steps_timed=a.steps, rounds=a.rounds, tokens_per_step=tokens,
                  padded_per_step=statistics.mean(int(b["input_ids"].numel()) for b in timed),
                  useful_flops_per_step=work, step_s=step, step_walls=walls, first_step_s=first_step,
                  tokens_per_s={name: tokens / s for name, s in step.items()},
                  profile={name: {k: statistics.median(p[k] for p in ps) for k in ("forward", "backward", "clip", "optimizer")}
                           for name, ps in parts.items()})
    for name, prof in result["profile"].items():  # what the hooks do not see, from the medians
        prof["rest: data, collation, the Trainer"] = step[name] - sum(prof.values())
    if method in OPTIONS_FOR and a.options:
        other = "float32" if dtype == "bfloat16" else "bfloat16"
        result["options_step_s"] = {
            "one example at a time": statistics.median(bare_round(tuned, batches, dtype, lr, "one at a time")[a.warmup:]),
            f"padded, {other}": statistics.median(bare_round(tuned, batches, other, lr)[a.warmup:])}
    print(method, result, flush=True)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--rounds", type=int, default=2, help="alternating bare/kit rounds")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1, help="steps per round left out")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--dtype", default="auto", help="training precision (auto: bf16 where native)")
    ap.add_argument("--no-options", dest="options", action="store_false")
    a = ap.parse_args()
    import torch

    from ftstudy.compute import precision

    data_dir = common.data_dir()
    dtype = precision.resolve_dtype(a.dtype)
    h, i = 576, 1536  # SmolLM2-135M: hidden and MLP widths; ~1,000 positions a step
    shapes = [(1024, h, i), (1024, i, h), (1024, h, h), (1024, h, 49152)]
    ceiling = {d: matmul_ceiling(getattr(torch, d), shapes) for d in ("float32", "bfloat16")}
    print("matmul GFLOP/s", ceiling, flush=True)
    rows = [measure(m, a, data_dir) for m in a.methods]
    for r in rows:
        r["ceiling_gflops"] = ceiling[r["dtype"]]
        r["fraction"] = {name: r["useful_flops_per_step"] / s / 1e9 / ceiling[r["dtype"]] for name, s in r["step_s"].items()}
    common.save("train_limit", dict(settings=dict(rounds=a.rounds, steps=a.steps, warmup=a.warmup, batch=a.batch,
                                                   max_length=a.max_length, dtype=dtype, threads=torch.get_num_threads()),
                                    matmul_gflops=ceiling, rows=rows))


if __name__ == "__main__":
    main()

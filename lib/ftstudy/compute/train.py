"""Training: one transformers `Trainer` run for every method, and the cost it measured.

The loop is transformers'; what is ours is the glue: defaults (`ftstudy.compute.defaults`), a
stop on non-finite loss, and the cost record (wall time, tokens/s, peak memory, parameters,
artifact size).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path

from ftstudy.compute import defaults
from ftstudy.compute.memory import AnonPeak, peak_rss_mb


def resolve(training: dict | None) -> dict:
    """Training settings with every unset key from `defaults.TRAINING`; an option of
    `defaults.OPTIONAL_TRAINING` is kept only when it is on (absent = off, the committed path)."""
    cfg = defaults.training()
    cfg.update(training or {})
    for key in defaults.OPTIONAL_TRAINING:
        if not cfg.get(key):
            cfg.pop(key, None)
    return cfg


@contextlib.contextmanager
def compiled(model, on: bool):
    """While the block runs, `model` computes through torch.compile (dynamic shapes; compiled
    code cached under `defaults.COMPILE_CACHE` unless TORCHINDUCTOR_CACHE_DIR is set); afterwards
    it runs eagerly again, so evaluation pays no compilation of its own. Compilation happens in
    the first step: its time is in that step's wall (`step_costs`) and in the training wall."""
    if not on:
        yield
        return
    import os

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(defaults.COMPILE_CACHE).expanduser()))
    model.compile(dynamic=True)
    try:
        yield
    finally:
        model.__dict__.pop("_compiled_call_impl", None)  # nn.Module.compile's slot: eager again


def steps_for(training: dict, n_examples: int) -> int:
    """Optimizer steps of a run: `max_steps`, or with `epochs` set the steps that pass over
    `n_examples` that many times at the global batch (the last partial batch counts)."""
    cfg = resolve(training)
    if cfg["epochs"] is None or cfg["max_steps"] == 0:
        return cfg["max_steps"]
    per_step = cfg["batch_size"] * cfg["gradient_accumulation_steps"]
    return max(1, math.ceil(cfg["epochs"] * n_examples / per_step))


class NonFiniteLoss(RuntimeError):
    pass


def collator(tokenizer, cfg: dict):
    """How a step's examples become one batch: padded to the longest (labels -100 on padding),
    or with `padding_free` packed into one row."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if not cfg.get("padding_free"):
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    class PackedCollator(DataCollatorWithFlattening):
        """A step's examples in one row, each attending only to itself: positions restart at
        every example, which transformers turns into a block-diagonal causal mask (sdpa, eager)
        when no attention mask and no KV cache are given, so the batch asks for no cache (a
        cache would turn that mask off and let examples see each other). Each example's first
        label is -100, so no token is predicted across a boundary; the loss is over the same
        answer tokens as the padded batch's."""

        def __call__(self, features, return_tensors=None, separator_id=None):
            return {**super().__call__(features, return_tensors, separator_id), "use_cache": False}

    return PackedCollator()


def _log_callback(run_dir: Path):
    from transformers import TrainerCallback

    from ftstudy.compute import progress

    class StopOnNonFiniteLossAndReport(TrainerCallback):
        """A NaN/inf loss ends the cell at once (nothing after it is worth computing); every
        logged step is reported as the cell's progress. Each step's wall time (its data loading
        included, in-training evaluation not) and the process's anonymous memory after it are
        kept for the cost record (`step_costs`): a long run shows whether steps slow down or memory
        grows."""

        def __init__(self):
            self.steps, self._last = [], None
            self.paused_s = 0.0  # in-training evaluation since the last step (curves)

        def on_train_begin(self, args, state, control, **kw):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            from ftstudy.compute.memory import anon_rss_mb

            now = time.perf_counter()
            self.steps.append(dict(step=state.global_step, wall_s=now - self._last - self.paused_s,
                                   anon_mb=anon_rss_mb()))
            self._last, self.paused_s = now, 0.0

        def on_log(self, args, state, control, logs=None, **kw):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLoss(f"loss became {loss} at step {state.global_step}")
            if loss is not None:
                progress.report(run_dir, "training step", state.global_step, state.max_steps, loss=loss)

    return StopOnNonFiniteLossAndReport()


def tensor_bytes(model) -> int:
    """Bytes of the model's parameter and buffer storages (each storage once; 4-bit weights
    as packed, plus their quantisation state)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
        qs = getattr(t, "quant_state", None)
        if qs is not None:
            for part in (getattr(qs, "absmax", None), getattr(getattr(qs, "state2", None), "absmax", None)):
                if part is not None:
                    total += part.untyped_storage().nbytes()
    return total


def dir_size_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def train(model, tokenizer, examples: list[dict], spec: dict, run_dir: str | Path,
          seed: int = 0, *, processes: int = 1, strategy: str = "ddp", backend: str | None = None,
          return_trainer: bool = False, curve: dict | None = None, tracking: dict | None = None):
    """Train in place, in this process, with a resolved method `spec`; return the cost and
    learning curve. Under torchrun (ftstudy.compute.launch) each rank calls this with `processes`,
    `strategy` and `backend` set. With `curve` = {"evaluation": ..., "data_dir": ...} and
    `eval_every` > 0, the log-likelihood tasks are scored along training (ftstudy.compute.curves);
    their time is not counted as training time. `tracking` (params' `tracking` section) logs
    the run to TensorBoard, MLflow or W&B (ftstudy.compute.trackers).
    """
    import torch
    from transformers import Trainer, TrainingArguments

    from ftstudy.compute.models import count_parameters

    cfg = resolve(spec["training"])
    cfg["max_steps"] = steps_for(cfg, len(examples))
    if cfg["max_steps"] == 0:  # a control cell: the method applied, never trained
        trainable, total = count_parameters(model)
        return dict(train_wall_s=0.0, train_tokens=0, tokens_per_s=None, train_loss=None,
                    loss_curve=[], peak_rss_mb=peak_rss_mb(), peak_cuda_mb=None,
                    trainable_params=trainable, total_params=total, training=cfg)
    parallel = {}
    if processes > 1:
        parallel["ddp_backend"] = backend
        parallel["ddp_find_unused_parameters"] = False
        if strategy == "fsdp":
            parallel.update(fsdp="full_shard auto_wrap")
    # Weights stay fp32 (`methods.load_model`); training autocasts to bf16 only where bf16 is
    # the compute dtype (native bf16 hardware, or a params file that forces it), to fp16 where
    # params ask for it (a GPU only: params refuse fp16 on a CPU).
    autocast_bf16 = spec.get("compute_dtype") == "bfloat16"
    autocast_fp16 = spec.get("compute_dtype") == "float16"
    run_dir = Path(run_dir)
    on_gpu = torch.cuda.is_available()
    from ftstudy.compute import trackers

    tracker_args, tracker_callbacks = trackers.trainer_options(tracking, run_dir)
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=cfg["max_steps"],
        per_device_train_batch_size=cfg["batch_size"] // processes,  # same global batch
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        learning_rate=cfg["learning_rate"],
        lr_scheduler_type=cfg["lr_scheduler_type"],
        warmup_steps=cfg["warmup_ratio"],  # transformers 5: a float < 1 is a ratio
        weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["max_grad_norm"],
        logging_steps=1,
        logging_nan_inf_filter=False,  # else transformers hides NaN/inf losses from the logs
        save_strategy="steps" if cfg["keep_checkpoints"] else "no",
        save_steps=max(1, cfg["max_steps"] // 2),
        **tracker_args,
        seed=seed,
        data_seed=seed,
        bf16=autocast_bf16,
        fp16=autocast_fp16,
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        # a packed row has no padding and no attention mask to count it by
        include_num_input_tokens_seen="all" if cfg.get("padding_free") else "non_padding",
        **parallel,
    )
    if processes > 1 and (cfg.get("padding_free") or cfg.get("compile")):
        raise ValueError("training.padding_free and training.compile run in one training process")
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if cfg.get("padding_free") and attention not in ("sdpa", "eager"):
        raise ValueError(f"training.padding_free relies on transformers' packed-sequence mask (sdpa or eager "
                         f"attention); this model uses {attention!r}")
    if cfg.get("padding_free") and getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        raise ValueError("training.padding_free packs a step's examples into one sequence; prompt tuning's "
                         "virtual tokens must prefix each example: turn it off for this method")
    log_callback = _log_callback(run_dir)
    callbacks, curve_callback = [log_callback, *tracker_callbacks], None
    if cfg["eval_every"] and curve is not None:
        from ftstudy.compute import curves

        if processes > 1:
            raise ValueError("training.eval_every needs a single training process")
        curve_callback = curves.callback(model, tokenizer, curve["evaluation"], run_dir, curve.get("data_dir"),
                                         cfg["eval_every"])
        callbacks.append(curve_callback)
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collator(tokenizer, cfg),
                      callbacks=callbacks)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with AnonPeak() as anon, compiled(model, cfg.get("compile", False)):
        if curve_callback:
            curve_callback.peak = anon
            curve_callback.step_log = log_callback
        out = trainer.train()
    wall = time.perf_counter() - start
    curve_s = curve_callback.wall_s if curve_callback else 0.0
    wall -= curve_s  # training's cost excludes the in-training evaluation
    if autocast_bf16 or autocast_fp16:  # accelerate left autocast around the model's forward: evaluation
        from accelerate.utils import extract_model_from_parallel  # runs outside it

        extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False)
    tokens = int(trainer.state.num_input_tokens_seen)
    trainable, total = count_parameters(model)
    if not cfg["keep_checkpoints"]:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    cost = dict(
        train_wall_s=wall,
        curve_eval_wall_s=curve_s,
        train_tokens=tokens,
        tokens_per_s=tokens / wall if wall > 0 else None,
        train_loss=out.training_loss,
        loss_curve=[dict(step=h["step"], loss=h["loss"])
                    for h in trainer.state.log_history if "loss" in h],
        step_costs=log_callback.steps,
        peak_rss_mb=peak_rss_mb(),
        peak_anon_mb=anon.peak_mb,
        peak_cuda_mb=(max(torch.cuda.max_memory_allocated(), curve_callback.cuda_peak if curve_callback else 0)
                      / 2**20 if on_gpu else None),  # training alone: curve scoring is measured apart
        trainable_params=trainable,
        total_params=total,
        training=cfg,
    )
    return (cost, trainer) if return_trainer else cost


def save(model, tokenizer, out_dir: str | Path) -> int:
    """Save the trained artifact (adapter only for PEFT models) as safetensors; its size."""
    from ftstudy.compute import progress

    out_dir = Path(out_dir)
    progress.report(out_dir.parent, "saving the artifact")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return dir_size_bytes(out_dir)

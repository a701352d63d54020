"""Methods: each fine-tuning technique as defaults + the PEFT config that builds it.

Like PEFT's `method_comparison`, a method is its defaults; a params file only states
deltas. `full` has no adapter (absent adapter config = full fine-tuning). A new method is one
`METHODS` entry (any PEFT type: PEFT builds its config from the entry) and its notebook,
`notebooks/<method>.ipynb` (a copy of lora.ipynb with the method's name).
"""
from __future__ import annotations

import copy

# Per-method defaults. LoRA dropout is 0 (as in PEFT's method comparison): on CPU the dropout
# masks alone cost ~16% of a step. `adapter` holds PEFT config kwargs; `training` overrides
# ftstudy.compute.defaults.TRAINING; `load` says how the base model is loaded. Every method starts from
# the same fp32 weights (the published ones; see `load_model`), so that its reference (`base`,
# or `base_4bit` for QLoRA) is exactly its starting point: a 0-step run equals it (see controls).
METHODS: dict[str, dict] = {
    # References, not methods: the untouched model, and (for QLoRA) the same model loaded in
    # 4-bit NF4, so QLoRA's change is measured against the base it actually trained on.
    "base": dict(peft=None, adapter={}, training={}, load={}),
    "base_4bit": dict(peft=None, adapter={}, training={}, load={"quantize_4bit": True}),
    "full": dict(peft=None, adapter={},
                 # Trains its fp32 weights (bf16 weights would round tiny updates away). Every
                 # model now loads in fp32, so `master_fp32` only names that; it stays in full's
                 # cells because it is part of their run ids (committed results use them).
                 training={"learning_rate": 5e-5}, load={"master_fp32": True}),
    "lora": dict(peft="LORA", adapter=dict(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules="all-linear"),
                 training={}, load={}),
    "qlora": dict(peft="LORA", adapter=dict(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules="all-linear"),
                  training={}, load={"quantize_4bit": True}),
    "dora": dict(peft="LORA", adapter=dict(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules="all-linear", use_dora=True),
                 training={}, load={}),
    "ia3": dict(peft="IA3", adapter=dict(target_modules=["k_proj", "v_proj", "down_proj"],
                                          feedforward_modules=["down_proj"]),
                training={"learning_rate": 3e-3}, load={}),
    # Virtual tokens start as embeddings of real vocabulary tokens (PEFT's SAMPLE_VOCAB), on
    # the model's own embedding scale; PEFT's default N(0,1) start is far off that scale and
    # damages the model before any training.
    "prompt_tuning": dict(peft="PROMPT_TUNING",
                          adapter=dict(num_virtual_tokens=16, prompt_tuning_init="SAMPLE_VOCAB"),
                          training={"learning_rate": 3e-2}, load={}),
}


REFERENCES = ("base", "base_4bit")


def names() -> list[str]:
    return [m for m in METHODS if m not in REFERENCES]


def reference_for(method: str, load: dict | None) -> str:
    """Which reference run a method is compared against."""
    return "base_4bit" if (load or {}).get("quantize_4bit") else "base"


def resolve(method: str, adapter: dict | None = None, training: dict | None = None,
            load: dict | None = None) -> dict:
    """The method's full configuration: its defaults updated by the given deltas."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    spec = copy.deepcopy(METHODS[method])
    from ftstudy.compute.train import resolve as resolve_training

    spec["adapter"].update(adapter or {})
    spec["training"] = resolve_training({**spec["training"], **(training or {})})
    if spec["peft"] == "PROMPT_TUNING":  # virtual tokens prefix each example: it trains padded,
        spec["training"].pop("padding_free", None)  # and its cell says so by lacking the key
    spec["load"].update(load or {})
    spec["method"] = method
    return spec


def load_model(spec: dict, model: dict):
    """(tokenizer, model) loaded as the method needs it: in fp32 (4-bit NF4 for QLoRA, computing
    in fp32), whatever the CPU, so every reference is the published weights and a run made on
    another CPU kind differs only by arithmetic, never by rounded weights.

    The model entry's `dtype` (`auto`: bf16 where the CPU computes it natively) is the
    precision training computes in, as autocast (`ftstudy.compute.train`); evaluation never runs under
    it (`ftstudy.compute.evaluate`). Recorded as `spec["compute_dtype"]`.
    """
    from ftstudy.compute import defaults, models, precision

    load = spec["load"]
    spec["compute_dtype"] = precision.resolve_dtype(load.get("dtype", model.get("dtype", defaults.MODEL["dtype"])))
    return models.load(model["source"], dtype="float32", quantize_4bit=bool(load.get("quantize_4bit")))


def peft_config(spec: dict):
    """The PEFT config object for a resolved method (its `peft` type, e.g. "LORA", is PEFT's
    name), or None for full fine-tuning."""
    import peft

    kind = spec["peft"]
    if kind is None:
        return None
    return peft.PEFT_TYPE_TO_CONFIG_MAPPING[kind](task_type="CAUSAL_LM", **spec["adapter"])


def apply(model, spec: dict, seed: int = 0):
    """Wrap `model` for training with the method; returns the model to train.

    The seed is set first so adapter initialisation is reproducible. A 4-bit base is not
    passed through `prepare_model_for_kbit_training`: its other weights are fp32 already, PEFT
    freezes the base, and QLoRA starts exactly from its `base_4bit` reference.
    """
    import peft
    from transformers import set_seed

    set_seed(seed)
    config = peft_config(spec)
    if config is None:
        return model
    model = peft.get_peft_model(model, config)
    return fix_prompt_learning_generation(model)


def fix_prompt_learning_generation(model):
    """Make cached generation correct for PEFT prompt learning under transformers 5.

    transformers 5 hands the KV cache to `prepare_inputs_for_generation` as `cache`; PEFT
    0.21 looks for `past_key_values`, finds none, and re-prepends the virtual tokens at every
    decoding step: the cache grows by num_virtual_tokens + 1 per token and the text degrades
    (e.g. endless newlines on GSM8K). Renaming the key back restores PEFT's own logic; the
    model's forward still accepts the old name. Idempotent; other models pass through.
    """
    import peft

    if not isinstance(model, peft.PeftModel) or not model.active_peft_config.is_prompt_learning:
        return model
    base_prepare = model.base_model_prepare_inputs_for_generation
    if getattr(base_prepare, "_ftstudy_fixed", False):
        return model

    def prepare(*args, **kwargs):
        inputs = base_prepare(*args, **kwargs)
        if "cache" in inputs and "past_key_values" not in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    prepare._ftstudy_fixed = True
    model.base_model_prepare_inputs_for_generation = prepare
    return model

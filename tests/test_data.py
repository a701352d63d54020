"""Mirror readers give the hub schema; subsets and mixes are deterministic; loss masks answers."""
from ftstudy.compute import data


def test_hellaswag_mirror_matches_readme_facts(data_dir):
    rows = data.load_records("hellaswag", "validation", data_dir)
    assert len(rows) == 10042
    first = rows[0]
    assert first["activity_label"] == "Roof shingle removal"
    assert first["ctx_a"] == "A man is sitting on a roof. he" and first["label"] == "3"
    assert len(first["endings"]) == 4
    labels = [r["label"] for r in rows]
    assert [labels.count(str(k)) for k in range(4)] == [2515, 2485, 2584, 2458]


def test_mmlu_and_gsm8k_mirror(data_dir):
    test = data.load_records("mmlu_high_school_computer_science", "test", data_dir)
    assert len(test) == 100 and test[31]["question"] == "Which is the largest asymptotically?"
    assert len(test[0]["choices"]) == 4 and test[0]["answer"] in range(4)
    assert len(data.load_records("mmlu_high_school_computer_science", "dev", data_dir)) == 5
    gsm = data.load_records("gsm8k", "train", data_dir)
    assert len(gsm) == 7473 and all("####" in r["answer"] for r in gsm)


def test_alpaca_drops_empty_output(data_dir):
    # 5000 rows, 500 held out for the log-likelihood task, 200 for validation, 1 empty output dropped
    assert len(data.pairs("alpaca", data_dir)) == 4299


def test_mix_counts_sum_and_proportions():
    assert data.mix_counts({"gsm8k_train": 0.8, "alpaca": 0.2}, 10) == {"gsm8k_train": 8, "alpaca": 2}
    counts = data.mix_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10)
    assert sum(counts.values()) == 10 and sorted(counts.values()) == [3, 3, 4]


def test_training_set_is_deterministic_per_seed_and_independent_of_mix_order(tiny_model_dir, data_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    mix = {"gsm8k_train": 0.75, "alpaca": 0.25}
    a, counts = data.training_set(tok, mix, 20, 1, 512, data_dir)
    assert a == data.training_set(tok, mix, 20, 1, 512, data_dir)[0]
    assert a != data.training_set(tok, mix, 20, 2, 512, data_dir)[0]
    # Same mix written in the other order: the same examples (the run id is the same too).
    assert a == data.training_set(tok, {"alpaca": 0.25, "gsm8k_train": 0.75}, 20, 1, 512, data_dir)[0]
    assert counts["sets"]["gsm8k_train"]["kept"] == 15 and counts["sets"]["alpaca"]["kept"] == 5
    assert data.target_set(mix) == "gsm8k_train" and data.target_set({"alpaca": 0.6, "gsm8k_train": 0.4}) == "alpaca"
    assert data.targets({"gsm8k_train": 0.8, "alpaca": 0.2})["replayed_nll"] == ["alpaca_nll"]


def test_long_examples_are_dropped_not_cut_and_counted(tiny_model_dir, data_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples, counts = data.training_set(tok, {"gsm8k_train": 1.0}, 24, 0, 160, data_dir)
    sets = counts["sets"]["gsm8k_train"]
    assert len(examples) == 24 and sets["kept"] == 24 and sets["dropped_too_long"] > 0
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for e in examples:  # every kept answer is whole: it ends with the end-of-turn token
        assert len(e["input_ids"]) <= 160 and eos in e["labels"][-3:]
        assert "####" in tok.decode([t for t in e["labels"] if t != -100])


def test_encode_masks_prompt_and_uses_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = data.encode(tok, "What is 2+2?", "It is 4.", max_length=64)
    n_prompt = sum(1 for label in ex["labels"] if label == -100)
    answer = tok.decode([t for t in ex["labels"] if t != -100])
    assert n_prompt > 0 and answer.startswith("It is 4.") and answer.endswith("<|im_end|>\n")
    assert tok.decode(ex["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n")
    assert data.encode(tok, "word " * 200, "x", max_length=32) is None
    assert data.encode(tok, "What is 2+2?", "four " * 100, max_length=64) is None  # answer too long: dropped


def test_the_task_registry_and_the_training_sets_agree():
    """Each log-likelihood task reads a training set's held-out rows, and each training set's
    target and validation tasks are registered tasks on its own rows."""
    from ftstudy.compute import tasks

    for name in tasks.log_likelihood():
        entry = tasks.get(name)
        assert entry.train_set in data.TRAIN_SETS and entry.part in ("test", "validation")
        assert data.heldout_dataset(name) == data.TRAIN_SETS[entry.train_set]["dataset"]
    for name, spec in data.TRAIN_SETS.items():
        assert tasks.get(spec["target_nll"]) == tasks.LogLikelihood(name, "test", tasks.get(spec["target_nll"]).solution)
        assert tasks.get(spec["validation_nll"]).train_set == name
        assert tasks.get(spec["validation_nll"]).part == "validation"
        assert spec["target_task"] is None or not tasks.is_nll(spec["target_task"])
        data.source(spec["dataset"])  # a dataset with a declared source
    for name in tasks.benchmarks():
        entry = tasks.get(name)
        assert {s for s in entry.splits.values() if s} <= set(entry.mirror)

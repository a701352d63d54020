"""Held-out answer log-likelihood tasks: disjoint from training, and they show learning."""
from ftstudy.compute import data, evaluate, methods, train


def test_alpaca_heldout_is_disjoint_from_training_pool(data_dir):
    held = {p for p, _ in data.heldout_pairs("alpaca_nll", data_dir)}
    pool = {p for p, _ in data.pairs("alpaca", data_dir)}
    assert len(held) >= 490 and not held & pool
    gsm_test = {p for p, _ in data.heldout_pairs("gsm8k_nll", data_dir)}
    assert not gsm_test & {p for p, _ in data.pairs("gsm8k_train", data_dir)}


def test_training_on_a_set_lowers_its_heldout_nll(tiny_model_dir, data_dir, tmp_path):
    ev = {"batch_size": 8, "tasks": {"gsm8k_nll": {"limit": 24}, "alpaca_nll": {"limit": 24}}}
    spec = methods.resolve("full", training={"max_steps": 30, "batch_size": 8, "max_length": 128,
                                             "learning_rate": 3e-3})
    tok, model = methods.load_model(spec, {"name": "tiny", "source": {"path": str(tiny_model_dir)},
                                           "dtype": "float32"})
    before = evaluate.evaluate(model, tok, ev, tmp_path / "before", data_dir)["tasks"]
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 240, 0, 128, data_dir)
    tuned = methods.apply(model, spec, seed=0)
    train.train(tuned, tok, examples, spec, tmp_path, seed=0)
    after = evaluate.evaluate(tuned, tok, ev, tmp_path / "after", data_dir)["tasks"]
    key = "bits_per_byte,none"
    assert after["gsm8k_nll"][key] < before["gsm8k_nll"][key] - 0.1, (before, after)
    assert before["gsm8k_nll"][key] > 0
    cfg = (tmp_path / "after" / "tasks" / "ftstudy_gsm8k_nll.yaml").read_text()
    assert "output_type: loglikelihood" in cfg and "ftstudy.compute.nll.process_solution_results" in cfg

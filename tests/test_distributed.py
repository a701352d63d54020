"""One cell on several processes: torchrun + gloo on CPU, 2 ranks, the tiny model.

Same global batch as one process, a training loss within tolerance of the single-process
run, identical weights on both ranks (DDP really synchronised them), and only rank 0 writes.
"""
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from ftstudy.compute import data, launch, methods, train

pytestmark = pytest.mark.slow  # papermill grids, browsers, torchrun, Slurm or report rebuilds

TINY = lambda d: {"name": "tiny", "source": {"path": str(d)}, "dtype": "float32"}  # noqa: E731
TRAINING = {"max_steps": 4, "batch_size": 4, "max_length": 96, "learning_rate": 1e-3}


def _setup(method, tiny_model_dir, data_dir):
    spec = methods.resolve(method, training=TRAINING)
    tok, model = methods.load_model(spec, TINY(tiny_model_dir))
    examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 16, 0, 96, data_dir)
    return spec, tok, methods.apply(model, spec, seed=0), examples


@pytest.mark.parametrize("method, strategy", [("lora", "ddp"), ("full", "ddp"), ("lora", "fsdp")])
def test_two_processes_match_single_process(method, strategy, tiny_model_dir, data_dir, tmp_path):
    spec, tok, single, examples = _setup(method, tiny_model_dir, data_dir)
    one = train.train(single, tok, examples, spec, tmp_path / "one", seed=0)

    spec, tok, model, examples = _setup(method, tiny_model_dir, data_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    two = launch.fit(model, tok, examples, spec, tmp_path / "two", seed=0, model_entry=TINY(tiny_model_dir),
                     distributed={"processes": 2, "strategy": strategy, "backend": "gloo"})

    assert two["processes"] == 2 and two["backend"] == "gloo" and two["strategy"] == strategy
    assert two["training"]["batch_size"] == one["training"]["batch_size"] == 4  # global batch
    assert len(two["loss_curve"]) == len(one["loss_curve"]) == TRAINING["max_steps"]
    assert two["train_tokens"] > 0
    print(f"{method} {strategy}: loss 1 process {one['train_loss']:.4f}, 2 processes {two['train_loss']:.4f}")
    assert abs(two["train_loss"] - one["train_loss"]) <= 0.05 * one["train_loss"]

    folder = tmp_path / "two" / "distributed"
    ranks = [json.loads(m) for m in re.findall(r'\{"rank": [^{}]*\}', (folder / "launch.log").read_text())]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["trainer_world_size"] == 2 and r["parallel_mode"] == "distributed"
               and r["per_device_batch"] == 2 for r in ranks)  # DDP, the batch split in two
    if strategy == "ddp":  # FSDP ranks hold shards, not copies
        assert ranks[0]["trainable_checksum"] == pytest.approx(ranks[1]["trainable_checksum"], rel=1e-9)
    written = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert written == ["cost.json", "job.json", "launch.log", "trained.safetensors"]  # rank 0 only

    trained = load_file(str(folder / "trained.safetensors"))
    assert set(trained) == set(before)
    params = dict(model.named_parameters())
    changed = [n for n in trained if not torch.equal(before[n], trained[n])]
    assert changed, "training did not change any weight"
    for n, t in trained.items():  # the notebook's model now holds the trained weights
        assert torch.equal(params[n].detach(), t.to(params[n].dtype))


def test_distributed_without_model_entry_is_refused(tiny_model_dir, data_dir, tmp_path):
    spec, tok, model, examples = _setup("lora", tiny_model_dir, data_dir)
    with pytest.raises(ValueError, match="model entry"):
        launch.fit(model, tok, examples, spec, tmp_path, distributed={"processes": 2})

"""Training's entry point: `fit` trains in this process, or launches ranks under torchrun.

The rank entry point (`python -m ftstudy.compute.launch`) lives here too; ftstudy.compute.train is one
process's training loop and knows nothing of launching.

Each rank rebuilds the model the same way (same seed, same adapter init), trains it with the
Trainer under DDP (or FSDP), and rank 0 alone writes the trained weights and the cost
record; `fit` then loads those weights into the notebook's model, which is evaluated as
usual. The global batch is kept: each of N processes takes batch_size / N examples a step.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def fit(model, tokenizer, examples: list[dict], spec: dict, run_dir: str | Path, seed: int = 0, *,
        model_entry: dict | None = None, distributed: dict | None = None,
        evaluation: dict | None = None, data_dir=None, tracking: dict | None = None) -> dict:
    """Train a cell's model with a resolved method `spec`; return the cost and learning curve.

    With `distributed` = {"processes": N > 1, ...} (and the cell's `model_entry`, to rebuild
    the model in each rank) training runs on N ranks and `model` receives the trained weights.
    With `evaluation` and `training.eval_every` > 0 (single process only), its log-likelihood
    tasks are scored along training (ftstudy.compute.curves). `tracking`: see ftstudy.compute.trackers.
    """
    from ftstudy.compute import train

    if distributed and int(distributed.get("processes", 1)) > 1:
        if train.resolve(spec["training"])["eval_every"]:
            raise ValueError("training.eval_every (curves) needs a single training process")
        if model_entry is None:
            raise ValueError("distributed training needs the cell's model entry to rebuild the model")
        return launch(model, tokenizer, examples, spec, run_dir, seed, model_entry, distributed, tracking)
    curve = {"evaluation": evaluation, "data_dir": data_dir} if evaluation else None
    return train.train(model, tokenizer, examples, spec, run_dir, seed, curve=curve, tracking=tracking)


def launch(model, tokenizer, examples: list[dict], spec: dict, run_dir: str | Path, seed: int,
           model_entry: dict, distributed: dict, tracking: dict | None = None) -> dict:
    """Train `model` with `distributed["processes"]` ranks; update it in place; return the cost."""
    from safetensors.torch import load_file

    n = int(distributed["processes"])
    folder = Path(run_dir) / "distributed"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "examples.jsonl", "w") as f:
        for e in examples:
            f.write(json.dumps(e) + "\n")
    job = dict(spec=spec, seed=seed, model=model_entry, distributed=distributed, tracking=tracking)
    (folder / "job.json").write_text(json.dumps(job, indent=2, default=str))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "ftstudy.compute.launch", str(folder / "job.json")]
    with open(folder / "launch.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (folder / "launch.log").read_text()[-3000:]
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}); "
                           f"see {folder / 'launch.log'}:\n{tail}")
    trained = load_file(str(folder / "trained.safetensors"))
    params = dict(model.named_parameters())
    missing = [k for k in trained if k not in params]
    if missing:
        raise RuntimeError(f"trained weights do not fit the model: {missing[:3]}")
    import torch
    with torch.no_grad():
        for name, value in trained.items():
            params[name].copy_(value.to(params[name].dtype))
    (folder / "examples.jsonl").unlink()
    return json.loads((folder / "cost.json").read_text())


def _rank_main(job_file: str) -> None:
    """One rank: rebuild, train, and (rank 0) save the trainable weights and the cost."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from ftstudy.compute import methods, train

    job = json.loads(Path(job_file).read_text())
    folder = Path(job_file).parent
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    examples = [json.loads(line) for line in open(folder / "examples.jsonl")]
    spec = job["spec"]
    tokenizer, model = methods.load_model(spec, job["model"])
    model = methods.apply(model, spec, job["seed"])
    strategy = job["distributed"].get("strategy", "ddp")
    backend = job["distributed"].get("backend") or ("nccl" if torch.cuda.is_available() else "gloo")
    cost, trainer = train.train(model, tokenizer, examples, spec, folder / f"rank{rank}", job["seed"],
                                processes=world, strategy=strategy, backend=backend, return_trainer=True,
                                tracking={**job["tracking"], "run_dir": str(folder.parent)}
                                if rank == 0 and job.get("tracking") else None)
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathers FSDP shards
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    digest = (sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
              if strategy == "ddp" else None)  # FSDP ranks hold shards: nothing to compare
    print("\n" + json.dumps({"rank": rank, "world": world, "trainable_checksum": digest,
                      "trainer_world_size": trainer.args.world_size,
                      "parallel_mode": str(trainer.args.parallel_mode.value),
                      "per_device_batch": trainer.args.per_device_train_batch_size,
                      "train_loss": cost["train_loss"]}), flush=True)
    if rank == 0:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if k in trainable}
        save_file(tensors, str(folder / "trained.safetensors"))
        cost.update(processes=world, strategy=strategy, backend=backend)
        (folder / "cost.json").write_text(json.dumps(cost, default=str))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    _rank_main(sys.argv[1])

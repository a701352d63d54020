"""Peak memory of one method on one model: load, wrap, train `--steps` steps through the kit.
Prints one JSON line (peak RSS of this process; peak CUDA memory on a GPU).

    python bench/memory_cell.py MODEL_DIR METHOD --batch 4 --max-length 192 --steps 2
"""
import argparse
import json
import tempfile
import time

import ftstudy  # noqa: F401  (thread settings)
from ftstudy.compute import data, memory, methods, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("method")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--synthetic", action="store_true", help="random full-length sequences, no data mirror")
    ap.add_argument("--dtype", default="auto", help="the model entry's dtype (auto: as the kit picks)")
    a = ap.parse_args()
    start = time.perf_counter()
    spec = methods.resolve(a.method, training={"max_steps": a.steps, "batch_size": a.batch,
                                               "max_length": a.max_length})
    with memory.AnonPeak() as whole:  # peak anonymous memory over load + train
        tok, model = methods.load_model(spec, {"source": {"path": a.model_dir}, "dtype": a.dtype})
        after_load, anon_after_load = memory.peak_rss_mb(), memory.anon_rss_mb()
        weights = train.tensor_bytes(model)
        if a.synthetic:
            from bare_train import synthetic
            examples = synthetic(len(tok), a.batch * a.steps, a.max_length, 0)
        else:
            examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, a.batch * a.steps, 0, a.max_length)
        tuned = methods.apply(model, spec, seed=0)
        with tempfile.TemporaryDirectory() as out:
            cost = train.train(tuned, tok, examples, spec, out, seed=0)
            artifact = train.save(tuned, tok, f"{out}/artifact")
    print(json.dumps(dict(method=a.method, compute_dtype=spec["compute_dtype"], rss_after_load_mb=after_load,
                          anon_after_load_mb=anon_after_load, tensor_mb_after_load=weights / 2**20,
                          peak_anon_mb=whole.peak_mb, peak_rss_mb=memory.peak_rss_mb(),
                          peak_cuda_mb=cost["peak_cuda_mb"], trainable_params=cost["trainable_params"],
                          total_params=cost["total_params"], tokens_per_s=cost["tokens_per_s"],
                          train_loss=cost["train_loss"], artifact_bytes=artifact,
                          wall_s=time.perf_counter() - start)))


if __name__ == "__main__":
    main()

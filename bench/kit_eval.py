"""Evaluate a model folder through the kit (load once, every task on the in-memory model);
print wall time and metrics as one JSON line.

    python bench/kit_eval.py MODEL_DIR OUT_DIR EVALUATION_JSON
"""
import json
import sys
import time

import ftstudy  # noqa: F401  (thread settings)
from ftstudy.compute import evaluate, models


def main():
    folder, out, evaluation = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    start = time.perf_counter()
    tok, model = models.load({"path": folder}, dtype="float32")
    res = evaluate.evaluate(model, tok, evaluation, out)
    metrics = {t: {k: v for k, v in r.items() if isinstance(v, float)} for t, r in res["tasks"].items()}
    print(json.dumps(dict(wall_s=time.perf_counter() - start, eval_s=res["wall_s"], metrics=metrics,
                          items=res["items"])))


if __name__ == "__main__":
    main()

"""Evaluation: the kit vs `python -m lm_eval` on the same model folder, task YAMLs and limits.

The kit loads the model once and runs every task in memory; the CLI runs once for the
upstream tasks and once (with --apply_chat_template) for the held-out log-likelihood tasks,
as a user would to get the same numbers. Metrics must be identical; walls alternate.

    FTSTUDY_DATA_DIR=../shared/data python bench/eval_vs_cli.py [--pairs 3] [--limit 8]
"""
import argparse
import json
import shutil
import tempfile
from pathlib import Path

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=8)
    a = ap.parse_args()
    data_dir = common.data_dir()
    from ftstudy.compute import evaluate

    tasks = {"gsm8k": {"limit": a.limit, "num_fewshot": 5}, "hellaswag": {"limit": a.limit},
             "mmlu_high_school_computer_science": {"limit": a.limit, "num_fewshot": 5},
             "gsm8k_nll": {"limit": a.limit}, "alpaca_nll": {"limit": a.limit}}
    evaluation = {"batch_size": 8, "tasks": tasks}
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-bench-eval-"))
    task_dir = evaluate.write_task_yamls(tasks, tmp / "tasks", data_dir, chat=True)
    folder = common.smollm2_folder()
    groups = [([t for t in tasks if t not in evaluate.NLL_TASKS], []),
              ([t for t in tasks if t in evaluate.NLL_TASKS], ["--apply_chat_template"])]
    metrics = {}

    def run(which, i):
        shutil.rmtree(tmp / which, ignore_errors=True)
        if which == "kit":
            wall, r = common.run_json([common.PY, "bench/kit_eval.py", folder, tmp / "kit",
                                       json.dumps(evaluation)])
            metrics["kit"], metrics["items"] = r["metrics"], r["items"]
        else:  # the same randomly drawn items as the kit (lm-eval's --samples), in fp32
            wall, metrics["cli"] = 0.0, {}
            for names, extra in groups:
                out = tmp / "cli" / names[0]
                samples = {evaluate.PREFIX + t: metrics["items"][t] for t in names}
                wall += common.timed([
                    common.PY, "-m", "lm_eval", "--model", "hf",
                    "--model_args", f"pretrained={folder},dtype=float32",
                    "--tasks", ",".join(evaluate.PREFIX + t for t in names),
                    "--include_path", task_dir, "--samples", json.dumps(samples), "--batch_size", 8,
                    "--output_path", out, "--log_samples", *extra])
                res = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
                for t in names:
                    metrics["cli"][t] = {k: v for k, v in res[evaluate.PREFIX + t].items()
                                         if isinstance(v, float)}
        print(f"pair {i} {which}: {wall:.1f} s", flush=True)
        return dict(wall_s=wall)

    rows = common.alternating(a.pairs, ("kit", "cli"), run)
    kit_metrics, cli_metrics = metrics["kit"], metrics["cli"]
    mismatches = [f"{t}.{k}: kit {v} cli {cli_metrics[t].get(k)}" for t, m in kit_metrics.items()
                  for k, v in m.items() if cli_metrics[t].get(k) != v]
    kit = [r["wall_s"] for r in rows if r["runner"] == "kit"]
    cli = [r["wall_s"] for r in rows if r["runner"] == "cli"]
    summary = dict(kit_wall_s=common.median(kit), cli_wall_s=common.median(cli),
                   ratio_median=common.median([k / c for k, c in zip(kit, cli)]),
                   metrics_identical=not mismatches, mismatches=mismatches,
                   metrics_compared=sum(len(m) for m in kit_metrics.values()), kit_metrics=kit_metrics)
    print({k: v for k, v in summary.items() if k != "kit_metrics"})
    common.save("eval_vs_cli", dict(settings=dict(pairs=a.pairs, tasks=tasks, batch_size=8), rows=rows,
                                    summary=summary))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The kit's in-memory evaluation gives exactly what `python -m lm_eval` gives."""
import json
import subprocess
import sys

import pytest

from ftstudy import evaluate, models

EVAL = {"batch_size": 4, "tasks": {"hellaswag": {"limit": 6},
                                    "mmlu_high_school_computer_science": {"limit": 4, "num_fewshot": 2},
                                    "gsm8k": {"limit": 2, "num_fewshot": 1}}}


def test_local_task_includes_upstream_and_overrides_only_data(data_dir, tmp_path):
    task_dir = evaluate.write_task_yamls({"hellaswag": {}}, tmp_path, data_dir)
    import yaml
    cfg = yaml.safe_load((task_dir / "ftstudy_hellaswag.yaml").read_text())
    assert cfg["include"].endswith("lm_eval/tasks/hellaswag/hellaswag.yaml")
    assert cfg["training_split"] is None and cfg["dataset_path"] == "json"
    assert "doc_to_text" not in cfg and "metric_list" not in cfg


@pytest.mark.slow
@pytest.mark.parametrize("task", list(EVAL["tasks"]))
def test_kit_equals_lm_eval_cli(task, tiny_model_dir, data_dir, tmp_path):
    settings = EVAL["tasks"][task]
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    kit = evaluate.evaluate(model, tok, {"batch_size": 4, "tasks": {task: settings}},
                            tmp_path / "kit", data_dir)["tasks"][task]
    ids = json.loads((tmp_path / "kit" / "lm_eval" / task / "results.json").read_text())["doc_ids"]
    out = tmp_path / "cli"  # the same randomly drawn items, through lm-eval's own --samples
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf",
                    "--model_args", f"pretrained={tiny_model_dir},dtype=float32",
                    "--tasks", f"ftstudy_{task}", "--include_path", str(tmp_path / "kit" / "tasks"),
                    "--samples", json.dumps({f"ftstudy_{task}": ids}), "--batch_size", "4",
                    "--output_path", str(out)], check=True, capture_output=True, text=True)
    cli = json.loads(next(out.rglob("results_*.json")).read_text())["results"][f"ftstudy_{task}"]
    numeric = {k: v for k, v in kit.items() if isinstance(v, float)}
    assert numeric and numeric == {k: cli[k] for k in numeric}
    samples = (tmp_path / "kit" / "lm_eval" / task / "samples.jsonl").read_text().splitlines()
    assert len({json.loads(s)["doc_id"] for s in samples}) == settings["limit"]


def test_limits_draw_the_same_random_items_for_every_run():
    """Not the first N: HellaSwag's first 3,243 validation items are all ActivityNet."""
    ids = evaluate.sample_doc_ids(10042, 200, "hellaswag", seed=0)
    assert ids == evaluate.sample_doc_ids(10042, 200, "hellaswag", seed=0)  # every run alike
    assert len(set(ids)) == 200 and ids == sorted(ids) and max(ids) > 3243
    assert sum(i < 3243 for i in ids) < 120  # about a third, not all
    assert ids != evaluate.sample_doc_ids(10042, 200, "hellaswag", seed=1)
    assert ids != evaluate.sample_doc_ids(10042, 200, "gsm8k", seed=0)
    assert evaluate.sample_doc_ids(100, 100, "mmlu", seed=0) is None  # the whole set: no sampling

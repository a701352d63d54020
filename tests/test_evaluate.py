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


@pytest.mark.parametrize("task", list(EVAL["tasks"]))
def test_kit_equals_lm_eval_cli(task, tiny_model_dir, data_dir, tmp_path):
    settings = EVAL["tasks"][task]
    tok, model = models.load({"path": str(tiny_model_dir)}, dtype="float32")
    kit = evaluate.evaluate(model, tok, {"batch_size": 4, "tasks": {task: settings}},
                            tmp_path / "kit", data_dir)["tasks"][task]
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf",
                    "--model_args", f"pretrained={tiny_model_dir},dtype=float32",
                    "--tasks", f"ftstudy_{task}", "--include_path", str(tmp_path / "kit" / "tasks"),
                    "--limit", str(settings["limit"]), "--batch_size", "4",
                    "--output_path", str(out)], check=True, capture_output=True, text=True)
    cli = json.loads(next(out.rglob("results_*.json")).read_text())["results"][f"ftstudy_{task}"]
    numeric = {k: v for k, v in kit.items() if isinstance(v, float)}
    assert numeric and numeric == {k: cli[k] for k in numeric}
    samples = (tmp_path / "kit" / "lm_eval" / task / "samples.jsonl").read_text().splitlines()
    assert len({json.loads(s)["doc_id"] for s in samples}) == settings["limit"]

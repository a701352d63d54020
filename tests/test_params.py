"""Params files are validated before compute, with the file and key path in the message."""
import pytest
import yaml

from ftstudy import grid, params
from conftest import ROOT, write_params


@pytest.mark.parametrize("name", ["cpu.yaml", "cpu-full.yaml", "paper.yaml"])
def test_shipped_params_validate(name, data_dir, monkeypatch):
    if name == "paper.yaml":  # a GPU user's setting: data from the hub (Alpaca has 52k rows there)
        monkeypatch.delenv("FTSTUDY_DATA_DIR")
    p = params.load(ROOT / "params" / name)
    cells = grid.expand(p)
    assert cells[0]["method"] == "base"


def test_cpu_grid_is_base_plus_six_methods_times_two_sets(data_dir):
    cells = grid.expand(params.load(ROOT / "params" / "cpu.yaml"))
    assert len(cells) == 1 + 6 * 2
    assert {c["method"] for c in cells} == {"base", "full", "lora", "qlora", "dora", "ia3", "prompt_tuning"}


def _bad(tmp_path, tiny_dir, mutate):
    path = write_params(tmp_path / "p.yaml", tiny_dir, tmp_path / "out")
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(params.ParamsError) as e:
        params.load(path)
    return str(e.value)


def test_unknown_key_suggests_closest(tmp_path, data_dir, tiny_model_dir):
    msg = _bad(tmp_path, tiny_model_dir, lambda r: r.update(seedz=[0]))
    assert str(tmp_path / "p.yaml") in msg and "seedz" in msg and "did you mean 'seeds'" in msg


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r["methods"].update(lorax={}), "methods: unknown method 'lorax'"),
    (lambda r: r["train_data"].update(mix={"gsm8k_train": 0.5, "alpaca": 0.4}), "sum to 0.9"),
    (lambda r: r.update(train_sizes=[0]), "train_sizes"),
    (lambda r: r["training"].update(max_steps=0), "training.max_steps"),
    (lambda r: r["evaluation"]["tasks"]["gsm8k"].update(limit=-1), "evaluation.tasks.gsm8k.limit"),
    (lambda r: r["evaluation"]["tasks"].update(arc={}), "unknown task 'arc'"),
    (lambda r: r["models"]["tiny"].update(hub="x/y"), "exactly one model source"),
    (lambda r: r["models"]["tiny"].update(dtype="float16"), "float16 needs a GPU"),
    (lambda r: r.update(train_sizes=[8, 8]), "duplicate"),
])
def test_malformed_params_are_rejected_with_key_path(tmp_path, data_dir, tiny_model_dir, mutate, expect):
    msg = _bad(tmp_path, tiny_model_dir, mutate)
    assert expect in msg and str(tmp_path / "p.yaml") in msg


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("study: x\nmodels: [unclosed\n")
    with pytest.raises(params.ParamsError, match=r"broken.yaml: line \d+.*YAML syntax error"):
        params.load(p)


def test_mirror_missing_file_is_reported(tmp_path, data_dir, tiny_model_dir):
    empty = tmp_path / "mirror"
    empty.mkdir()
    msg = _bad(tmp_path, tiny_model_dir, lambda r: r.update(data_dir=str(empty)))
    assert "lacks gsm8k/train.jsonl" in msg


def test_run_ids_are_stable_and_change_with_params(tmp_path, data_dir, tiny_model_dir):
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out")
    ids = [c["run_id"] for c in grid.expand(params.load(path))]
    assert ids == [c["run_id"] for c in grid.expand(params.load(path))]
    write_params(path, tiny_model_dir, tmp_path / "out", training={"max_steps": 4, "batch_size": 4,
                                                              "max_length": 128})
    ids2 = [c["run_id"] for c in grid.expand(params.load(path))]
    assert ids2[0] == ids[0]            # base model cell unchanged: its eval is reused
    assert set(ids2[1:]).isdisjoint(ids[1:])


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r["evaluation"]["tasks"]["gsm8k"].update(limt=3),
     "evaluation.tasks.gsm8k.limt: unknown key (did you mean 'limit'?)"),
    (lambda r: r["training"].update(max_steps="ten"), "training.max_steps: Input should be a valid integer"),
    (lambda r: r["train_data"].update(wiki={"wikitext": 1.0}), "unknown training set 'wikitext'"),
    (lambda r: r.update(train_sizes=[6000], train_data={"alpaca": {"alpaca": 1.0}}),
     "train_sizes: 6000 asks 6000 examples of alpaca (train_data.alpaca), which has 4499"),
    (lambda r: r["methods"].update(lora={"training": {"learning_rate": -1}}),
     "methods.lora.training.learning_rate: Input should be greater than 0"),
    (lambda r: r["train_data"].update(again={"gsm8k_train": 1.0}), "same mix: duplicate cells"),
    (lambda r: r["models"].update(gone={"path": "/nonexistent/model"}),
     "models.gone.path: /nonexistent/model is not a model folder"),
    (lambda r: r["models"].update(g={"gguf": {"package": "no_such_pkg_x", "file": "m.gguf"}}),
     "models.g.gguf: Python package 'no_such_pkg_x' is not installed"),
    (lambda r: r["models"]["tiny"].update(hug="x"), "models.tiny.hug: unknown key (did you mean 'hub'?)"),
])
def test_more_malformed_params(tmp_path, data_dir, tiny_model_dir, mutate, expect):
    msg = _bad(tmp_path, tiny_model_dir, mutate)
    assert expect in msg and "Traceback" not in msg


def test_output_dir_not_writable(tmp_path, data_dir, tiny_model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    msg = _bad(tmp_path, tiny_model_dir, lambda r: r.update(output_dir=str(blocker / "outputs")))
    assert "output_dir:" in msg and "is not writable" in msg


def test_cli_validate_prints_message_without_traceback(tmp_path, data_dir, tiny_model_dir):
    import subprocess, sys
    p = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", seedz=[1])
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(p)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "seedz: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()

"""The interactive path in a real browser: JupyterLab (as `make lab` starts it, on a free
port with a token) opens notebooks/lora.ipynb in headless Chromium, runs every cell through
the UI, and the notebook finishes without an error output, printing its trainable-parameter
line. The notebook's parameters cell is pointed at the tiny model (as papermill would), so
the run takes seconds; every other cell is the shipped notebook's."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # papermill grids, browsers, torchrun, Slurm or report rebuilds

TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_command() -> list[str]:
    """`make lab`'s command line, from the Makefile itself."""
    make = (ROOT / "Makefile").read_text().split("\nlab:", 1)[1].splitlines()[1].strip()
    args = make.split()
    assert args[0] == "$(VENV)/bin/jupyter" and args[1] == "lab", make
    return [str(Path(sys.executable).parent / "jupyter"), *args[1:-1]]  # the last is its folder


def _tiny_parameters(model_dir: Path, run_dir: Path) -> str:
    model = {"name": "tiny", "source": {"path": str(model_dir)}, "dtype": "float32"}
    evaluation = {"batch_size": 4, "tasks": {"gsm8k_nll": {"limit": 4}, "hellaswag": {"limit": 4}}}
    return "\n".join([
        f"model = {model!r}",
        'train_data = {"gsm8k_train": 1.0}',
        'train_data_name = "gsm8k"',
        "train_size = 8",
        "seed = 0",
        'training = {"max_steps": 2, "batch_size": 4, "max_length": 128}',
        "adapter = {}",
        "load = {}",
        f"evaluation = {evaluation!r}",
        "data_dir = None",
        "distributed = None",
        "tracking = None",
        f"run_dir = {str(run_dir)!r}",
        'run_id = "lab-test"'])


def test_lora_notebook_runs_through_the_jupyterlab_ui(tiny_model_dir, data_dir, tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = json.loads((ROOT / "notebooks" / "lora.ipynb").read_text())
    params_cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params_cell["source"] = _tiny_parameters(tiny_model_dir, tmp_path / "run")
    for c in nb["cells"]:
        c["outputs"] = [] if c["cell_type"] == "code" else c.get("outputs")
        if c["cell_type"] == "code":
            c["execution_count"] = None
        else:
            c.pop("outputs", None)
    (folder / "lora.ipynb").write_text(json.dumps(nb, indent=1))

    port, token = _free_port(), "ftstudy-test-token"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", FTSTUDY_DATA_DIR=str(data_dir),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    cmd = _lab_command() + [f"--port={port}", "--ServerApp.ip=127.0.0.1",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
                            "--LabApp.expose_app_in_browser=True"]
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # the server answers within seconds
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-2000:])
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
                viewport={"width": 1400, "height": 1000}, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.goto(f"{base}/lab/tree/lora.ipynb?token={token}", wait_until="load")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function(  # the kernel has started and is idle
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " return w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel && w.sessionContext.kernelDisplayStatus === 'idle'; }",
                timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(  # every code cell executed, or one raised (run-all stops there)
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " const cells = w.content.widgets.filter(c => c.model.type === 'code');"
                " const raised = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));"
                " return w.sessionContext.kernelDisplayStatus === 'idle' && (raised"
                " || cells.every(c => c.model.executionCount !== null && c.promptNode.textContent.indexOf('*') < 0)); }",
                timeout=TIMEOUT_S * 1000)
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function(
                "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=60_000)
            page.screenshot(path=str(tmp_path / "lab.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    saved = json.loads((folder / "lora.ipynb").read_text())
    errors = [o for c in saved["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    assert all(c.get("execution_count") for c in saved["cells"] if c["cell_type"] == "code")
    printed = "".join("".join(o.get("text", "")) for c in saved["cells"] for o in c.get("outputs", [])
                      if o.get("output_type") == "stream")
    assert "trainable parameters:" in printed  # what the UI ran, as the notebook saved it
    assert (tmp_path / "run" / "metrics.json").is_file()

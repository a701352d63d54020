"""The whole chain on the tiny model: params -> papermill notebooks -> lm-eval -> tables -> book."""
import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from ftstudy.run import cell
from ftstudy.compute import recipe
from ftstudy.planning import grid
from ftstudy.analysis import tables
from ftstudy.config import params
from ftstudy.book import report
from conftest import ROOT, TINY_EVAL, write_params

pytestmark = pytest.mark.slow  # papermill grids, browsers, torchrun, Slurm or report rebuilds


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_model_dir, data_dir):
    tmp = tmp_path_factory.mktemp("study")
    path = write_params(tmp / "tiny.yaml", tiny_model_dir, tmp / "outputs", methods=("lora", "qlora"),
                        controls=True)
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables.collect(tmp / "outputs", grid.expand(params.load(path))).write(tmp / "outputs")  # as `ftstudy report` does
    return path, tmp / "outputs", proc


def test_grid_writes_one_complete_run_folder_per_cell(tiny_study):
    path, outputs, _ = tiny_study
    cells = grid.expand(params.load(path))
    assert [(c["method"], bool(c.get("control"))) for c in cells] == [
        ("base", False), ("base_4bit", False), ("lora", True), ("lora", False), ("qlora", True),
        ("qlora", False)]
    for c in cells:
        run = outputs / "runs" / c["run_id"]
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "done", status.get("error")
        for name in ["cell.json", "metrics.json", "env.json", recipe.notebook_for(c["method"]).name]:
            assert (run / name).is_file(), name
        for task in TINY_EVAL["tasks"]:
            assert (run / "lm_eval" / task / "samples.jsonl").stat().st_size > 0
        metrics = json.loads((run / "metrics.json").read_text())
        env = json.loads((run / "env.json").read_text())
        assert env["packages"]["transformers"] and env["seed"] == c["seed"]
        lock = (ROOT / "requirements.lock").read_bytes()
        assert env["lock"]["sha256"] == hashlib.sha256(lock).hexdigest()  # the lock it ran under
        assert any(k.startswith("gsm8k/") for k in env["data_files"])
        if c["method"] in ("lora", "qlora"):
            assert (run / "artifact" / "adapter_model.safetensors").is_file()
        # evaluation's memory, apart from training's: what it adds, and a 4-bit model's dequantised weights
        assert {"eval_peak_anon_mb", "eval_added_anon_mb", "eval_dequantised_mb"} <= set(metrics)
        assert (metrics["eval_dequantised_mb"] > 0) == (c["method"] in ("base_4bit", "qlora"))
        if c.get("control"):  # the method applied, never trained
            assert metrics["train_wall_s"] == 0 and metrics["loss_curve"] == [] and metrics["cell"]["control"]
        if c["method"] in ("lora", "qlora") and not c.get("control"):
            assert metrics["train_wall_s"] > 0 and metrics["tokens_per_s"] > 0
            assert metrics["peak_rss_mb"] > 0 and metrics["artifact_bytes"] > 0
            assert 0 < metrics["trainable_params"] < metrics["total_params"]
            assert len(metrics["loss_curve"]) == 3
    assert not list((outputs / "runs").glob(".tmp-*"))
    runs = pd.read_csv(outputs / "runs.csv", dtype={"run_id": str}).set_index("run_id")  # in the runs table too
    assert (runs["eval_dequantised_mb"] > 0).to_dict() == {c["run_id"]: c["method"] in ("base_4bit", "qlora")
                                                          for c in cells}
    # Every run scored the same randomly drawn items, recorded in the run.
    items = [json.loads((outputs / "runs" / c["run_id"] / "metrics.json").read_text())["eval_items"]
             for c in cells]
    assert all(i == items[0] for i in items) and items[0]["hellaswag"] != list(range(8))
    for c in cells:
        fp = json.loads((outputs / "runs" / c["run_id"] / "fingerprint.json").read_text())
        assert {"eval_data", "train_data", "eval_packages", "tasks", "code"} <= set(fp)


def test_zero_step_controls_equal_their_references_in_the_grid(tiny_study):
    _, outputs, _ = tiny_study
    from ftstudy.analysis import views
    table = views.controls(outputs, tables.Tables.read(outputs).paired)
    assert sorted(table["method"]) == ["lora", "qlora"]
    assert dict(zip(table["method"], table["reference"])) == {"lora": "base", "qlora": "base_4bit"}
    assert (table["max |Δ loglik|"] <= 1e-5).all() and table["identity"].all()


def test_results_table_has_every_run_task_and_metric(tiny_study):
    _, outputs, _ = tiny_study
    df = pd.read_csv(outputs / "results.csv")
    for col in ["run_id", "model", "method", "train_data", "train_size", "seed", "task",
                "metric", "value", "stderr"]:
        assert col in df.columns
    assert set(df["method"]) == {"base", "base_4bit", "lora", "qlora"}
    per_run = df.groupby("run_id")["metric"].apply(set)
    split = {"math_bits_per_byte", "format_bits_per_byte", "format_nll"}  # GSM8K solutions: working and format
    expected = {"exact_match_strict-match", "exact_match_flexible-extract", "acc", "acc_norm",
                "bits_per_byte", "nll"} | split
    assert all(m == expected for m in per_run)
    acc = df[~df["metric"].isin(["bits_per_byte", "nll", *split])]
    assert acc["value"].between(0, 1).all() and (df.loc[df["metric"] == "bits_per_byte", "value"] > 0).all()
    assert len(df) == 6 * 12  # 6 runs x (2 GSM8K filters + 2 HellaSwag + 1 MMLU + 2 x 2 NLL + 3 split)
    paired = pd.read_csv(outputs / "paired.csv")
    assert {"vs base", "vs method", "control", "vs unquantised base"} == set(paired["comparison"])
    refs = paired[paired["comparison"] == "vs base"].groupby("method")["reference"].first()
    assert refs.to_dict() == {"lora": "base", "qlora": "base_4bit"}  # QLoRA vs its 4-bit base
    net = paired[paired["comparison"] == "vs unquantised base"].groupby("method")["reference"].first()
    assert net.to_dict() == {"base_4bit": "base", "qlora": "base"}  # and its net change, quantisation included
    assert paired["p_value"].notna().all()
    nll = paired[(paired["comparison"] == "vs base") & (paired["metric"] == "bits_per_byte")]
    assert len(nll) == 4 and nll[["ci_low", "ci_high"]].notna().all().all()
    # the math target's verdict rests on the working; the whole solution is beside it
    solution = paired[(paired["comparison"] == "vs base") & (paired["task"] == "gsm8k_nll")]
    assert set(solution.loc[solution["headline"], "metric"]) == {"math_bits_per_byte"}
    # identical to the reference up to float rounding (batched shared contexts: <= ~1e-7 nats; the
    # book's identity check allows 1e-5 per item)
    controls = paired[paired["comparison"] == "control"]
    assert (controls["mean_diff"].abs() < 1e-6).all(), controls[["method", "task", "metric", "mean_diff"]].to_string()
    base = pd.read_csv(outputs / "baselines.csv")
    assert set(base["task"]) == {"hellaswag", "mmlu_high_school_computer_science"}


def test_rerun_skips_every_cell(tiny_study):
    path, outputs, _ = tiny_study
    before = {p: p.stat().st_mtime_ns for p in (outputs / "runs").rglob("metrics.json")}
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "6 already recorded, 0 to run" in proc.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (outputs / "runs").rglob("metrics.json")}
    dry = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path), "--dry-run"],
                         capture_output=True, text=True, cwd=ROOT)
    assert dry.stdout.count(" done ") == 6 and "0 to run" in dry.stdout


def test_dry_run_estimates_pending_cells_from_finished_twins(tiny_study, tmp_path):
    path, outputs, _ = tiny_study
    import yaml
    raw = yaml.safe_load(path.read_text())
    raw["seeds"] = [0, 1]  # seed 1's cells are pending, their seed-0 twins are done
    more = tmp_path / "seeds.yaml"
    more.write_text(yaml.safe_dump(raw))
    walls = {c["method"]: json.loads((outputs / "runs" / c["run_id"] / "status.json").read_text())["wall_s"]
             for c in grid.expand(params.load(path)) if not c.get("control") and c["seed"] == 0}
    dry = subprocess.run([sys.executable, "-m", "ftstudy", "run", str(more), "--dry-run"],
                         capture_output=True, text=True, cwd=ROOT)
    expected = (walls["lora"] + walls["qlora"]) / 60
    assert f"estimated {expected:.1f} min for 2 of the 2 cells to run" in dry.stdout, dry.stdout[-800:]


def test_a_changed_fingerprint_marks_a_cell_stale_and_rerun_stale_reruns_it(tiny_study):
    path, outputs, _ = tiny_study
    control = next(c for c in grid.expand(params.load(path)) if c.get("control"))
    fp_file = outputs / "runs" / control["run_id"] / "fingerprint.json"
    fp = json.loads(fp_file.read_text())
    fp["code"]["lib"] = "an older library"
    fp_file.write_text(json.dumps(fp))
    run = lambda *flags: subprocess.run([sys.executable, "-m", "ftstudy", "run", str(path), *flags],  # noqa: E731
                                        capture_output=True, text=True, cwd=ROOT)
    dry = run("--dry-run")
    line = next(x for x in dry.stdout.splitlines() if x.startswith(control["run_id"]))
    assert " stale " in line and "[changed: code (lib)]" in line and "1 stale" in dry.stdout
    kept = run()
    assert "1 finished cell(s) are stale" in kept.stdout and "0 to run" in kept.stdout
    rerun = run("--rerun-stale")
    assert rerun.returncode == 0 and "1 to run" in rerun.stdout
    assert json.loads(fp_file.read_text())["code"]["lib"] != "an older library"
    assert "0 stale" in run("--dry-run").stdout


@pytest.fixture(scope="module")
def built_book(tiny_study, tmp_path_factory):
    import shutil
    path, _, _ = tiny_study
    book = tmp_path_factory.mktemp("bookcopy") / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    report.build(params.load(path), book_dir=book)
    return book / "_build" / "html"


def test_book_builds_with_figures(tiny_study, built_book):
    path, outputs, _ = tiny_study
    html = built_book
    assert (html / "index.html").is_file()
    analysis = (html / "generated" / "analysis.html").read_text()
    assert analysis.count("<img") >= 5 and "Traceback" not in analysis
    assert "Learning vs forgetting" in analysis and "Honest baselines" in analysis
    front = (html / "generated" / "front.html").read_text()
    assert "so it cannot say whether the base model changes the answer" in front  # one model: said plainly
    limits = (html / "generated" / "limitations.html").read_text()
    assert "points" in limits and "gsm8k_nll" in limits and "math_bits_per_byte" in limits
    # the precision as the runs recorded it decides the page's words, not the params
    assert "finished runs were evaluated in float32" in limits and "Evaluation in bf16" not in limits
    assert "verdicts on the working alone (annotations and the" in front
    images = list((html / "_images").glob("*.png"))
    assert len(images) >= 3 and all(p.stat().st_size > 1000 for p in images)
    prov = (html / "generated" / "provenance.html").read_text()
    runs = [c["run_id"] for c in grid.expand(params.load(path))]
    assert all(r in prov for r in runs)


def test_book_in_headless_chromium(built_book, chromium):
    """Every page loads in a real browser, every image is served and non-empty, no console
    errors; a screenshot of the results page is kept in test-artifacts/."""
    import functools
    import http.server
    import shutil
    import threading

    from playwright.sync_api import sync_playwright

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages = [p.relative_to(built_book).as_posix() for p in built_book.rglob("*.html")
             if not p.name.startswith(("genindex", "search"))
             and not p.relative_to(built_book).parts[0].startswith("_")]  # theme templates
    assert {"index.html", "generated/analysis.html", "generated/provenance.html"} <= set(pages)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    profile = built_book.parent / "chromium-profile"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(  # a fresh --user-data-dir
                str(profile), executable_path=chromium, headless=True,
                viewport={"width": 1280, "height": 900}, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            errors, failed = [], []
            page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url')})")
                    if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
                    else None)  # the index redirect page (made by Jupyter Book) names no icon
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: failed.append(r.url)
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            page.goto(f"{base}/index.html", wait_until="load")
            page.wait_for_url("**/generated/front.html")  # the book's index redirects to its root page
            for rel in pages:
                if rel == "index.html":
                    continue
                resp = page.goto(f"{base}/{rel}", wait_until="load")
                assert resp.status == 200, rel
                images = page.eval_on_selector_all(
                    "img", "els => els.map(e => [e.currentSrc, e.complete, e.naturalWidth])")
                for src, complete, width in images:
                    assert complete and width > 0, (rel, src)
                # as a reader sees the page: every collapsed section opened, nothing wider than
                # the content column (code may scroll; tables may not), no figure shrunk below
                # half its natural width
                assert not page.evaluate(LAYOUT_CHECK), (rel, page.evaluate(LAYOUT_CHECK))
                if rel == "generated/analysis.html":
                    assert len(images) >= 5
                    page.screenshot(path=str(artifacts / "results-page.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    assert not failed, failed
    assert not errors, errors
    assert (artifacts / "results-page.png").stat().st_size > 10_000


LAYOUT_CHECK = """() => {
  document.querySelectorAll("details").forEach(d => d.open = true);
  const column = document.querySelector("article.bd-article") || document.querySelector("main");
  const right = column.getBoundingClientRect().right + 1;
  const code = el => el.closest("pre, div.highlight, .cell_output .output.text_plain");
  const problems = [];
  for (const el of column.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || code(el)) continue;
    let clipped = false;
    for (let a = el.parentElement; a && a !== column; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if ((o === "auto" || o === "scroll" || o === "hidden") && a.scrollWidth > a.clientWidth + 1 && !code(a)) {
        problems.push(`${a.tagName}.${a.className} needs horizontal scrolling (${a.scrollWidth} > ${a.clientWidth} px)`);
      }
      if (o !== "visible") { clipped = true; break; }
    }
    if (!clipped && r.right > right) problems.push(`${el.tagName}.${el.className} ends at ${Math.round(r.right)} px, column at ${Math.round(right)}`);
  }
  for (const img of column.querySelectorAll("img")) {
    if (img.naturalWidth && img.clientWidth < 0.5 * img.naturalWidth)
      problems.push(`${img.currentSrc} shown at ${img.clientWidth} of ${img.naturalWidth} px`);
  }
  return [...new Set(problems)].slice(0, 10);
}"""


def test_exported_results_rebuild_the_report_without_compute(tiny_study, tmp_path):
    """`ftstudy export` then `ftstudy report --results`: the same tables from the exported
    records alone (no weights; per-sample logs gzipped), and each run's fingerprint checked."""
    import shutil

    path, outputs, _ = tiny_study
    exported = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "ftstudy", "export", str(path), "--to", str(exported)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(exported.rglob("*.safetensors")) and list(exported.rglob("samples.jsonl.gz"))
    assert not list(exported.rglob("samples.jsonl"))
    assert "ftstudy report" in (exported / "README.md").read_text()
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    report.build(params.load(path), book=False, book_dir=book, results_dir=exported)
    for table in ("results", "paired", "aggregated"):
        mine, theirs = pd.read_csv(exported / f"{table}.csv"), pd.read_csv(outputs / f"{table}.csv")
        pd.testing.assert_frame_equal(mine, theirs)
    prov = (book / "generated" / "provenance.md").read_text()
    cells = grid.expand(params.load(path))
    assert prov.count("Fingerprint: matches today's code, packages and data.") == len(cells)

"""The book's generated pages (front, verdicts, methods, limitations, provenance) as markdown,
from the study's tables in memory and its run records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

from ftstudy.analysis.tables import Tables
from ftstudy.analysis.verdicts import Condition
from ftstudy.compute import paths, precision, results
from ftstudy.compute.methods import REFERENCES
from ftstudy.config.params import Params


def methods_page(params: Params, cells: list[dict]) -> str:
    """Each method's configuration as run (defaults + the params file's deltas)."""
    lines = ["# Methods as run", "",
             f"Configurations resolved from `{params.study}` params: each method's defaults "
             "(`lib/ftstudy/compute/methods.py`) with the params file's deltas applied.", ""]
    seen = set()
    for c in cells:
        if c["method"] in seen or c.get("control"):
            continue
        seen.add(c["method"])
        cfg = {k: c.get(k) for k in ("adapter", "load", "training") if c.get(k) is not None}
        lines += [f"## {c['method']}", "", "```yaml",
                  yaml.safe_dump(cfg or {"evaluation only": True}, sort_keys=False).strip(),
                  "```", ""]
    ev = cells[0]["evaluation"] if cells else {}
    lines += ["## Evaluation", "", "lm-evaluation-harness tasks (upstream configs; data from the "
              "configured source), per-task limits and shots:", "", "```yaml",
              yaml.safe_dump(ev, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def verification_lines(outputs: Path) -> list[str]:
    """How to verify these records on one's own machine, and the last verification committed
    beside them (`verify.json`, written by `ftstudy verify`)."""
    try:
        folder = outputs.resolve().relative_to(paths.project_root())
    except ValueError:
        folder = outputs
    lines = ["## Verification", "",
             f"`ftstudy verify {folder}` reruns a reference, the cheapest trained run "
             "and runs drawn at random on your machine, from their `cell.json`, and compares them with these "
             "records: per-item log-likelihoods, accuracies, the training loss per step, and the verdicts with the "
             "reruns in their place; it exits 0 when every difference is within its tolerance.", ""]
    f = outputs / "verify.json"
    if not f.is_file():
        return lines + ["No verification is committed with these records.", ""]
    v = results.read_json(f)
    cpu = (v.get("machine") or {}).get("cpu") or {}
    threads = (v.get("machine") or {}).get("threads")
    lines += [f"Last verification committed ({v['checked']}, on a CPU with torch capability "
              f"{cpu.get('torch_cpu_capability')}, native bf16 {cpu.get('native_bf16')}; "
              + (f"{threads} threads" if isinstance(threads, int) else "each record's thread count")
              + ", and each record's kernels where this CPU has them): "
              + ("**every difference within its tolerance**" if v["within_tolerance"] else "**not within tolerance**")
              + (f"; verdicts that change with the reruns in place: {len(v['verdicts_changed'])}"
                 if v.get("verdicts_changed") else "; every verdict holds with the reruns in place") + ".", "",
              "| run | tolerance tier | largest per-item log-likelihood difference (nats) | training loss, "
              "largest difference | recorded on | rerun on | over tolerance |", "|---|---|---|---|---|---|---|"]
    for r in v["runs"]:
        worst = max((t.get("max_abs", 0.0) for t in r["tasks"].values()), default=0.0)
        loss = f"{r['loss']['max_abs']:.2e}" if r.get("loss") else "no training"
        lines.append(f"| {{ref}}`{r['run_id']} <run-{r['run_id']}>` {r['run']} | {r['tier']} | {worst:.2e} | {loss} | "
                     f"{r['recorded']['cpu_kind']}, {r['recorded']['threads']} threads, {r['recorded']['dtype']} | "
                     f"{r['rerun']['cpu_kind']}, {r['rerun']['threads']} threads, {r['rerun']['dtype']} | "
                     f"{len(r['problems'])} |")
    return lines + [""]


def provenance_page(outputs: Path, book_dir: Path, run_ids: set[str], stale: dict | None = None,
                    cited: dict[str, list[str]] | None = None) -> str:
    """Per run of the grid: status, parameters, versions, data hashes, fingerprint (and
    whether it still matches today's code and data: `stale`, {run id: parts that changed}),
    and its executed notebook."""
    runs_dir = book_dir / "generated" / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    lines = ["# Provenance", "", "Every run folder of this grid, failed ones included. Each links "
             "to its executed notebook (download) and lists what produced it.", "",
             *verification_lines(outputs)]
    if cited:
        lines += ["## Runs behind the front page's numbers", ""]
        for label, ids in sorted(cited.items()):
            lines += [f"({label})=", f"### {', '.join(ids)}", "",
                      ", ".join(f"{{ref}}`{i} <run-{i}>`" for i in ids), ""]
        lines += ["## Every run", ""]
    for status_file in sorted((outputs / "runs").glob("*/status.json")):
        if status_file.parent.name not in run_ids:
            continue
        run = status_file.parent
        status = results.read_json(status_file)
        cell = results.read_json(run / "cell.json") if (run / "cell.json").is_file() else {}
        env = results.read_json(run / "env.json") if (run / "env.json").is_file() else {}
        nb = run / status.get("notebook", "")
        lines += [f"(run-{run.name})=", f"### `{run.name}` {cell.get('method', status.get('method'))} "
                  f"({status['status']})", ""]
        if nb.is_file():
            shutil.copy(nb, runs_dir / f"{run.name}.ipynb")
            lines += [f"Executed notebook: {{download}}`{run.name}.ipynb <runs/{run.name}.ipynb>`", ""]
        if status.get("error"):
            lines += ["Error:", "", "```text", status["error"], "```", ""]
        if stale is None:
            lines += ["Fingerprint against today's code and data: not checked (no data mirror to hash).", ""]
        elif stale.get(run.name):
            lines += [f"**Stale**: since this run, these changed: {'; '.join(stale[run.name])}.", ""]
        else:
            lines += ["Fingerprint: matches today's code, packages and data.", ""]
        fp = run / "fingerprint.json"
        shown = {"cell": {k: v for k, v in cell.items() if k != "evaluation"},
                 "fingerprint": results.read_json(fp) if fp.is_file() else "not recorded",
                 "packages": env.get("packages"), "git": env.get("git"),
                 "hardware": env.get("hardware"), "data_files (sha256)": env.get("data_files"),
                 "wall_s": round(status.get("wall_s", 0), 1)}
        lines += ["```yaml", yaml.safe_dump(json.loads(json.dumps(shown, default=str)),
                                            sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def limitations_page(params: Params, study: Tables) -> str:
    """What this grid can and cannot tell, computed from its own settings and results."""
    import pandas as pd

    from ftstudy.compute import evaluate
    from ftstudy.analysis import measures, stats, views

    ev = params.evaluation
    lines = ["# Limitations", "",
             f"Computed from the `{params.study}` params and results; rebuilt with the report.", "",
             "## What the evaluation sizes can detect", "",
             "| task | items per run | smallest accuracy difference detectable (80% power, α=0.05, "
             "independent runs at p=0.5) |", "|---|---|---|"]
    for task, cfg in ev.tasks.items():
        n = cfg.limit
        if task in evaluate.SOLUTION_TASKS:
            lines.append(f"| {task} | {n or 'all'} | log-likelihood of GSM8K's reference solutions: verdicts on their "
                         "working (`math_bits_per_byte`), the calculator annotations and `#### N` line "
                         "(`format_bits_per_byte`, about a fifth of the bytes) beside it, where the runs were scored "
                         "with the split; see the paired intervals in the results |")
        elif task.endswith("_nll"):
            lines.append(f"| {task} | {n or 'all'} | log-likelihood: see the paired intervals in the results |")
        else:
            mdd = stats.min_detectable_difference(n) if n else float("nan")
            continuous = measures.verdict_metric(task)
            why = (f"; verdicts rest on {continuous} (the front page gives its detectable change)"
                   if continuous != measures.headline_metric(task) else "")
            lines.append(f"| {task} | {n or 'all'} | {100 * mdd:.0f} points of accuracy{why} |" if n else
                         f"| {task} | all | depends on the full set size{why} |")
    if not study.aggregated.empty:
        p = study.aggregated
        p = p[(p["comparison"] == "vs base") & p["metric"].eq("bits_per_byte")]
        if not p.empty:
            width = (p["ci_high"] - p["ci_low"]).median()
            lines += ["", f"Paired log-likelihood differences: the median 95% interval of a change in "
                      f"bits per byte is {width:.4f} wide across this grid's {len(p)} comparisons."]
    sizes = ", ".join(str(s) for s in params.train_sizes)
    per_method: dict = {}
    for c in params.conditions():
        per_method.setdefault(c["method"], set()).add(c["seed"])
    seeds = "; ".join(f"{m} {', '.join(str(x) for x in sorted(v))}" for m, v in per_method.items()) \
        if params.designs else ", ".join(str(s) for s in params.seeds)
    t = params.training
    amount = f"{t.epochs:g} epoch(s)" if t.epochs is not None else f"{t.max_steps} steps"
    lines += ["", "## What the grid does not vary", "",
              f"- Models: {', '.join(params.models)}; training sizes: {sizes}; seeds: {seeds}. "
              "A single value of any of these means the report cannot say how results depend on it.",
              f"- Training: {amount} of batch {t.batch_size}, "
              f"sequences up to {params.training.max_length} tokens (longer examples are dropped, "
              "not cut; the results page counts them).",
              f"- Every run is paired only with a reference evaluated in its precision, on the same items, "
              f"drawn at random (seed {ev.sample_seed}) where a task has a limit. "
              + views.measurement_check(study.runs), ""]
    done = study.runs[study.runs["status"] == "done"] if len(study.runs) else study.runs
    if "bfloat16" in set(done.get("eval_dtype", pd.Series(dtype=object)).astype(str)):  # as recorded, not as asked
        lines += ["- Evaluation in bf16 (lm-eval's autocast over the fp32 weights): each matmul rounds its "
                  "weights and activations to bf16, so an update smaller than bf16's resolution is lost and "
                  "every item's score moves by bf16's rounding (BENCHMARKS.md section 15 measures it on "
                  "SmolLM2): a small difference between methods may be rounding, not training. Studies "
                  "evaluate in float32.", ""]
    if params.tuning is None and len(params.models) > 1:
        lines += ["- Learning rates are not tuned in this grid: each method trains at its configured rate, the "
                  f"same for every model ({', '.join(params.models)}); a rate chosen for one model may not suit "
                  "another.", ""]
    if params.designs:
        lines += ["- Not a full factorial: the grid is the union of these designs, each varying one factor "
                  "around the main condition (first model, training set, size, seed); a factor's answer holds "
                  "at the main condition's other values only:", ""]
        lines += [f"  - `{name}`: " + "; ".join(f"{k} {v}" for k, v in d.model_dump(exclude_defaults=True).items())
                  for name, d in params.designs.items()]
        lines += [""]
    if min(len(v) for v in per_method.values()) == 1:
        lines += ["- One seed for some configurations: their intervals cover the sampling of evaluation items, "
                  "not the randomness of training (adapter initialisation, data order), so their changes are shown "
                  "and never called *separated* (verdict *single seed*). Their detectable change assumes the seed "
                  "variance the seeded comparisons of the same task measured.", ""]
    if max(len(v) for v in per_method.values()) > 1:
        lines += ["- Several seeds: one interval over seeds crossed with items (seed, item and residual variance "
                  "from the two-way mean squares, a t interval with Satterthwaite's degrees of freedom, the seed term kept however small its "
                  "estimate; at least 93% coverage at three seeds in simulation, about 90% at two). With few seeds the degrees of "
                  "freedom are few and the intervals wide: that is the price of counting training randomness.", ""]
    mixes = {label: mix for label, mix in params.train_data.items() if len(mix) > 1}
    for label, mix in mixes.items():
        parts = ", ".join(f"{100 * share:.0f}% {name}" for name, share in mix.items())
        lines += [f"- `{label}` mixes {parts} at the same size as the other training sets, so it has fewer "
                  "examples of its target task than a set of that task alone: a smaller gain on the target "
                  "there is partly less target data, not only the replay.", ""]
    lines += ["- A smallest detectable change is against the reference model; between two methods (each with "
              "its own noise) the detectable difference is larger.", ""]
    caveats = [f"- {name} is dequantised from the GGUF file `{m.gguf.file or m.gguf.path}`: its scores differ "
               "from those of the full-precision model the file was made from by an amount this grid does not "
               "measure. Every run of it and its reference start from the same dequantised weights, so the "
               "paired changes compare like with like."
               for name, m in params.models.items() if m.gguf is not None]
    if data_dir_is_mirror(params) and "hellaswag" in ev.tasks:
        caveats.append("- HellaSwag from the offline mirror lacks lm-eval's capitalisation of `ctx_b`, "
                       "so its numbers can differ slightly from those on the hub copy.")
    caveats += chance_lines(study)
    if caveats:
        lines += ["## Caveats", "", *caveats, ""]
    return "\n".join(lines)


def verdicts_page(verdicts_table) -> str:
    """Every comparison of the study with its verdict, one row each, anchored by its id: the
    sentences on the other pages link their verdicts here."""
    import html

    import pandas as pd

    from ftstudy.analysis import verdicts

    lines = ["# Verdicts", "",
             "One row per comparison the study makes, decided once by one rule (`ftstudy.analysis.verdicts.decide`): "
             "*separated* when the comparison ran several seeds, its Holm-adjusted paired test rejects no change "
             "and its 95% interval excludes zero, training randomness and item sampling both in them (seeds "
             "crossed with items); *single seed* when that holds on one seed's items, where training randomness "
             "is unmeasured; *not significant after Holm* when the "
             "interval excludes zero but the adjusted test does not reject; *inside the noise* otherwise; "
             "*cannot be told* when a method compared did not improve its own training target there; "
             "*not tested* without a paired test. Every sentence that states a verdict links to its row. The same "
             "table is `verdicts.csv` beside the results.", ""]
    if verdicts_table.empty:
        return "\n".join(lines + ["No comparison has been made yet."])
    counts = verdicts_table["verdict"].value_counts()
    lines += ["Verdicts: " + ", ".join(f"{counts[v]} {v}" for v in verdicts.VERDICTS if v in counts) + ".", ""]
    cols = ["id", "comparison", "task", "seeds", "n", "estimate", "interval", "p (Holm)", "verdict"]

    def num(v, f):
        return "" if pd.isna(v) else format(v, f)

    def where(r):
        size = "" if pd.isna(r["train_size"]) else f", {r['train_size']:g} examples"
        seed = "" if pd.isna(r["seed"]) else f", seed {r['seed']:g}"
        data = "" if pd.isna(r["train_data"]) else f", {r['train_data']}"
        return f"{r['comparison']} ({r['model']}{data}{size}{seed})"

    rows = []
    for _, r in verdicts_table.iterrows():
        cells = [r["id"], where(r), f"{r['task']} ({r['metric']})", num(r["seeds"], "g"), num(r["n"], "g"),
                 num(r["estimate"], "+.4f"), f"[{num(r['ci_low'], '+.4f')}, {num(r['ci_high'], '+.4f')}]"
                 if not pd.isna(r["ci_low"]) else "none", num(r["p_adjusted"], ".2g"), r["verdict"]]
        rows.append(f'<tr id="{html.escape(str(r["id"]))}" title="{html.escape(str(r["why"]))}">'
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    lines += ["Hover a row for why its verdict is what it is.", "",
              '<div class="verdicts-table"><table style="width: 100%; table-layout: fixed; font-size: 0.78em; '
              'overflow-wrap: anywhere">',
              "<thead><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead>", "<tbody>", *rows,
              "</tbody></table></div>", ""]
    return "\n".join(lines)


def verdict_link(citation: dict) -> str | None:
    """A cited verdict as a link to its row of the verdicts page (None for a number)."""
    if "verdict_id" not in citation:
        return None
    return f'<a class="verdict" href="verdicts.html#{citation["verdict_id"]}">{citation["text"]}</a>'


def cite_label(run_ids: list[str]) -> str:
    import hashlib
    return "cite-" + hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:10]


def _cost_markdown(runs, main: Condition) -> str:
    """The cost of one run per method in the main condition, as a markdown table with units."""
    from ftstudy.analysis import views

    model, label, size = main
    sel = runs[(runs["model"] == model) & (runs["train_data"] == label) & (runs["train_size"] == size)]
    t = views.cost_table(sel)
    if t.empty:
        return "No trained run has finished."
    t = t.reset_index().drop(columns=["model"])
    t["trainable params"] = t["trainable params"].map(lambda v: f"{v:,.0f}")
    return t.to_markdown(index=False, floatfmt=".4g")


def _why_off_plan(r) -> str:
    """' (variances here: seed, item, residual; in the plan: ...)' where the achieved
    change is off the plan by more than half again either way: the variances behind each say why."""
    if pd.isna(r.get("planned")) or pd.isna(r.get("seed_var")) or pd.isna(r.get("pilot_seed_var")):
        return ""
    if max(r["achieved"], r["planned"]) <= 1.5 * min(r["achieved"], r["planned"]):
        return ""
    return (f" (variances here: seed {r['seed_var']:.2g}, item {r['item_var']:.2g}, residual "
            f"{r['resid_var']:.2g}; in the plan: seed {r['pilot_seed_var']:.2g}, item {r['pilot_item_var']:.2g}, "
            f"residual {r['pilot_resid_var']:.2g})")


def detectable_line(planned, pilot: str | None) -> str:
    """One question's smallest detectable changes, per task: as achieved, and as the planner
    predicted from the study this one was sized from (`pilot`; `against_plan` built both)."""
    from ftstudy.analysis import measures, power

    if planned.empty:
        return "**Could detect:** no comparison of this question has finished."
    parts = []
    for _, r in planned.iterrows():
        unit = measures.unit(r["metric"])
        to = pd.to_numeric(r["to"], errors="coerce")
        where = ("" if pd.isna(r["to"]) or r["to"] is None else
                 f" (with {int(to)} examples)" if pd.notna(to) else f" (on {r['to']})")
        proxy = r.get("planned_metric")
        proxy = (f" from its {proxy}, as that study had no {r['metric']}"
                 if isinstance(proxy, str) and proxy != r["metric"] else "")
        planned_text = (f"; planned {r['planned']:.3f}{proxy}" if pd.notna(r["planned"]) else "; no plan")
        spread = (f", the least sensitive method {r['achieved_max']:.3f}"
                  if r["achieved_max"] > r["achieved"] * 1.5 else "")
        parts.append(f"{r['task']}{where} {r['achieved']:.3f} {unit}{spread} on {int(r['items'])} items x "
                     f"{int(r['seeds'])} seed{'s' if r['seeds'] != 1 else ''}{planned_text}{_why_off_plan(r)}")
    source = (f"planned: what `ftstudy plan` predicted for these items and seeds from `{pilot}`'s variances"
              if pilot else "no plan named")
    few = (f" Fewer than {power.MIN_SEEDS} seeds, the planner's minimum: there the crossed interval undercovers, "
           "so these figures are optimistic." if (planned["seeds"] < power.MIN_SEEDS).any() else "")
    what = ("the median method's smallest change against its reference" if planned["to"].isna().all() else
             "the smallest change of the gap between the two methods")
    return (f"**Could detect** ({what} found with 80% power, two-sided 5%, "
            f"before Holm, training randomness included; {source}): " + "; ".join(parts) + "." + few)


def front_page(params: Params, study: Tables, outputs: Path, gen: Path, stale: dict | None, n_runs: int,
               other_precision: list[str] = (), rates: str = "", planned=None):
    """The book's first page, leading with the four answers, each with the change it could
    detect (`planned`: `power.against_plan`, as predicted and as achieved); then what ran (and
    which runs are stale, or ran in another precision than this machine would:
    `other_precision`), the headline figure, the learning-forgetting curves and the cost.
    Returns (markdown, answers, citations)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftstudy.analysis import views
    from ftstudy.narrative import answers
    from ftstudy.book import plots

    ans, cit = answers.build(study.as_dict())
    tables_ = cit.tables  # with each comparison's verdict
    main = answers.main_condition(tables_["aggregated"], tables_.get("contrasts")) if "aggregated" in tables_ else None
    figs = gen / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    _, runs = views.labelled(study.results, study.runs)
    done = runs[runs["status"] == "done"]
    hw = _hardware(outputs, done)
    wall = _wall_span(outputs)
    lines = [f"# {params.study}: the answers", "",
             f"{_runs_done(runs, study.tuning, n_runs)} on {hw}; {wall}. "
             "How to read the verdicts, and what the runs rest on: below the answers.", ""]
    if rates:
        lines += [rates, ""]
    about = ["## How these answers are made", "",
             "Every sentence above is generated from the study's tables: every number links "
             "to the runs it was computed from (Provenance), every verdict to its row of the Verdicts page, "
             "where one rule decides them all. Read *separated* as: on several seeds, the paired test rejects "
             "\"no change\" after Holm's correction and the interval excludes zero, with training randomness "
             "and item sampling both in them (seeds crossed with items, a t interval); *single seed*: the same "
             "on one seed's items, where training randomness is unmeasured, so not called *separated*. "
             "One-seed intervals are 95% paired bootstrap intervals over items. A smallest detectable change is "
             "the one a verdict would find with 80% power at a two-sided 5% level, training randomness included.",
             ""]
    if stale is None:
        about += ["Fingerprints were not checked against today's code (no data mirror to hash).", ""]
    else:
        flagged = sorted(r for r, why in stale.items() if why)
        about += [f"**{len(flagged)} of {len(stale)} runs are stale**: their code, packages or data "
                  f"changed since they ran (see Provenance): {', '.join(flagged)}." if flagged else
                  f"All {len(stale)} runs' fingerprints match today's code, packages and data.", ""]
    if other_precision:
        here = precision.resolve_dtype("auto")
        about += [f"{len(other_precision)} of {len(stale)} runs ran in another precision than `dtype: auto` "
                  f"means on this machine ({here}): their numbers stand as recorded, but rerun here they "
                  "would compute in that precision (`ftstudy run` calls them stale).", ""]
    link = lambda c: verdict_link(c) or (f"{{ref}}`{c['text']} <{cite_label(c['run_ids'])}>`" if c["run_ids"]
                                          else c["text"])
    figures = {}
    if main is not None:
        fig = plots.headline(tables_["aggregated"], main)
        fig.savefig(figs / "headline.png", dpi=100, bbox_inches="tight")
        fig.savefig(outputs / "headline.png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        figures["q1"] = ["```{figure} figures/headline.png", ":name: headline", "",
                         "Each method's paired change vs its reference (the base model; the 4-bit base for QLoRA) "
                         "in the main condition, 95% interval; filled: the verdict is *separated* (Verdicts page).",
                         "```"]
        if not study.curve.empty:
            path = views.learning_path(study.curve)
            path = path[(path["model"] == main.model) & (path["train_data"] == main.train_data)
                        & (path["train_size"] == main.train_size)]
            fig = plots.learning_forgetting_curves(path, tables_.get("matched"))
            fig.savefig(figs / "curves.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
            figures["q2"] = ["```{figure} figures/curves.png", "",
                             "Learning and forgetting along training: bits per byte gained on the target (x) "
                             "against bits per byte lost on another held-out task (y) since step 0, one line per "
                             "method; dotted: the matched learning level.", "```"]
    for q, sentences in ans.items():
        lines += [f"## {answers.QUESTIONS[q]}", "", cit.render(sentences[0], link), ""]
        if planned is not None and not planned.empty:
            lines += [detectable_line(planned[planned["question"] == q], params.planned_from), ""]
        lines += figures.get(q, [])
        if len(sentences) > 1:  # the comparisons behind the lead, folded
            lines += ["", "````{dropdown} Every comparison behind this answer", "",
                      *(f"- {cit.render(x, link)}" for x in sentences[1:]), "````"]
        lines.append("")
    lines += about
    if main is not None:
        lines += ["## Cost", "", f"Per method in the main condition ({main.model}, {main.train_data}, {int(main.train_size)} "
                  f"examples): the mean of its runs (one per seed), measured on {hw}.", "",
                  _cost_markdown(runs, main), ""]
    lines += ["## Runs behind the numbers", "",
              "The detailed results page has every table; the provenance page lists each run's parameters, "
              "versions, data hashes, fingerprint and executed notebook.", ""]
    return "\n".join(lines), ans, cit


def _hardware(outputs: Path, done) -> str:
    """The CPU (or GPU) the runs measured, from their env.json: the kind every figure depends on."""
    kinds = set()
    for rid in done["run_id"]:
        env = outputs / "runs" / rid / "env.json"
        if env.is_file():
            hw = results.read_json(env).get("hardware") or {}
            cpu = hw.get("cpu") or {}
            kinds.add(hw["gpu"] if hw.get("gpu") else
                      f"{hw.get('cpus')} CPU cores, {cpu.get('torch_cpu_capability', '?')}, native bf16 "
                      f"{'yes' if cpu.get('native_bf16') else 'no'}")
    return "; ".join(sorted(kinds)) or "unrecorded hardware"


def _runs_done(runs: pd.DataFrame, trials: pd.DataFrame, n_runs: int) -> str:
    """'N of M runs done, T of them learning-rate trials (F failed)': the study's runs and the
    trials its rates rest on, both run folders of the grid (`n_runs` of them)."""
    done = int((runs["status"] == "done").sum()) if len(runs) else 0
    failed = len(runs) - done
    tried = int((trials["status"] == "done").sum()) if len(trials) else 0
    failed += len(trials) - tried
    of_them = f", {tried} of them learning-rate trials" if len(trials) else ""
    return f"{done + tried} of {n_runs} runs done{of_them} ({failed} failed)"


def _wall_span(outputs: Path) -> str:
    from ftstudy.record import export

    statuses = [results.read_json(f) for f in sorted((outputs / "runs").glob("*/status.json"))]
    span = export.wall_span_s(statuses) if statuses else 0
    parts = len(export.sittings(statuses)) if statuses else 0
    if not span:
        return "wall time not recorded"
    return (f"first run start to last run end {span / 60:.0f} min" if parts <= 1 else
            f"{span / 60:.0f} min from first run start to last run end within each of {parts} sittings, summed")


def chance_lines(study: Tables) -> list[str]:
    """For each reference model and multiple-choice task: its accuracy next to chance and
    the majority-answer baseline, with the 95% interval of the accuracy (Wilson)."""
    from ftstudy.analysis import stats

    b, r = study.baselines, study.results
    if b.empty:
        return []
    out = []
    for _, row in b[b["method"].isin(REFERENCES)].iterrows():
        acc = r[(r["run_id"] == row["run_id"]) & (r["task"] == row["task"]) & (r["metric"] == "acc")]
        if acc.empty:
            continue
        n = int(row["n_items"])
        k = round(float(acc["value"].iloc[0]) * n)
        lo, hi = stats.wilson_interval(k, n)
        where = ("above" if lo > row["chance"] else "below" if hi < row["chance"]
                 else "not distinguishable from")
        out.append(f"- {row['model']} {row['method']} on {row['task']}: accuracy {k / n:.2f} "
                   f"(95% CI {lo:.2f} to {hi:.2f}, {n} items), {where} chance ({row['chance']:.2f}); "
                   f"majority-answer baseline {row['majority_baseline']:.2f}.")
    return out


def data_dir_is_mirror(params: Params) -> bool:
    return paths.data_dir(params.data_dir) is not None

"""The report: the study's tables (built once, in memory) -> generated pages and README block
-> executed analysis notebook -> Jupyter Book (1.x) HTML.

Nothing is executed twice: run notebooks are executed by the grid, the analysis notebook
once here, and the book is built with execution off.
"""
from __future__ import annotations

import os
from pathlib import Path

from ftstudy.analysis import tables
from ftstudy.book import jupyter, pages
from ftstudy.book.readme import Refused, readme_block, update_readme
from ftstudy.compute import paths, results
from ftstudy.config.params import Params
from ftstudy.record import fingerprint, records

__all__ = ["Refused", "build", "check_inputs"]


def check_inputs(params: Params, outputs: Path, cells: list[dict], readme: Path | None,
                 allow_fewer_runs: bool = False) -> list[str]:
    """Refuse (`Refused`, one line naming the file) what would make a report lose or falsify
    what is written: a results folder that does not exist or holds no run of the grid, a
    damaged run record (`records.RecordError`), a README without the study's answers block, or
    one whose answers came from more finished runs than there are now (unless
    `allow_fewer_runs`). Returns the grid's finished runs. Writes nothing."""
    if not outputs.is_dir():
        raise Refused(f"results folder {outputs} does not exist (no run to report)")
    found = records.finished_runs(outputs, [c["run_id"] for c in cells])
    if not found:
        raise Refused(f"{outputs} holds no run of {params.study}'s grid ({len(cells)} cells, e.g. "
                      f"runs/{cells[0]['run_id'] if cells else '?'}): wrong folder or params file?")
    done = [r for r in found if records.read_json(outputs / "runs" / r / "status.json").get("status") == "done"]
    if readme is not None:
        m, before = readme_block(Path(readme).read_text(), params.study)
        if m is None:
            raise Refused(f"{readme}: no '<!-- answers:{params.study} -->' ... '<!-- /answers:{params.study} -->' "
                          "block to fill")
        if before is not None and len(done) < before and not allow_fewer_runs:
            raise Refused(f"{readme}: its {params.study} answers come from {before} finished runs, {outputs} has "
                          f"{len(done)}: not rewritten from fewer (pass --allow-fewer-runs to do so)")
    return done


def against_plan(params: Params, study: tables.Tables):
    """The change each question could detect, as achieved and as the planner predicted it from
    the study `planned_from` names (its tables rebuilt from its run records); None without one."""
    from ftstudy.analysis import power
    from ftstudy.config import params as params_mod
    from ftstudy.narrative import answers
    from ftstudy.planning import grid, tuning
    from ftstudy.record import export

    main = answers.main_condition(study.aggregated, study.contrasts) if not study.aggregated.empty else None
    if params.planned_from is None or main is None:
        return None
    folder = params_mod.planned_folder(params)
    pilot_params = params_mod.load(export.params_file(folder), for_compute=False)
    print(f"report: the plan's variances from {params.planned_from}", flush=True)
    pilot = tables.collect(folder, grid.expand(pilot_params, folder), tuning.configured_rates(pilot_params))
    return power.against_plan(power.variances(pilot.aggregated, pilot.contrasts), study.detectable,
                              study.aggregated, tuple(main), contrasts=study.contrasts)


def build(params: Params, book: bool = True, book_dir: str | Path | None = None,
          results_dir: str | Path | None = None, readme: str | Path | None = None,
          allow_fewer_runs: bool = False) -> Path:
    """Collect the tables, write them and the generated pages, execute the analysis notebook,
    build the book. `results_dir`: read the runs from there (e.g. committed results) instead
    of the params file's output_dir; nothing is trained or evaluated either way. `readme`:
    also refresh that file's generated answers block (see `readme.update_readme`)."""
    import papermill

    from ftstudy.narrative import answers
    from ftstudy.planning import grid, tuning
    from ftstudy.run import cell as cell_mod

    root = paths.project_root()
    outputs = Path(results_dir or params.output_dir).resolve()
    book_dir = Path(book_dir) if book_dir else root / "book"
    gen = book_dir / "generated"
    cells = grid.expand(params, outputs)
    done = check_inputs(params, outputs, cells, readme, allow_fewer_runs)
    gen.mkdir(parents=True, exist_ok=True)
    print(f"report: collecting the tables of {len(cells)} cells", flush=True)
    study = tables.collect(outputs, cells, tuning.configured_rates(params))
    study.write(outputs)
    (gen / "methods.md").write_text(pages.methods_page(params, cells))
    data_dir = paths.data_dir(params.data_dir)
    checked = ({c["run_id"]: cell_mod.staleness(c, outputs, data_dir) for c in cells
                if (outputs / "runs" / c["run_id"] / "status.json").is_file()} if data_dir else None)
    stale, other_precision = None, []
    if checked is not None:  # a recorded precision unlike this machine's: said apart, not stale
        stale = {}
        for r, why in checked.items():
            rest = fingerprint.code_and_data_differences(why)
            recorded = outputs / "runs" / r / "fingerprint.json"
            if rest != why and (results.read_json(recorded).get("compute") or {}).get("dtype"):
                other_precision.append(r)
                why = rest
            stale[r] = why
    (gen / "verdicts.md").write_text(pages.verdicts_page(study.verdicts))
    rates = answers.rates_source(params, study.tuning)
    planned = against_plan(params, study)
    if planned is not None:
        planned.to_csv(outputs / "planned.csv", index=False)
    front, ans, cit = pages.front_page(params, study, outputs, gen, stale, len(cells), other_precision, rates,
                                       planned)
    (gen / "front.md").write_text(front)
    (outputs / "answers.md").write_text(answers.markdown(ans, cit) + "\n")
    if readme is not None:
        here = Path(readme).resolve().parent
        update_readme(Path(readme), params.study, answers.markdown(ans, cit, brief=True),
                      os.path.relpath(outputs / "headline.png", here), os.path.relpath(outputs / "answers.md", here),
                      len(done))
    groups = {pages.cite_label(c["run_ids"]): c["run_ids"] for c in cit.cited if c["run_ids"]}
    (gen / "provenance.md").write_text(pages.provenance_page(outputs, book_dir, {c["run_id"] for c in cells}, stale,
                                                             groups))
    (gen / "limitations.md").write_text(pages.limitations_page(params, study))
    executed = gen / "analysis.ipynb"
    print("report: executing the analysis notebook", flush=True)
    papermill.execute_notebook(
        str(root / "notebooks" / "analysis.ipynb"), str(executed),
        parameters={"outputs_dir": str(outputs), "study": params.study, "learning_rates": rates},
        cwd=str(root), progress_bar={"desc": "report: analysis cells", "unit": "cell"},
        extra_arguments=["--IPKernelApp.log_level=ERROR"])
    jupyter.hide_parameter_cells(executed)
    if book:
        jupyter.with_heartbeat([jupyter.executable("jupyter-book"), "build", str(book_dir), "--quiet"],
                               "report: building the book")
        print(f"book: {book_dir / '_build' / 'html' / 'index.html'}")
    return book_dir

"""Bad input to the commands that write results or README is refused in one line that names
the file, before anything is written: nothing already there is lost or falsified."""
import shutil

import pytest

from conftest import ROOT
from ftstudy import cli
from ftstudy.record import export
from ftstudy.planning import grid
from ftstudy.config import params
from ftstudy.book import report

# The previous CPU study (21 runs, kept under its date): a committed study that does not move.
STUDY = ROOT / "results" / "cpu-study-2026-11-28"
PARAMS = str(ROOT / "params" / "cpu-study-2026-11-28.yaml")
BLOCK = "intro\n<!-- answers:cpu-study from 21 runs -->\nthe committed answers\n<!-- /answers:cpu-study -->\nend\n"


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def readme(tmp_path):
    f = tmp_path / "README.md"
    f.write_text(BLOCK)
    return f


def _report(capsys, results, readme, *extra):
    rc = cli.main(["report", PARAMS, "--results", str(results), "--readme", str(readme), "--no-book", *extra])
    return rc, capsys.readouterr().err.strip()


def test_a_results_folder_that_does_not_exist_is_refused(tmp_path, readme, capsys, data_dir):
    missing = tmp_path / "typo"
    rc, err = _report(capsys, missing, readme)
    assert rc == 2 and "does not exist" in err and str(missing) in err and len(err.splitlines()) == 1
    assert not missing.exists() and readme.read_text() == BLOCK


def test_a_folder_with_no_run_of_the_grid_is_refused(tmp_path, readme, capsys, data_dir):
    other = tmp_path / "other"
    (other / "runs" / "0123456789ab").mkdir(parents=True)
    (other / "runs" / "0123456789ab" / "status.json").write_text('{"status": "done"}')
    before = _snapshot(other)
    rc, err = _report(capsys, other, readme)
    assert rc == 2 and "holds no run of cpu-study's grid" in err
    assert _snapshot(other) == before and readme.read_text() == BLOCK


def test_a_damaged_record_is_named_in_one_line_and_nothing_is_written(tmp_path, readme, capsys, data_dir):
    results = tmp_path / "results"
    shutil.copytree(STUDY, results)
    damaged = sorted((results / "runs").glob("*/metrics.json"))[3]
    damaged.write_text(damaged.read_text()[:200])  # truncated
    before = _snapshot(results)
    rc, err = _report(capsys, results, readme)
    assert rc == 2 and str(damaged) in err and "not valid JSON" in err and len(err.splitlines()) == 1
    assert _snapshot(results) == before and readme.read_text() == BLOCK


def test_readme_answers_are_not_rewritten_from_fewer_runs(tmp_path, readme, capsys, data_dir):
    results = tmp_path / "results"
    shutil.copytree(STUDY, results)
    for run in sorted((results / "runs").iterdir())[:3]:
        shutil.rmtree(run)
    before = _snapshot(results)
    rc, err = _report(capsys, results, readme)
    assert rc == 2 and "from 21 finished runs" in err and "has 18" in err and "--allow-fewer-runs" in err
    assert _snapshot(results) == before and readme.read_text() == BLOCK
    p = params.load(PARAMS, for_compute=False)
    cells = grid.expand(p, results)
    assert len(report.check_inputs(p, results, cells, readme, allow_fewer_runs=True)) == 18  # when asked to


def test_a_readme_without_the_studys_block_is_refused(tmp_path, capsys, data_dir):
    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    results = tmp_path / "results"
    shutil.copytree(STUDY, results)
    before = _snapshot(results)
    rc, err = _report(capsys, results, readme)
    assert rc == 2 and "no '<!-- answers:cpu-study -->'" in err and _snapshot(results) == before


def test_export_checks_everything_before_it_writes(tmp_path, data_dir):
    """Export refuses a damaged record and a destination whose runs it would drop, leaving the
    destination as it was; with --replace it replaces them."""
    p = params.load(PARAMS, for_compute=False)
    outputs = tmp_path / "outputs"
    shutil.copytree(STUDY, outputs)
    cells = grid.expand(p, outputs)
    dest = tmp_path / "committed"
    (dest / "runs" / "oldrun").mkdir(parents=True)
    (dest / "runs" / "oldrun" / "status.json").write_text("{}")
    (dest / "aggregated.csv").write_text("committed table\n")
    before = _snapshot(dest)
    with pytest.raises(ValueError, match="holds 1 run.*--replace"):
        export.export(outputs, cells, dest, PARAMS)
    assert _snapshot(dest) == before
    damaged = sorted((outputs / "runs").glob("*/status.json"))[0]
    damaged.write_text("{")
    with pytest.raises(ValueError, match=f"{damaged}: damaged record"):
        export.export(outputs, cells, dest, PARAMS, replace=True)
    assert _snapshot(dest) == before
    damaged.write_text((STUDY / "runs" / damaged.parent.name / "status.json").read_text())
    done = export.export(outputs, cells, dest, PARAMS, replace=True)
    assert done["runs"] == 21 and not (dest / "runs" / "oldrun").exists()
    assert (dest / "aggregated.csv").read_text() == "committed table\n"  # only runs/ and README are export's


def test_a_resumed_grid_counts_its_sittings_not_the_idle_gap_between_them():
    """Cells run 10:00-10:10 and 10:10-10:20, the grid is resumed two hours later for one more
    cell of 5 minutes: 25 min of wall time in two sittings, not the 2 h 25 min between the
    first start and the last end."""

    statuses = [dict(started="2026-12-05T10:00:00", wall_s=600.0), dict(started="2026-12-05T10:10:05", wall_s=595.0),
                dict(started="2026-12-05T12:20:00", wall_s=300.0)]
    assert len(export.sittings(statuses)) == 2
    assert export.wall_span_s(statuses) == 1500.0
    assert export.wall_span_s(statuses[:2]) == 1200.0  # one sitting: first start to last end

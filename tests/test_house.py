"""The house: no import cycles in the library, executors registered beside each other, and
stable run ids (a refactor must not change which cells count as done)."""
import ast
import sys
import types

import ftstudy

from ftstudy.run import executors
from ftstudy.planning import grid
from ftstudy.config import params
from conftest import ROOT, write_params

LIB = ROOT / "lib" / "ftstudy"
# The run ids of params/cpu.yaml: pinned, so that moving code never re-runs a finished study.
# Changed deliberately on 2026-12-05 (issue 25, the short demo): zero-step controls, the Alpaca
# training set and GSM8K generation left the default (evaluation stays float32).
CPU_RUN_IDS = ["b8c24a652ea2", "47ed0314de63", "236d6e07a597", "62668cfcb68e", "76e12874e838", "15536c055efe",
               "a2ae321e1cff", "41e0a9816a3a"]


def module_name(path) -> str:
    rel = path.relative_to(LIB).with_suffix("")
    return ".".join(rel.parts)


def import_graph() -> dict[str, set[str]]:
    """Module ("compute.train", "cli") -> library modules it imports (at any depth in the file,
    lazy imports too)."""
    files = {module_name(p): p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}
    mods = set(files)
    graph = {}
    for m, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftstudy"):
                base = node.module[len("ftstudy."):] if node.module != "ftstudy" else ""
                for a in node.names:
                    full = f"{base}.{a.name}" if base else a.name
                    deps.add(full if full in mods else (base or f"{a.name}.__init__"))
            elif isinstance(node, ast.Import):
                deps |= {a.name[len("ftstudy."):] for a in node.names if a.name.startswith("ftstudy.")}
        graph[m] = {d for d in deps if d and d in mods | set(ftstudy.STAGES)} - {m}
    return graph


def stage(module: str) -> int:
    """A module's place in `ftstudy.STAGES`; top-level modules (the commands) come after all."""
    first = module.split(".")[0]
    return ftstudy.STAGES.index(first) if first in ftstudy.STAGES else len(ftstudy.STAGES)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if stage(d) > stage(m))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_library_has_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"grid": {"slurm"}, "slurm": {"grid"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_each_stage_imports_only_downward():
    """No stage imports a later one: compute never imports a reporting module, the executors
    know nothing of the grid, analysis never reaches into the book."""
    graph = import_graph()
    assert set(ftstudy.STAGES) == {p.name for p in LIB.iterdir() if (p / "__init__.py").is_file()}
    assert upward_imports(graph) == []
    for name, module in executors.REGISTRY.items():
        assert "planning.grid" not in graph[module[len("ftstudy."):]], name


def test_the_stage_checker_sees_an_upward_import():
    assert upward_imports({"compute.train": {"book.plots"}, "book.plots": {"compute.train"}}) == [
        "compute.train -> book.plots"]


def test_cpu_yaml_run_ids_are_stable(data_dir):
    cells = grid.expand(params.load(ROOT / "params" / "cpu.yaml"))
    assert [c["run_id"] for c in cells] == CPU_RUN_IDS


def test_a_third_executor_is_one_module_and_one_registry_entry(tiny_model_dir, data_dir, tmp_path,
                                                               monkeypatch):
    """Register an executor that records what it was asked to run (without running it)."""
    seen = []
    module = types.ModuleType("ftstudy_test_executor")
    module.check_available = lambda: None
    module.run_cells = lambda cells, outputs, data_dir, options, log=print: (
        seen.append((len(cells), options)) or {c["run_id"]: "failed" for c in cells})
    monkeypatch.setitem(sys.modules, "ftstudy_test_executor", module)
    monkeypatch.setitem(executors.REGISTRY, "recorder", "ftstudy_test_executor")
    path = write_params(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "out", methods=("lora",),
                        executor={"kind": "recorder", "options": {"queue": "q1"}})
    states = grid.run(params.load(path))
    assert seen == [(2, {"queue": "q1"})] and set(states.values()) == {"failed"}


def test_the_local_executor_says_what_a_running_cell_is_doing(tmp_path, monkeypatch, capsys):
    """A cell's progress.json (written by training and evaluation) shows up as lines while
    the cell runs: phase, step i/n and loss."""
    import time

    from ftstudy.run import local
    from ftstudy.compute import progress

    def slow_cell(cell, outputs, data_dir):
        run = outputs / "runs" / f".tmp-{cell['run_id']}"
        run.mkdir(parents=True)
        for step in (1, 2, 3):
            progress.report(run, "training step", step, 3, loss=1.0 / step)
            time.sleep(0.4)
        progress.report(run, "evaluating hellaswag, task", 1, 2)
        time.sleep(0.4)
        return "done"

    monkeypatch.setattr(local, "run_cell", slow_cell)
    cell = {"run_id": "abc", "method": "lora", "model_name": "m", "train_data": "gsm8k",
            "train_size": 8, "seed": 0}
    lines = []
    states = local.run_cells([cell], tmp_path, None, {"progress_line_s": 0.3}, log=lines.append)
    out = capsys.readouterr()
    shown = out.out + out.err
    assert states == {"abc": "done"} and lines[-1].startswith("[1/1] done")
    assert "[1/1] m lora gsm8k n=8 seed=0: training step" in shown and "(loss " in shown
    assert "evaluating hellaswag, task 1/2" in shown


def test_the_code_fingerprint_is_the_compute_package(tmp_path, monkeypatch):
    """Editing a compute module makes a cell stale; editing any other package does not."""
    from ftstudy.record import fingerprint

    nb = ROOT / "notebooks" / "lora.ipynb"
    before = fingerprint.code_hash(nb)["lib"]
    assert {p.name for p in fingerprint.compute_sources()} >= {"train.py", "evaluate.py", "recipe.py"}
    copy = tmp_path / "compute"
    copy.mkdir()
    for p in fingerprint.compute_sources():
        (copy / p.name).write_text(p.read_text())
    monkeypatch.setattr(fingerprint, "compute_sources", lambda: sorted(copy.glob("*.py")))
    assert fingerprint.code_hash(nb)["lib"] == before
    (copy / "train.py").write_text((copy / "train.py").read_text() + "\n# edited\n")
    assert fingerprint.code_hash(nb)["lib"] != before


def test_no_csv_is_read_back_between_library_modules():
    """Tables pass in memory (`tables.Tables`); CSV is written for readers, and read back only
    by `Tables.read` (the analysis notebook's door), never by another library module."""
    readers = []
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                calls = [n for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr == "read_csv"]
                if calls:
                    readers.append(f"{module_name(path)}.{node.name}")
    assert set(readers) == {"analysis.tables.read", "analysis.tables.one"}, readers  # Tables.read and its helper


def test_every_ftstudy_name_outside_the_library_resolves():
    """The Makefile, the benchmarks and the notebooks name library modules by dotted path or
    import them; after a move every such name must still import (a fresh `make setup` checks
    `ftstudy.compute.models`)."""
    import importlib
    import json
    import re

    texts = {ROOT / "Makefile": (ROOT / "Makefile").read_text()}
    texts.update({p: p.read_text() for p in (ROOT / "bench").glob("*.py")})
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        texts[nb] = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"]
                              if c["cell_type"] == "code")
    missing = []
    for path, text in texts.items():
        for dotted in set(re.findall(r"\bftstudy(?:\.[a-z_]+)+", text)):
            try:
                importlib.import_module(dotted)
            except ImportError:
                parent, _, name = dotted.rpartition(".")
                if not hasattr(importlib.import_module(parent), name):
                    missing.append(f"{path.name}: {dotted}")
        for base, names in re.findall(r"^\s*from (ftstudy(?:\.[a-z_]+)*) import ([\w, ]+)", text, flags=re.M):
            module = importlib.import_module(base)
            for name in (n.split()[0] for n in names.split(",") if n.strip()):
                if not hasattr(module, name) and importlib.util.find_spec(f"{base}.{name}") is None:
                    missing.append(f"{path.name}: {base}.{name}")
    assert not missing, missing

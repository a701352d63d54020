"""Progress of a running cell: the notebook's library calls write `progress.json` in the run
folder (phase, step i/n, task k/m); the executors read it to show what a cell is doing."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = "progress.json"


def report(run_dir: str | Path, phase: str, done: int | None = None, total: int | None = None,
           **info) -> None:
    """Record what the cell is doing now (atomically: a reader never sees half a file)."""
    path = Path(run_dir) / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(dict(phase=phase, done=done, total=total, time=time.time(), **info)))
        tmp.replace(path)
    except OSError:  # progress is a courtesy: never fail a cell for it
        pass


def read(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None


def describe(state: dict | None) -> str:
    """One short line: 'training step 3/8, loss 1.234' or 'evaluating hellaswag (task 2/5)'."""
    if not state:
        return "starting (kernel, imports, loading the model)"
    text = state["phase"]
    if state.get("done") is not None and state.get("total"):
        text += f" {state['done']}/{state['total']}"
    extra = {k: v for k, v in state.items() if k not in ("phase", "done", "total", "time")}
    if extra:
        text += " (" + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in extra.items()) + ")"
    return text


def watch(future, run_dir: Path, show, every_s: float = 2.0, line_every_s: float = 10.0,
          line=None) -> None:
    """While `future` runs, read the cell's progress every `every_s` and pass its description
    to `show`; every `line_every_s` also to `line` (a log line, for logs without a bar)."""
    start = last_line = time.time()
    every_s = min(every_s, line_every_s)
    state = None
    while not future.done():
        try:
            future.result(timeout=every_s)
        except Exception:  # noqa: BLE001  (raised again by the caller's future.result())
            pass
        state = read(run_dir) or state  # the folder is renamed into place at the very end
        text = f"{describe(state)}, {time.time() - start:.0f} s"
        show(text)
        if line is not None and time.time() - last_line >= line_every_s and not future.done():
            line(text)
            last_line = time.time()

"""ftstudy: compare fine-tuning methods for small causal LMs, reproducibly.

The flow params -> grid -> cell -> run folder -> tables -> verdicts -> sentences -> book is
the package tree. `STAGES` lists the subpackages bottom-up: each imports only from itself and
the stages before it (tests/test_house.py checks), and the commands (`cli`, `verify`) sit on top.
Only `compute` computes a cell's numbers, so a run's code fingerprint hashes that package.

Importing ftstudy first sets thread settings that must be in place before torch loads:
on shared CPU cores OpenMP's busy-waiting makes training 8-35x slower.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

STAGES = (
    "compute",    # what one cell computes: models, methods, data, training, evaluation, its records
    "record",     # reading run folders: fingerprints, per-sample logs, damaged records, export
    "run",        # running cells: papermill into a run folder; the executors (local, Slurm)
    "config",     # the params schema, checked before any compute
    "planning",   # a params file expanded into cells; learning-rate trials; time estimates
    "analysis",   # tables (in memory), statistics, measures, the one verdict rule, power
    "narrative",  # the answers as sentences, each citing its verdicts
    "book",       # pages, figures, the README block, the Jupyter Book build
)

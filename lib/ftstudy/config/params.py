"""Params files: the schema of `params/*.yaml`, checked before any compute.

Errors name the file, the key path and what is allowed, with no Python traceback:
a night of compute must not die on a typo at cell 40. Defaults are `ftstudy.compute.defaults`'s,
tasks `ftstudy.compute.tasks`'s.
"""
from __future__ import annotations

import difflib
import itertools
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftstudy.compute import data, defaults, evaluate, methods, tasks


class ParamsError(ValueError):
    """A params file is malformed; the message says where and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GGUFSource(_Strict):
    path: str | None = None
    package: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_way(self):
        if (self.path is None) == (self.package is None):
            raise ValueError("give either 'path' or 'package' + 'file'")
        if self.package is not None and not self.file:
            raise ValueError("'package' needs 'file' (the GGUF file name inside the package)")
        return self


class ModelEntry(_Strict):
    hub: str | None = None
    path: str | None = None
    gguf: GGUFSource | None = None
    revision: str | None = None
    # auto: bf16 where the hardware computes it natively (CUDA, AVX512-BF16/AMX), else fp32.
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = defaults.MODEL["dtype"]
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("hub", "path", "gguf") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one model source of hub, path, gguf (got {given or 'none'})")
        return self

    def source(self) -> dict:
        return self.model_dump(exclude_none=True, exclude={"dtype"})


class TaskEntry(_Strict):
    limit: int | None = Field(default=None, gt=0)
    num_fewshot: int | None = Field(default=None, ge=0)


class Evaluation(_Strict):
    batch_size: int = Field(default=defaults.EVALUATION["batch_size"], gt=0)
    # One precision for every run and its reference (fp32: no update rounded away; `auto`:
    # bf16 where this machine computes it natively, else fp32, for a quick demo).
    dtype: Literal["float32", "bfloat16", "auto"] = defaults.EVALUATION["dtype"]
    # Seeds the random item subset of each task with a limit: the same items for every run.
    sample_seed: int = defaults.EVALUATION["sample_seed"]
    tasks: dict[str, TaskEntry]

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v):
        for name in v:
            if name not in tasks.REGISTRY:
                raise ValueError(f"unknown task {name!r}; allowed: {sorted(tasks.REGISTRY)}")
        return v


class Training(_Strict):
    max_steps: int = Field(default=defaults.TRAINING["max_steps"], gt=0)
    batch_size: int = Field(default=defaults.TRAINING["batch_size"], gt=0)
    gradient_accumulation_steps: int = Field(default=defaults.TRAINING["gradient_accumulation_steps"], gt=0)
    max_length: int = Field(default=defaults.TRAINING["max_length"], gt=8)
    # None: each method's own rate (`methods.METHODS`, else TRAINING's).
    learning_rate: float | None = Field(default=None, gt=0)
    lr_scheduler_type: str = defaults.TRAINING["lr_scheduler_type"]
    warmup_ratio: float = Field(default=defaults.TRAINING["warmup_ratio"], ge=0, lt=1)
    weight_decay: float = Field(default=defaults.TRAINING["weight_decay"], ge=0)
    max_grad_norm: float = Field(default=defaults.TRAINING["max_grad_norm"], gt=0)
    keep_checkpoints: bool = defaults.TRAINING["keep_checkpoints"]
    # Passes over the training set; when set it fixes the steps (size x epochs / batch), so
    # "more data" is not also "more passes". Give either epochs or max_steps.
    epochs: float | None = Field(default=defaults.TRAINING["epochs"], gt=0)
    # Score the log-likelihood tasks every K steps during training (0: never): the learning-
    # forgetting curves (ftstudy.compute.curves). Single training process only.
    eval_every: int = Field(default=defaults.TRAINING["eval_every"], ge=0)
    # Packed batches and torch.compile (compute/defaults.py OPTIONAL_TRAINING: off unless true).
    padding_free: bool = False
    compile: bool = False

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if self.epochs is not None and "max_steps" in self.model_fields_set:
            raise ValueError("give either max_steps or epochs, not both")
        return self


class MethodEntry(_Strict):
    adapter: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    load: dict[str, Any] = Field(default_factory=dict)

    @field_validator("training")
    @classmethod
    def _training_delta(cls, v):
        Training.model_validate(v)  # same keys and bounds as the shared `training` section
        return v

    @field_validator("load")
    @classmethod
    def _load_keys(cls, v):
        allowed = {"dtype", "quantize_4bit", "master_fp32"}
        unknown = set(v) - allowed
        if unknown:
            raise ValueError(f"unknown load option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return v


class Tuning(_Strict):
    """A learning-rate sweep with the same trials for every method (before extensions):
    `factors` times each method's own rate, or explicit `learning_rates` per method. Each trial trains like
    the study's run and is scored on validation rows of its target set (`validation_limit`
    items); the lowest validation bits per byte wins, ties to the smaller rate."""
    factors: list[float] = Field(default_factory=lambda: [1 / 3, 1.0, 3.0])
    learning_rates: dict[str, list[float]] = Field(default_factory=dict)
    validation_limit: int | None = Field(default=64, gt=0)
    # While the best rate sits at an edge of the rates tried, one more trial a step beyond it
    # (the ratio of the two outermost rates on that side), at most `extend` per sweep: the
    # optimum is bracketed, or the book says it may lie beyond.
    extend: int = Field(default=0, ge=0)
    # "condition": every (model, method, data, size, seed) sweeps its own rates; "method": one
    # sweep per model and method, in that method's first condition (the main one), whose rate
    # every other condition of the method on that model trains at.
    per: Literal["condition", "method"] = "condition"
    # The seed every trial trains with (default: its condition's own). One outside the study's
    # seeds keeps the run the selection favoured out of the comparison: a trial chosen as the
    # best of several on the same seed is optimistic there (the winner's curse).
    seed: int | None = None

    @field_validator("factors")
    @classmethod
    def _factors(cls, v):
        if not v or any(f <= 0 for f in v) or len(set(v)) != len(v):
            raise ValueError(f"factors must be distinct positive numbers (got {v})")
        return v

    @field_validator("learning_rates")
    @classmethod
    def _rates(cls, v):
        for method, rates in v.items():
            if method not in methods.names():
                raise ValueError(f"unknown method {method!r}; allowed: {methods.names()}")
            if not rates or any(r <= 0 for r in rates) or len(set(rates)) != len(rates):
                raise ValueError(f"{method}: rates must be distinct positive numbers (got {rates})")
        return v


class Design(_Strict):
    """One part of a study that is not a full factorial: the values of the axes it varies.
    An axis it does not name is held at the study's first value (its default condition);
    `methods` defaults to every method, since methods are compared in every design."""
    models: list[str] | None = Field(default=None, min_length=1)
    methods: list[str] | None = Field(default=None, min_length=1)
    train_data: list[str] | None = Field(default=None, min_length=1)
    train_sizes: list[int] | None = Field(default=None, min_length=1)
    seeds: list[int] | None = Field(default=None, min_length=1)
    # Shared training settings for this design only (e.g. `eval_every` for curves on one seed).
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("training")
    @classmethod
    def _training_delta(cls, v):
        Training.model_validate(v)
        return v


class Tracking(_Strict):
    """Opt-in experiment tracking through the Trainer's integrations (ftstudy.compute.trackers):
    TensorBoard event files in each run folder, MLflow to a local file store, W&B offline.
    Credentials come from the environment only."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    experiment: str | None = None  # MLflow experiment / W&B project (default: "ftstudy")


class SlurmOptions(_Strict):
    """submitit's Slurm parameters (one job per cell); `additional` goes to sbatch as is."""
    partition: str | None = None
    time_min: int = Field(default=60, gt=0)
    gpus_per_node: int = Field(default=0, ge=0)
    cpus_per_task: int = Field(default=2, gt=0)
    mem_gb: float = Field(default=16, gt=0)
    array_parallelism: int = Field(default=32, gt=0)
    log_dir: str | None = None  # default: <output_dir>/slurm
    additional: dict[str, Any] = Field(default_factory=dict)


class Executor(_Strict):
    """Where cells run: a name of `ftstudy.run.executors.REGISTRY` (`local`: one after another
    here; `slurm`: a job per cell). `options` go to an executor without a typed section."""
    kind: str = "local"
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _registered(cls, v):
        from ftstudy.run.executors import REGISTRY
        if v not in REGISTRY:
            raise ValueError(f"unknown executor {v!r}; allowed: {sorted(REGISTRY)}")
        return v


class Distributed(_Strict):
    """How one cell trains: several processes under torchrun (DDP, or FSDP for models that
    do not fit one device). The global batch stays `training.batch_size`."""
    processes: int = Field(default=1, gt=0)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    backend: Literal["gloo", "nccl"] | None = None  # default: nccl with CUDA, else gloo


class Params(_Strict):
    study: str
    output_dir: str = "outputs"
    data_dir: str | None = None
    models: dict[str, ModelEntry]
    methods: dict[str, MethodEntry | None]
    train_data: dict[str, dict[str, float]]
    train_sizes: list[int]
    seeds: list[int] = Field(default_factory=lambda: [defaults.SEED])
    # Adds a zero-step cell per (model, method): the method applied, never trained. It must
    # score exactly as its reference (prompt tuning: its shift at initialisation).
    controls: bool = False
    training: Training = Field(default_factory=Training)
    # Absent: each method trains at its one configured rate. Present: a sweep (see Tuning).
    tuning: Tuning | None = None
    # Without a sweep of its own: the committed results folder of the study whose sweep chose
    # these rates (it holds that sweep's tuning.csv), e.g. results/cpu-sweep; the book says so.
    learning_rates_from: str | None = None
    # The committed results folder this study was sized from with `ftstudy plan` (a pilot or an
    # earlier study): the book sets the change the planner predicted this design would detect
    # (that folder's variances at this study's items and seeds) beside the change it achieved.
    planned_from: str | None = None
    # Absent: every model x method x training set x size x seed. Present: the union of these
    # designs (see Design), e.g. three seeds for the main comparison and one for the rest.
    designs: dict[str, Design] | None = None
    evaluation: Evaluation
    tracking: Tracking = Field(default_factory=Tracking)
    executor: Executor = Field(default_factory=Executor)
    distributed: Distributed = Field(default_factory=Distributed)

    def conditions(self) -> list[dict]:
        """The grid's design points: dicts of model, method, train_data, train_size, seed and
        design-level training delta, in order, without duplicates."""
        designs = self.designs or {"grid": Design(models=list(self.models), train_data=list(self.train_data),
                                                  train_sizes=self.train_sizes, seeds=self.seeds)}
        out, seen = [], {}
        for dname, d in designs.items():
            axes = [d.models or [next(iter(self.models))], d.methods or list(self.methods),
                    d.train_data or [next(iter(self.train_data))], d.train_sizes or self.train_sizes[:1],
                    d.seeds or self.seeds[:1]]
            for model, method, label, size, seed in itertools.product(*axes):
                key = (model, method, label, size, seed)
                if key in seen:
                    if seen[key] != d.training:
                        raise ValueError(f"designs: {dname} and another design both run {key} with "
                                         "different training settings; give each condition one design")
                    continue
                seen[key] = d.training
                out.append(dict(model=model, method=method, train_data=label, train_size=size,
                                seed=seed, training=d.training, design=dname))
        return out

    def has_curves(self) -> bool:
        """Whether any run scores a learning-forgetting curve (`eval_every` anywhere)."""
        deltas = [m.training for m in self.methods.values()] + [d.training for d in (self.designs or {}).values()]
        return bool(self.training.eval_every or any(t.get("eval_every") for t in deltas))

    def resolved_evaluation(self) -> dict:
        """The evaluation settings every cell gets: lm-eval settings of each task as resolved
        (limits None mean "all items")."""
        ev = evaluate.resolve(self.evaluation.model_dump(exclude_none=True))
        ev["tasks"] = {t: {k: v for k, v in (s or {}).items() if v is not None} for t, s in ev["tasks"].items()}
        return ev

    @model_validator(mode="after")
    def _batch_splits_over_processes(self):
        n = self.distributed.processes
        sizes = [self.training.batch_size] + [m.training["batch_size"] for m in self.methods.values()
                                              if "batch_size" in m.training]
        for b in sizes:
            if b % n:
                raise ValueError(f"distributed.processes={n} must divide training.batch_size={b} "
                                 "(the global batch is split over the processes)")
        if self.has_curves() and n > 1:
            raise ValueError("training.eval_every (curves) needs distributed.processes: 1")
        return self

    @model_validator(mode="after")
    def _designs_name_known_values(self):
        for dname, d in (self.designs or {}).items():
            for axis, known in (("models", self.models), ("methods", self.methods),
                                ("train_data", self.train_data), ("train_sizes", self.train_sizes),
                                ("seeds", self.seeds)):
                unknown = [v for v in getattr(d, axis) or [] if v not in known]
                if unknown:
                    raise ValueError(f"designs.{dname}.{axis}: {unknown} not in the study's {axis} "
                                     f"({list(known)})")
        self.conditions()  # refuses one condition with two training settings
        return self

    @model_validator(mode="after")
    def _fast_training_options_fit(self):
        """padding_free and compile: one training process."""
        n = self.distributed.processes
        shared = self.training.model_dump(exclude_unset=True)
        for cond in self.conditions():
            on = {**shared, **cond["training"], **self.methods[cond["method"]].training}
            if n > 1 and (on.get("compile") or on.get("padding_free")):
                raise ValueError("training.compile and training.padding_free are measured and tested in one "
                                 "training process: they need distributed.processes: 1")
        return self

    @model_validator(mode="after")
    def _one_source_of_rates(self):
        if self.tuning is not None and self.learning_rates_from is not None:
            raise ValueError("learning_rates_from: this study sweeps its own rates (tuning); name one source")
        return self

    @model_validator(mode="after")
    def _equal_tuning_budget(self):
        if self.tuning is None:
            return self
        for method in self.tuning.learning_rates:
            if method not in self.methods:
                raise ValueError(f"tuning.learning_rates.{method}: not a method of this study")
        counts = {m: len(self.tuning.learning_rates.get(m, self.tuning.factors)) for m in self.methods}
        if len(set(counts.values())) > 1:
            raise ValueError(f"tuning: every method needs the same number of trials (an equal tuning "
                             f"budget); got {counts}")
        return self

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v):
        for name in v:
            if name not in methods.names():
                raise ValueError(f"unknown method {name!r}; allowed: {methods.names()}")
        return {k: (e or MethodEntry()) for k, e in v.items()}

    @field_validator("train_data")
    @classmethod
    def _known_mixes(cls, v):
        for label, mix in v.items():
            for name, share in mix.items():
                if name not in data.TRAIN_SETS:
                    raise ValueError(f"{label}: unknown training set {name!r}; "
                                     f"allowed: {sorted(data.TRAIN_SETS)}")
                if not 0 < share <= 1:
                    raise ValueError(f"{label}.{name}: proportion {share} must be in (0, 1]")
            if abs(sum(mix.values()) - 1) > 1e-6:
                raise ValueError(f"{label}: proportions sum to {sum(mix.values()):g}, not 1")
        return v

    @field_validator("train_data")
    @classmethod
    def _distinct_mixes(cls, v):
        seen = {}
        for label, mix in v.items():
            key = tuple(sorted(mix.items()))
            if key in seen:
                raise ValueError(f"{label} and {seen[key]} are the same mix: duplicate cells")
            seen[key] = label
        return v

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, v):
        if not v or any(s <= 0 for s in v):
            raise ValueError(f"sizes must be positive integers (got {v})")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate sizes {v} would give duplicate cells")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate seeds {v} would give duplicate cells")
        return v


def _key_path(loc) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _closest(loc) -> str:
    """For an unknown key: the nearest valid key at that level, if one is close."""
    import typing

    node: Any = Params
    for part in loc[:-1]:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            node = field.annotation if field else None
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]          # a user-named key: step into its value type
        else:
            node = None
        for arg in typing.get_args(node) if typing.get_origin(node) in (typing.Union, type(int | None)) else []:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                node = arg
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return ""
    fields = list(node.model_fields)
    match = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (allowed: {', '.join(fields)})"


def load(path: str | Path, for_compute: bool = True) -> Params:
    """Read and validate a params file; raise ParamsError with file and key on any problem.
    `for_compute=False` reads it for finished results (report, export): the checks of how this
    machine would train and evaluate (model files, precision, GPU, trackers) are skipped, so committed
    results rebuild on any machine, e.g. a bf16 CPU reading a grid computed in fp32."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}:{where}: YAML syntax error: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of keys at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = err["loc"]
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + _closest(loc)
            elif err["type"] == "missing":
                msg = "required key is missing"
            lines.append(f"{path}: {_key_path(loc)}: {msg}")
        raise ParamsError("\n".join(lines)) from None
    check_environment(params, path, for_compute)
    return params


def rates_folder(params: Params) -> Path:
    """The results folder `learning_rates_from` names (relative to the project root)."""
    return _project_folder(params.learning_rates_from)


def planned_folder(params: Params) -> Path:
    """The results folder `planned_from` names (relative to the project root)."""
    return _project_folder(params.planned_from)


def _project_folder(name: str) -> Path:
    from ftstudy.compute import paths

    folder = Path(name)
    return folder if folder.is_absolute() else paths.project_root() / folder


def check_environment(params: Params, path: Path, for_compute: bool) -> None:
    """Checks that need the machine: mirror files, sizes vs data, outputs, and with
    `for_compute` whether its runs could compute here (model files, CPU-only dtypes, trackers,
    curve precision)."""
    from ftstudy.compute import paths

    problems = []
    data_dir = paths.data_dir(params.data_dir)
    if data_dir is not None:
        needed = {data.TRAIN_SETS[n]["dataset"] for mix in params.train_data.values() for n in mix}
        needed |= {data.task_dataset(t) for t in params.evaluation.tasks}
        for name in sorted(needed):
            for f in data.needed_files(name, data_dir):
                if not f.is_file():
                    problems.append(f"data_dir: mirror {data_dir} lacks {f.relative_to(data_dir)} "
                                    f"(needed for {name})")
    if not problems:
        problems += _check_sizes(params, data_dir)
    if params.learning_rates_from is not None and not (rates_folder(params) / "tuning.csv").is_file():
        problems.append(f"learning_rates_from: {params.learning_rates_from} holds no tuning.csv (a sweep's "
                        "committed results, e.g. results/cpu-sweep)")
    if params.planned_from is not None and not (planned_folder(params) / "runs").is_dir():
        problems.append(f"planned_from: {params.planned_from} holds no runs/ folder (a study's committed "
                        "results, e.g. results/cpu-study-2026-11-28)")
    if for_compute:
        problems += _compute_problems(params)
    out = Path(params.output_dir)
    probe = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is a file")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        problems.append(f"output_dir: {out} is not writable ({e})")
    if problems:
        raise ParamsError("\n".join(f"{path}: {p}" for p in problems))


def _compute_problems(params: Params) -> list[str]:
    """What would stop a run on this machine: float16 without a GPU, a tracker not installed,
    curves scored in another precision than the final evaluation (`dtype: auto` resolves here),
    a model's weights missing (a report reads no weights)."""
    problems = []
    for name, m in params.models.items():
        try:
            if m.gguf is not None:
                from ftstudy.compute.models import gguf_path
                f = gguf_path(m.gguf.model_dump(exclude_none=True))
                if not f.is_file():
                    problems.append(f"models.{name}.gguf: file not found: {f}")
            elif m.path is not None and not (Path(m.path).expanduser() / "config.json").is_file():
                problems.append(f"models.{name}.path: {m.path} is not a model folder (no config.json)")
        except FileNotFoundError as e:
            problems.append(f"models.{name}.gguf: {e}")
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        for name, m in params.models.items():
            if m.dtype == "float16":
                problems.append(f"models.{name}.dtype: float16 needs a GPU; on CPU use bfloat16 or float32")
    import importlib.util

    for name in params.tracking.report_to:
        if importlib.util.find_spec(name) is None:
            problems.append(f"tracking.report_to: {name} is not installed (pip install {name}); "
                            "only tensorboard comes with ftstudy")
    if params.has_curves() and params.evaluation.dtype != "float32":
        problems.append(f"evaluation.dtype: learning curves (training.eval_every) score the fp32 weights as "
                        f"they train, so the final evaluation must too: set float32, not {params.evaluation.dtype}")
    return problems


def _check_sizes(params: Params, data_dir) -> list[str]:
    """Each size must fit every set of each mix: counted on the mirror, or the hub sets'
    known sizes when data come from the hub."""
    problems = []
    available = {}
    for label, mix in params.train_data.items():
        for size in params.train_sizes:
            for name, n in data.mix_counts(mix, size).items():
                if n == 0:
                    problems.append(f"train_sizes: {size} gives 0 examples of {name} "
                                    f"(train_data.{label}: share {mix[name]:g}); use a larger size or share")
                    continue
                if name not in available:
                    available[name] = (data.HUB_POOL_SIZES[name] if data_dir is None
                                       else len(data.pairs(name, data_dir)))
                if n > available[name]:
                    problems.append(f"train_sizes: {size} asks {n} examples of {name} "
                                    f"(train_data.{label}), which has {available[name]}")
    return problems

"""Params files: the schema of `params/*.yaml`, checked before any compute.

Errors name the file, the key path and what is allowed, with no Python traceback:
a night of compute must not die on a typo at cell 40.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftstudy import data, evaluate, methods, train


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
    dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("hub", "path", "gguf") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one model source of hub, path, gguf (got {given or 'none'})")
        return self

    def source(self) -> dict:
        return self.model_dump(exclude_none=True, exclude={"dtype"})


class MethodEntry(_Strict):
    adapter: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    load: dict[str, Any] = Field(default_factory=dict)


class TaskEntry(_Strict):
    limit: int | None = Field(default=None, gt=0)
    num_fewshot: int | None = Field(default=None, ge=0)


class Evaluation(_Strict):
    batch_size: int = Field(default=8, gt=0)
    tasks: dict[str, TaskEntry]

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v):
        for name in v:
            if name not in evaluate.UPSTREAM:
                raise ValueError(f"unknown task {name!r}; allowed: {sorted(evaluate.UPSTREAM)}")
        return v


class Training(_Strict):
    max_steps: int = Field(default=train.DEFAULTS["max_steps"], gt=0)
    batch_size: int = Field(default=train.DEFAULTS["batch_size"], gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    max_length: int = Field(default=train.DEFAULTS["max_length"], gt=8)
    learning_rate: float | None = Field(default=None, gt=0)
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    keep_checkpoints: bool = False


class Params(_Strict):
    study: str
    output_dir: str = "outputs"
    data_dir: str | None = None
    models: dict[str, ModelEntry]
    methods: dict[str, MethodEntry | None]
    train_data: dict[str, dict[str, float]]
    train_sizes: list[int]
    seeds: list[int] = Field(default_factory=lambda: [0])
    training: Training = Field(default_factory=Training)
    evaluation: Evaluation

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


def _closest(loc, raw) -> str:
    """For an unknown key: the nearest valid key at that level, if one is close."""
    model, node = Params, raw
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part) if model else None
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        node = node.get(part) if isinstance(node, dict) else None
    if model is None:
        return ""
    match = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (allowed: {', '.join(model.model_fields)})"


def load(path: str | Path) -> Params:
    """Read and validate a params file; raise ParamsError with file and key on any problem."""
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
                msg = "unknown key" + _closest(loc, raw)
            elif err["type"] == "missing":
                msg = "required key is missing"
            lines.append(f"{path}: {_key_path(loc)}: {msg}")
        raise ParamsError("\n".join(lines)) from None
    check_environment(params, path)
    return params


def check_environment(params: Params, path: Path) -> None:
    """Checks that need the machine: mirror files, sizes vs data, CPU-only options, outputs."""
    from ftstudy import paths

    problems = []
    data_dir = paths.data_dir(params.data_dir)
    if data_dir is not None:
        needed = {data.TRAIN_SETS[n]["dataset"] for mix in params.train_data.values() for n in mix}
        needed |= set(params.evaluation.tasks)
        for name in sorted(needed):
            for f in data.needed_files(name, data_dir):
                if not f.is_file():
                    problems.append(f"data_dir: mirror {data_dir} lacks {f.relative_to(data_dir)} "
                                    f"(needed for {name})")
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        for name, m in params.models.items():
            if m.dtype == "float16":
                problems.append(f"models.{name}.dtype: float16 needs a GPU; on CPU use bfloat16 or float32")
    out = Path(params.output_dir)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        problems.append(f"output_dir: {out} is not writable")
    if problems:
        raise ParamsError("\n".join(f"{path}: {p}" for p in problems))

"""Typed, frozen configuration of one training run, validated by pydantic.

A run is data + model + optimizer + training + a seed. Structure (widths, activation,
optimizer family, batch size, loss) is static; numbers (rates, slopes, patience) may differ
between variants that train together; the seed is a variant's identity. Which is which is
declared here once: the numbers are the fields of `HParams` (each with its key and bounds),
the structure variants of one program may differ in is marked `SWITCHED`; the engine
derives its per-variant arrays and its program keys from that (`numeric_fields`,
`switched_keys`). Errors name the key path, the bad value, the allowed values and, for
misspellings, the closest valid name.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from functools import cache
from typing import Annotated, Any, Literal, Mapping, NamedTuple, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, ValidationError, field_validator, model_validator

ACTIVATIONS = (
    "sigmoid", "tanh", "relu", "leaky_relu", "noisy_relu", "elu", "selu", "gelu",
    "softplus", "swish", "silu", "identity",
)
INITS = ("auto", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform",
         "lecun_normal", "lecun_uniform")
DATASETS = ("digits", "diabetes", "mnist", "fashion_mnist", "kmnist", "synthetic", "csv", "parquet", "npz", "tfds")
#: The datasets read from a file of the user's (`data.path`).
FILE_DATASETS = ("csv", "parquet", "npz")
TASKS = ("auto", "classification", "regression")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")
LOSSES = ("auto", "cross_entropy", "mse")
MONITORS = ("val_loss", "val_accuracy")


#: The patience value that never stops a variant (patience None), as the engine carries it.
NO_PATIENCE = 2**31 - 1
#: The largest seed: seeds are carried as uint32.
MAX_SEED = 2**32 - 1
#: What every section of a configuration file is validated with: unknown keys refused, and
#: numbers finite (`.inf` or `.nan` is refused where a number is taken).
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: Field metadata declaring structure that variants of one program may differ in: the
#: program holds a switched copy of its code (activation) or initialises per part (init).
SWITCHED = {"switched": True}


class ConfigError(ValueError):
    """A configuration value is invalid; the message says where, what and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(**STRICT, strict=False)


#: The keys each source of the user's data needs, and an example of each.
_SOURCE_KEYS = {"csv": ("path", "target"), "parquet": ("path", "target"), "npz": ("path",), "tfds": ("dataset",)}
_SOURCE_EXAMPLES = {"csv": "{name: csv, path: data/wine.csv, target: quality}",
                    "parquet": "{name: parquet, path: data/wine.parquet, target: quality}",
                    "npz": "{name: npz, path: data/arrays.npz}", "tfds": "{name: tfds, dataset: emnist/digits}"}


class DataConfig(_Section):
    """Which dataset, how it is split and where its files live."""

    name: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    val_size: float | None = Field(None, ge=0, description="fraction (<1) or number of training samples held out "
                                   "for validation; default 0.15, MNIST family 10000; 0: none, every training sample "
                                   "trains (a final fit for a number of epochs chosen on validation before: needs "
                                   "training.early_stopping.patience null and restore_best false)")
    test_size: float = Field(0.2, gt=0, lt=1, description="fraction held out for test (embedded sets)")
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    train_limit: int | None = Field(None, gt=0, description="use only the first N training samples")
    data_dir: str | None = None
    cache_dir: str | None = None
    n_samples: int = Field(2000, gt=0, description="synthetic only")
    n_features: int = Field(20, gt=0, description="synthetic only")
    n_classes: int = Field(4, gt=1, description="synthetic only")
    path: str | None = Field(None, description="csv, parquet, npz: the file (in a sweep file, relative to it)")
    target: str | None = Field(None, description="csv, parquet: the column to predict")
    features: tuple[str, ...] | None = Field(None, description="csv, parquet: the input columns (default: all "
                                             "others)")
    task: Literal[TASKS] = Field("auto", description="csv, parquet, npz: classification or regression (auto: "  # type: ignore[valid-type]
                                 "floating-point targets are regression; text, booleans, integers class labels)")
    dataset: str | None = Field(None, description="tfds: a tensorflow-datasets name or name/config, e.g. "
                                "emnist/digits")
    manual_dir: str | None = Field(None, description="tfds: the folder with the dataset's download files, for "
                                   "offline preparation (data_dir: where tensorflow-datasets keeps prepared sets; "
                                   "default: the cache's tfds/)")
    digest: str | None = Field(None, description="csv, parquet, npz: the file's content digest, set when the "
                               "file is read; a changed file is refused")

    @model_validator(mode="after")
    def _source_keys(self) -> "DataConfig":
        """The keys each kind of source needs."""
        missing = [key for key in _SOURCE_KEYS.get(self.name, ()) if getattr(self, key) is None]
        if missing:
            raise ValueError(f"data.name {self.name} needs {' and '.join('data.' + k for k in missing)}, e.g. "
                             f"{_SOURCE_EXAMPLES[self.name]}")
        return self

    @property
    def validated(self) -> bool:
        """Whether a validation split is held out (`val_size` is not 0)."""
        return self.val_size != 0


class ModelConfig(_Section):
    """The MLP's structure and its numeric knobs (dropout, activation parameters)."""

    hidden: tuple[PositiveInt, ...] = (64, 64)
    activation: Literal[ACTIVATIONS] = Field("relu", json_schema_extra=SWITCHED)  # type: ignore[valid-type]
    init: Literal[INITS] = Field("auto", json_schema_extra=SWITCHED)  # type: ignore[valid-type]
    dropout: float = Field(0.0, ge=0, lt=1)
    input_dropout: float = Field(0.0, ge=0, lt=1)
    leaky_slope: float = Field(0.01, ge=0)
    elu_alpha: float = Field(1.0, gt=0)
    noise_std: float = Field(1.0, ge=0, description="noisy_relu: std of the Gaussian noise in training")


class OptimizerConfig(_Section):
    """Optax optimizer family, schedule and regularisers."""

    name: Literal[OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    momentum_start: float | None = Field(None, ge=0, lt=1, description="ramp: momentum at the first step, rising "
                                         "linearly to `momentum` (None: constant momentum)")
    momentum_ramp_epochs: float = Field(0.0, ge=0, description="ramp: epochs from momentum_start to momentum")
    momentum_dampening: float = Field(
        0.0, ge=0, le=1, description="gradients scaled by 1 - dampening x momentum (of the step) before the "
        "update: 1 is the papers' form (Hinton et al. 2012: dw = m dw - (1 - m) lr g), whose step size does not "
        "grow as a momentum ramp rises; 0 is heavy ball (dw = m dw - lr g)")
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal[SCHEDULES] = "constant"  # type: ignore[valid-type]
    decay_rate: float = Field(1.0, gt=0, le=1, description="exponential: factor per epoch")
    warmup_epochs: int = Field(0, ge=0)
    max_norm: float | None = Field(None, gt=0, description="bound on each unit's incoming weight norm")
    clip_norm: float | None = Field(None, gt=0, description="global gradient-norm clipping")


class EarlyStoppingConfig(_Section):
    """Validation-based early stopping; patience None trains the whole budget."""

    monitor: Literal[MONITORS] = "val_loss"  # type: ignore[valid-type]
    patience: int | None = Field(10, gt=0)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = Field(True, description="keep the best validation epoch's parameters (False: the last "
                               "epoch's)")


class TrainingConfig(_Section):
    """Budget, batching, loss and seed."""

    epochs: int = Field(100, gt=0)
    batch_size: int = Field(32, gt=0)
    loss: Literal[LOSSES] = "auto"  # type: ignore[valid-type]
    seed: int = Field(0, ge=0, le=MAX_SEED)
    divergence_factor: float | None = Field(
        100.0, gt=1, description="a variant whose training or validation loss exceeds this multiple of its loss "
        "before the first update is diverged, as one whose loss is NaN or infinite (None: only those)")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()


class EvaluationConfig(_Section):
    """What the final evaluation measures besides the test metrics (calibration is always measured
    for classification): a temperature fitted on validation, and the test split with input noise."""

    temperature_scaling: bool = Field(False, description="fit one softmax temperature per variant on the "
                                      "validation split (minimising its NLL) and log the test calibration with it "
                                      "(test_temperature, test_ece_temperature, ...); classification only")
    input_noise: tuple[NonNegativeFloat, ...] = Field((), description="standard deviations of Gaussian noise added "
                                                      "to the test inputs (in their normalised scale; the same draws "
                                                      "for every variant): test_accuracy_noise_<std>, "
                                                      "test_loss_noise_<std>")

    @field_validator("input_noise")
    @classmethod
    def _distinct_levels(cls, levels: tuple[float, ...]) -> tuple[float, ...]:
        """Each level names its metrics: two equal levels would log one metric twice."""
        if len(set(levels)) != len(levels):
            raise ValueError("the noise levels must be distinct")
        return levels


class RunConfig(_Section):
    """Everything that defines one trained model."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _validation_split_needed(self) -> "RunConfig":
        """Without a validation split (data.val_size 0) nothing can select an epoch or stop early."""
        if not self.data.validated:
            es, wrong = self.training.early_stopping, []
            if es.patience is not None:
                wrong.append(("training.early_stopping.patience", es.patience, "null"))
            if es.restore_best:
                wrong.append(("training.early_stopping.restore_best", "true", "false"))
            if self.evaluation.temperature_scaling:
                wrong.append(("evaluation.temperature_scaling", "true", "false"))
            if wrong:
                raise ValueError("data.val_size: 0 holds out no validation split, so nothing can stop a variant "
                                 "early, select its best epoch or fit a temperature; "
                                 + "; ".join(f"{key} is {value}, it must be {allowed}" for key, value, allowed in wrong))
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted keys to leaf values, e.g. {'model.activation': 'relu', ...}."""
        return flatten(self.to_dict())


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


#: Every configuration key, dotted ('model.activation', 'optimizer.learning_rate', ...).
CONFIG_KEYS = tuple(RunConfig().flat())


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Copy of a nested dict with `dotted` (e.g. 'model.activation') set to value."""
    head, _, rest = dotted.partition(".")
    out = dict(tree)
    if rest:
        child = out.get(head, {})
        if not isinstance(child, Mapping):
            raise ConfigError(f"'{head}' is a value, not a section: cannot set '{dotted}'")
        out[head] = set_dotted(dict(child), rest, value)
    else:
        out[head] = value
    return out


@dataclass(frozen=True)
class Number:
    """How a vmapped number is declared (an `HParams` field's metadata): its configuration key,
    the dtype the engine carries it in, the value that stands for None, and the bounds its
    configuration field enforces, in pydantic's words (`tests/test_hparams.py` checks them
    against the field). `name` is the `HParams` field's, filled in by `numeric_fields`."""

    key: str
    dtype: str = "float32"
    none: float | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    name: str = ""

    @property
    def bounds(self) -> tuple[float, float]:
        """The closed range of allowed values (an open end moved in to the next float), e.g.
        model.dropout -> (0, 0.9999999999999999): for clipping values made during training (PBT)."""
        low = self.ge if self.ge is not None else -math.inf if self.gt is None else math.nextafter(self.gt, math.inf)
        high = self.le if self.le is not None else math.inf if self.lt is None else math.nextafter(self.lt, -math.inf)
        return low, high


class HParams(NamedTuple):
    """A variant's numbers: what variants trained together in one program may differ in, each
    an array with a leading variant axis there. This class is the one declaration of which
    configuration keys are such numbers; every other key is structure (or the seed, the
    variant's identity). A new vmappable number is a field here and one in the configuration."""

    dropout: Annotated[Any, Number("model.dropout", ge=0, lt=1)]
    input_dropout: Annotated[Any, Number("model.input_dropout", ge=0, lt=1)]
    leaky_slope: Annotated[Any, Number("model.leaky_slope", ge=0)]
    elu_alpha: Annotated[Any, Number("model.elu_alpha", gt=0)]
    noise_std: Annotated[Any, Number("model.noise_std", ge=0)]
    learning_rate: Annotated[Any, Number("optimizer.learning_rate", gt=0)]
    momentum: Annotated[Any, Number("optimizer.momentum", ge=0, lt=1)]
    momentum_start: Annotated[Any, Number("optimizer.momentum_start", none=-1.0, ge=0, lt=1)]
    momentum_ramp_epochs: Annotated[Any, Number("optimizer.momentum_ramp_epochs", ge=0)]
    momentum_dampening: Annotated[Any, Number("optimizer.momentum_dampening", ge=0, le=1)]
    weight_decay: Annotated[Any, Number("optimizer.weight_decay", ge=0)]
    decay_rate: Annotated[Any, Number("optimizer.decay_rate", gt=0, le=1)]
    warmup_epochs: Annotated[Any, Number("optimizer.warmup_epochs", ge=0)]
    max_norm: Annotated[Any, Number("optimizer.max_norm", none=math.inf, gt=0)]
    clip_norm: Annotated[Any, Number("optimizer.clip_norm", none=math.inf, gt=0)]
    patience: Annotated[Any, Number("training.early_stopping.patience", "int32", none=NO_PATIENCE, gt=0)]
    min_delta: Annotated[Any, Number("training.early_stopping.min_delta", ge=0)]
    restore_best: Annotated[Any, Number("training.early_stopping.restore_best", "bool")]
    divergence_factor: Annotated[Any, Number("training.divergence_factor", none=math.inf, gt=1)]


@cache
def numeric_fields() -> tuple[Number, ...]:
    """The vmapped numbers, in `HParams`' field order, each named by its field."""
    hints = get_type_hints(HParams, include_extras=True)
    return tuple(replace(hints[name].__metadata__[0], name=name) for name in HParams._fields)


def bounds(key: str) -> tuple[float, float]:
    """The closed range a vmapped number's configuration key allows (see `Number.bounds`)."""
    return next(f.bounds for f in numeric_fields() if f.key == key)


#: The configuration key of a variant's seed: neither structure nor a number of its program,
#: but its identity (its training state's random key is drawn from it).
SEED_KEY = "training.seed"


def seed_list(seeds: Any, where: str, counts: bool = True) -> list[int]:
    """A seed count n (seeds 0 .. n - 1) or a list of distinct seeds in 0..`MAX_SEED`, checked:
    the one rule for seeds, wherever they are given (`where` names the place; `counts=False`
    where only a list can be given, e.g. a command's `--seeds 0 1 2`, so the message offers none)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        listed = list(range(seeds)) if seeds <= MAX_SEED + 1 else []
    else:
        listed = seeds
    if (not isinstance(listed, list) or not listed or not all(isinstance(s, int) and not isinstance(s, bool)
                                                              for s in listed)
            or len(set(listed)) != len(listed) or min(listed) < 0 or max(listed) > MAX_SEED):
        wanted = "a positive count or a list of distinct integers" if counts else "distinct integers"
        raise ConfigError(f"{where}: {bounded_repr(seeds)}; give {wanted} in 0..{MAX_SEED}")
    return listed


def _field_extras(model: type[BaseModel], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted key -> the json_schema_extra of every leaf field of a (nested) configuration model."""
    out: dict[str, dict[str, Any]] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_field_extras(annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return out


@cache
def switched_keys(config_type: type[BaseModel] | None = None) -> tuple[str, ...]:
    """The structural keys that variants of one compiled program may differ in."""
    return tuple(k for k, extra in _field_extras(config_type or RunConfig).items() if extra.get("switched"))


def load_config(raw: Mapping[str, Any] | None = None, *, source: str = "configuration") -> RunConfig:
    """Validate a plain nested dict into a RunConfig, raising ConfigError with a readable message."""
    try:
        return RunConfig.model_validate(dict(raw or {}))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def format_validation_error(err: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    """One line per bad key: key path, bad value, allowed values or keys, 'did you mean' (the
    alternatives of a value that may take several forms on one line)."""
    described: dict[str, list[str]] = {}
    for e in err.errors():
        path, text = _describe(e, root or RunConfig)
        described.setdefault(path, []).append(text)
    lines = [f"{source}: {len(described)} invalid value(s)"]
    lines += [f"  - {texts[0]}" + "".join(f"; or {t.split(': ', 2)[-1]}" for t in texts[1:])
              for texts in described.values()]
    return "\n".join(lines)


#: The parts of a pydantic error's location that name a form of a union (`int`, `list[int]`), not a key.
_FORM = re.compile(r"^(int|float|str|bool|none|list\[.*\]|tuple\[.*\]|dict\[.*\])$")


def _describe(e: Mapping[str, Any], root: type[BaseModel]) -> tuple[str, str]:
    """(key path, the line that describes the error)."""
    loc = [str(p) for p in e["loc"] if not str(p).startswith("function-after") and not _FORM.match(str(p))]
    path = ".".join(loc) or "<root>"
    return path, _describe_at(e, root, loc, path)


def _describe_at(e: Mapping[str, Any], root: type[BaseModel], loc: list[str], path: str) -> str:
    kind, value = e["type"], e.get("input")
    if kind == "missing":
        return f"{path}: missing; this key is required"
    if kind == "extra_forbidden":
        allowed = _section_fields(root, loc[:-1])
        return f"{path}: unknown key{did_you_mean(loc[-1], allowed)}; allowed keys: {', '.join(allowed)}"
    if kind == "literal_error":
        allowed = [a.strip(" '") for a in e["ctx"]["expected"].replace(" or ", ",").split(",")]
        return (f"{path}: {bounded_repr(value)} is not allowed{did_you_mean(str(value)[:200], allowed)}; "
                f"allowed values: {', '.join(allowed)}")
    message = e["msg"].removeprefix("Value error, ").replace("a valid tuple", "a list")  # (YAML writes lists)
    if not loc:  # a check across keys: its message names them
        return message
    return f"{path}: bad value {bounded_repr(value)}: {message}"


def bounded_repr(value: Any, limit: int = 200) -> str:
    """repr(value), cut to `limit` characters with its full length said, so no error message
    prints an unbounded value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def did_you_mean(word: str, options: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or ''."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _section_fields(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the section at `loc` (walking nested models, Optional ones included)."""
    for part in loc:
        if part not in model.model_fields:
            break
        annotation = model.model_fields[part].annotation
        sub = next((a for a in (annotation, *get_args(annotation))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            break
        model = sub
    return list(model.model_fields)

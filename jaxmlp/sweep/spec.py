"""The YAML sweep file: a base configuration and the axes to vary, expanded into variants.

    name: activations
    base: {data: {name: digits}, model: {hidden: [64, 64]}}
    grid: {model.activation: [relu, tanh]}          # full product, file order, last fastest
    zip: {optimizer.learning_rate: [1e-3, 3e-3], model.dropout: [0.0, 0.2]}  # advanced together
    random: {samples: 4, seed: 0, params: {optimizer.learning_rate: {loguniform: [1e-4, 1e-2]}}}
    # a random parameter may be conditional: {uniform: [0.5, 0.99], when: {optimizer.name: sgd}}
    seeds: 3                                        # or a list: [0, 1, 2]
    optimize: {trials: 64, batch: 16, params: {...}}  # instead of grid/zip/random: a sampler proposes (`optimize`)
    objectives: [best_val_loss, n_params]           # what settings are compared on (`report.objectives`)

`zip` may also give each of its settings its own seeds (`seeds: [3, 2]`, a count or a list per
setting), for example fewer seeds for a costly secondary row; the top-level `seeds` is then
left out. `zip.name` names each zipped setting (`name: [standard, dropout]`): labels, run
names and tables show the name instead of every zipped value. A conditional random parameter
(`when:`, see `conditions`) is left out of the settings where its condition does not hold (the
key keeps its base value there); samples that then agree in every other value train once.
Expansion is deterministic: the same file gives the same variants in the same order. Every
value is validated before anything runs; errors name the file, key path, bad value and what
is allowed.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml
from jaxmlp.config import (CONFIG_KEYS, MAX_SEED, SEED_KEY, STRICT, ConfigError, RunConfig, bounded_repr, did_you_mean,
                           flatten, format_validation_error, load_config, seed_list, set_dotted)
from jaxmlp.data import DataError, check_available, dataset_key, split_sizes
from jaxmlp.data.tables import resolve_file
from jaxmlp.records import SETTING_NAME, setting_label
from jaxmlp.report.objectives import Objective, ObjectiveError, objectives_of
from jaxmlp.sweep.conditions import active, condition_order
from jaxmlp.sweep.distributions import Distribution, checked, draw
from jaxmlp.sweep.errors import SweepError
from jaxmlp.sweep.optimize import OptimizeSpec, Optimizer, Proposal, check_sampler
from jaxmlp.sweep.schedulers import SearchSpec, search_of

class _Strict(BaseModel):
    model_config = STRICT


class RandomSpec(_Strict):
    samples: int = Field(gt=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    params: dict[str, Distribution]


#: The most characters of a sweep's name and of a zipped setting's name (they name folders,
#: experiments, runs and metrics).
MAX_NAME = 100
#: A sweep that expands to more variants is refused unless its file raises `execution.max_variants`.
MAX_VARIANTS = 50_000
#: Up to this many variants, every child run keeps its per-epoch history as MLflow metrics.
MAX_METRIC_HISTORIES = 500

class RaySpec(_Strict):
    """What each program chunk asks a Ray cluster for (`--executor ray`); unset numbers are
    derived from the cluster and the chunk's memory estimate (`jaxmlp.sweep.ray_executor`)."""

    num_cpus: float | None = Field(None, gt=0, description="CPUs per chunk (default: its XLA devices on a CPU "
                                                              "cluster, 1 beside a GPU)")
    num_gpus: float | None = Field(None, ge=0, le=1, description="GPUs per chunk, a fraction shares one "
                                                                 "(default: 1 where the cluster has GPUs, else 0)")
    memory_gib: float | None = Field(None, gt=0, description="host memory per chunk (default: from its footprint)")
    max_retries: int = Field(3, ge=0, description="times Ray reruns a chunk whose worker or node died")


class ExecutionSpec(_Strict):
    max_variants_per_program: int = Field(100_000, gt=0, description="a cap on top of the memory-sized choice "
                                                                      "(of slots, where variants queue)")
    chunks: int = Field(1, gt=0, description="split each program's queue into this many chunks, each with its own "
                                             "slots (under --executor ray, one task each: several GPUs at once)")
    max_variants_per_part: int = Field(64, gt=0, description="variants vmapped together (a part stops as a whole)")
    devices: Literal["auto", "one", "all"] = "auto"
    max_variants: int = Field(MAX_VARIANTS, gt=0, description="refuse to expand a sweep into more variants")
    metric_histories_up_to: int = Field(
        MAX_METRIC_HISTORIES, ge=0,
        description="sweeps of at most this many variants log every child's per-epoch history as MLflow "
                    "metrics; larger ones only each setting's best variant's, and every history in "
                    "histories/<group>/*.parquet on the parent")
    ray: RaySpec = RaySpec()


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=MAX_NAME)
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    random: RandomSpec | None = None
    optimize: OptimizeSpec | None = None
    objectives: list[str | dict[str, Any]] = Field(default_factory=list)
    seeds: int | list[int] = Field(default=1)
    execution: ExecutionSpec = ExecutionSpec()
    search: SearchSpec | None = None


@dataclass(frozen=True)
class Variant:
    """One model to train: its overrides of the base, its seed and its resolved configuration."""

    index: int
    setting: tuple[tuple[str, Any], ...]  # the swept values, seed excluded
    seed: int
    config: RunConfig
    trial: int | None = None  # an optimised setting's trial number (`optimize:`), None elsewhere

    @property
    def key(self) -> str:
        """Deterministic identity: hash of the resolved configuration (seed included) and, for an
        optimised setting, its trial number (two trials may propose the same values)."""
        config = self.config.to_dict()
        return _digest(config if self.trial is None else {**config, "trial": self.trial})

    @property
    def label(self) -> str:
        return setting_label(dict(self.setting))

    @property
    def run_name(self) -> str:
        """The run's name, swept values first ('relu · seed 4'), so the MLflow UI's narrow Run
        Name column tells runs apart; the full setting is in `label`."""
        from jaxmlp.report.labels import run_name

        return run_name(dict(self.setting), self.seed)


@dataclass(frozen=True)
class Sweep:
    path: Path
    spec: SweepSpec
    variants: list[Variant]

    @property
    def base(self) -> RunConfig:
        """The base configuration (what an optimised setting's proposal overrides)."""
        return load_config(self.spec.base, source=f"{self.path}: base")

    @property
    def search(self):
        """The engine's scheduler for the file's `search` section (None without one)."""
        if self.spec.search is None:
            return None
        configs = [v.config for v in self.variants] or [self.base]  # (an optimize sweep: its base)
        if not all(c.data.validated for c in configs):
            raise SweepError(f"{self.path}: search: compares variants on validation metrics, but data.val_size "
                             "is 0 (no validation split); hold one out (e.g. data.val_size: 0.15) or remove search")
        sampled = self.spec.random or self.spec.optimize
        return search_of(self.spec.search, sampled.params if sampled else {},
                         min(c.training.epochs for c in configs),
                         configs[0].training.early_stopping.monitor, str(self.path))

    @property
    def objectives(self) -> list[Objective]:
        """The file's `objectives`, checked (default: the early-stopping monitor's best value)."""
        try:
            return objectives_of(self.spec.objectives, self.base.training.early_stopping.monitor)
        except ObjectiveError as err:
            raise SweepError(f"{self.path}: {err}") from None

    def optimizer(self) -> Optimizer:
        """A new `optimize.Optimizer` for the file's `optimize:` section (Optuna's study, seeded)."""
        spec = self.spec.optimize
        order = condition_order(str(self.path), "optimize.params", spec.params, {}, self.base.flat())
        return Optimizer(spec, order, self.base.flat(), self.objectives, self.spec.name)

    def proposal_variants(self, proposal: Proposal) -> list[Variant]:
        """The variants of an optimised setting, one per seed; its setting is named after its trial
        ('trial 7'), so that two trials that propose the same values stay apart in tables."""
        seeds = _seed_list(self.spec.seeds, f"{self.path}: seeds")
        raw = self.base.to_dict()
        for key, value in proposal.values.items():
            raw = set_dotted(raw, key, value)
        setting = tuple({SETTING_NAME: f"trial {proposal.trial}", **proposal.values}.items())
        return [Variant(proposal.trial * len(seeds) + i, setting, seed,
                        load_config(set_dotted(raw, SEED_KEY, seed), source=str(self.path)), proposal.trial)
                for i, seed in enumerate(seeds)]

    @property
    def data_files(self) -> dict[str, str]:
        """The user's data files the sweep reads (absolute path -> content digest)."""
        return {v.config.data.path: v.config.data.digest for v in self.variants if v.config.data.digest}

    @property
    def hash(self) -> str:
        """Hash of the file's content (comments, layout and values equal to their defaults
        ignored, so a new option with a default leaves the hash of existing sweeps alone),
        then, where the sweep reads data files, '-' and a hash of their contents."""
        spec = _digest(self.spec.model_dump(mode="json", exclude_defaults=True))
        files = self.data_files
        return f"{spec}-{_digest(sorted(files.items()))[:8]}" if files else spec


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and expand a sweep file (safe YAML, bounded in size and alias expansion;
    the number of variants is counted from the axes before anything is expanded)."""
    path = Path(path)
    if path.is_dir():
        yamls = sorted(p.name for p in path.glob("*.yaml"))[:5]
        raise SweepError(f"{path}: a folder, not a sweep file; give one of its YAML files"
                         + (f" ({', '.join(yamls)}{', ...' if len(yamls) == 5 else ''})" if yamls else ""))
    if not path.is_file():
        raise SweepError(f"{path}: not a regular file; give a sweep file (YAML)" if path.exists()
                         else f"{path}: no such sweep file")
    try:
        raw = load_bounded_yaml(path)
    except YamlError as err:
        raise SweepError(str(err)) from None
    return sweep_of(raw, path)


def sweep_of(raw: Any, path: Path, source: str | None = None, folder: Path | None = None) -> Sweep:
    """Validate and expand a sweep's mapping: a file's, or a dict given in Python (`source`
    '<dict>' names it in errors); data files are read relative to `folder` (default: the
    sweep file's)."""
    source = source or str(path)
    if not isinstance(raw, dict):
        raise SweepError(f"{source}: expected a mapping with keys {', '.join(SweepSpec.model_fields)}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(format_validation_error(err, source, SweepSpec)) from None
    _check_size(spec, source)
    variants = expand(spec, source, path.parent if folder is None else folder)
    sweep = Sweep(path, spec, variants)
    sweep.search  # a bad search section is refused now, before anything is trained
    objectives = sweep.objectives  # and bad objectives
    if spec.optimize:
        check_sampler(spec.optimize, len(objectives), str(path))
    return sweep


#: The `zip` key that gives each zipped setting its own seeds (not a configuration key).
ZIP_SEEDS = "seeds"
#: The `zip` key that names each zipped setting (not a configuration key).
ZIP_NAME = SETTING_NAME
#: The `zip` keys that are not configuration keys.
ZIP_SPECIAL = (ZIP_SEEDS, ZIP_NAME)


def _axis_sizes(spec: SweepSpec) -> dict[str, int]:
    """The sweep's axes and their lengths, e.g. {'grid.model.activation': 6, 'seeds': 5}
    ('zip x seeds', their variants, where `zip` gives each setting its own seeds)."""
    sizes = {f"grid.{k}": len(v) for k, v in spec.grid.items()}
    zipped = {k: v for k, v in spec.zip.items() if k not in ZIP_SPECIAL}
    if spec.random:
        sizes["random.samples"] = spec.random.samples
    if spec.optimize:
        sizes["optimize.trials"] = spec.optimize.trials
    if ZIP_SEEDS in spec.zip:
        n = min(len(v) for v in spec.zip.values())
        # a bad entry counts as one seed here; `expand` refuses it with its name and value
        sizes["zip x seeds"] = sum(len(s) if isinstance(s, list) else s if isinstance(s, int) else 1
                                   for s in spec.zip[ZIP_SEEDS][:n])
        return sizes
    if zipped:
        sizes["zip"] = min(len(v) for v in zipped.values())
    sizes["seeds"] = spec.seeds if isinstance(spec.seeds, int) else len(spec.seeds)
    return sizes


def n_variants(spec: SweepSpec) -> int:
    """How many variants the sweep expands to, counted from its axes (nothing is expanded)."""
    return math.prod(_axis_sizes(spec).values())


def _seed_list(seeds: Any, where: str) -> list[int]:
    """The seeds a count or a list gives (`jaxmlp.config.seed_list`), refused as a sweep error."""
    try:
        return seed_list(seeds, where)
    except ConfigError as err:
        raise SweepError(str(err)) from None


def _zipped_seeds(spec: SweepSpec, source: str) -> list[list[int]] | None:
    """Each zipped setting's seeds where `zip` gives them, else None (the top-level `seeds` apply)."""
    if ZIP_SEEDS not in spec.zip:
        return None
    if "seeds" in spec.model_fields_set:
        raise SweepError(f"{source}: seeds: {spec.seeds!r} and zip.seeds both give seeds; keep the top-level "
                         "'seeds' (the same for every setting) or zip.seeds (one entry per setting), not both")
    if len(spec.zip) == 1:
        raise SweepError(f"{source}: zip.seeds: gives seeds to zipped settings, but zip varies nothing else; "
                         "use the top-level 'seeds' instead")
    return [_seed_list(s, f"{source}: zip.seeds[{i}]") for i, s in enumerate(spec.zip[ZIP_SEEDS])]


def _zipped_names(spec: SweepSpec, source: str) -> list[str] | None:
    """Each zipped setting's name where `zip.name` gives them, else None."""
    if ZIP_NAME not in spec.zip:
        return None
    names = spec.zip[ZIP_NAME]
    if not any(k not in ZIP_SPECIAL for k in spec.zip):
        raise SweepError(f"{source}: zip.name: names zipped settings, but zip varies nothing; give the zipped "
                         "keys beside it, or remove it")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise SweepError(f"{source}: zip.name[{i}]: {bounded_repr(name, 60)}; each setting's name must be a "
                             f"non-empty text of at most {MAX_NAME} characters")
        if name in names[:i]:
            raise SweepError(f"{source}: zip.name[{i}]: {name!r} is also zip.name[{names.index(name)}]; "
                             "each setting needs a name of its own")
    return names


def _check_size(spec: SweepSpec, source: str) -> None:
    count, limit = n_variants(spec), spec.execution.max_variants
    if count > limit:
        axes = " x ".join(f"{k}: {n:,}" for k, n in _axis_sizes(spec).items())
        raise SweepError(f"{source}: the sweep expands to {count:,} variants ({axes}), above "
                         f"execution.max_variants = {limit:,}; shrink an axis, or raise execution.max_variants "
                         "in the file if you mean it")


def _check_axis(source: str, section: str, key: str, values: list[Any], base: dict) -> None:
    if key not in CONFIG_KEYS:
        raise SweepError(f"{source}: {section}.{key}: unknown configuration key{did_you_mean(key, list(CONFIG_KEYS))}; "
                         f"keys look like model.activation, optimizer.learning_rate, training.epochs")
    if key == SEED_KEY:
        raise SweepError(f"{source}: {section}.{key}: vary seeds with the top-level 'seeds' key instead")
    if not values:
        raise SweepError(f"{source}: {section}.{key}: empty list; give at least one value")
    for i, value in enumerate(values):
        try:
            load_config(set_dotted(base, key, value), source=f"{source}: {section}.{key}[{i}]")
        except ConfigError as err:
            raise SweepError(str(err)) from None


def _random_settings(spec: RandomSpec, source: str, base: dict,
                     axes: dict[str, list[Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The parameters in the order their conditions are read (`conditions.condition_order`) and
    `samples` draws of every parameter (a conditional one is drawn even where it is inactive, so
    that a condition changes no other draw)."""
    dists = {key: checked(source, key, dist) for key, dist in spec.params.items()}
    order = condition_order(source, "random.params", spec.params, axes, flatten(base))
    rng = np.random.default_rng(spec.seed)
    settings = []
    for _ in range(spec.samples):
        sample = {}
        for key, (kind, arg) in dists.items():
            sample[key] = draw(kind, arg, rng)
        settings.append(sample)
    for key in spec.params:
        _check_axis(source, "random.params", key, [s[key] for s in settings], base)
    return order, settings


def _check_optimize(spec: SweepSpec, source: str, base: dict) -> None:
    """An `optimize:` section: alone in choosing settings, its parameters' ranges and conditions valid."""
    others = [name for name in ("grid", "zip", "random") if getattr(spec, name)]
    if others:
        raise SweepError(f"{source}: optimize: proposes every setting, but the file also has {' and '.join(others)}; "
                         "keep optimize alone (fixed values go in base)")
    _seed_list(spec.seeds, f"{source}: seeds")
    for key, dist in spec.optimize.params.items():
        _, arg = checked(source, key, dist, "optimize.params")
        _check_axis(source, "optimize.params", key, list(arg), base)  # a choice's values, a range's ends
    condition_order(source, "optimize.params", spec.optimize.params, {}, flatten(base))


def expand(spec: SweepSpec, source: str, folder: Path = Path(".")) -> list[Variant]:
    """All variants: grid product x zipped lists x random samples x seeds (seeds innermost);
    a data file's path made absolute (relative to `folder`) and its digest recorded."""
    try:
        base = load_config(spec.base, source=f"{source}: base").to_dict()
    except ConfigError as err:
        raise SweepError(str(err)) from None
    if spec.optimize:
        _check_optimize(spec, source, base)
        return []  # the settings come from the sampler (`Sweep.optimizer`, `Sweep.proposal_variants`)
    zip_axes = {k: v for k, v in spec.zip.items() if k not in ZIP_SPECIAL}
    for section, axes in (("grid", spec.grid), ("zip", zip_axes)):
        for key, values in axes.items():
            _check_axis(source, section, key, values, base)
    _check_sections_disjoint(spec, source)
    lengths = {len(v) for v in spec.zip.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in spec.zip.items())
        raise SweepError(f"{source}: zip: every list must have the same length (got {sizes})")
    grid = [dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())]
    zipped = [dict(zip(zip_axes, combo)) for combo in zip(*zip_axes.values())]
    names = _zipped_names(spec, source)
    per_setting = _zipped_seeds(spec, source)
    seeds = _seed_list(spec.seeds, f"{source}: seeds")
    if per_setting is None:
        per_setting = [seeds] * max(1, len(zipped))
    zipped = list(itertools.zip_longest(zipped, per_setting, names or [], fillvalue={}))
    order, sampled = ([], [{}]) if spec.random is None else _random_settings(spec.random, source, base,
                                                                              {**spec.grid, **zip_axes})
    flat_base, variants, seen = flatten(base), [], set()
    for g, (z, z_seeds, z_name), drawn in itertools.product(grid, zipped, sampled):
        r = active(spec.random.params, order, drawn, {**flat_base, **g, **z}) if spec.random else drawn
        if len(r) < len(drawn):  # a parameter inactive here: samples alike in the others train once
            identity = _digest([g, z, r])
            if identity in seen:
                continue
            seen.add(identity)
        values = {**g, **z, **r}
        setting = {SETTING_NAME: z_name, **g, **r} if names else values  # the name (first) stands for the zipped values
        raw = base
        for key, value in values.items():
            raw = set_dotted(raw, key, value)
        for seed in z_seeds:
            config = load_config(set_dotted(raw, SEED_KEY, seed), source=source)
            try:
                config = config.model_copy(update={"data": resolve_file(config.data, folder)})
            except DataError as err:
                raise DataError(f"{source}: {err}") from None
            variants.append(Variant(len(variants), tuple(setting.items()), seed, config))
    _check_distinct(variants, source)
    _check_batch_sizes(variants, source)
    return variants


def _check_batch_sizes(variants: list[Variant], source: str) -> None:
    """Every batch fits in its training split (sizes known without loading the data)."""
    largest: dict[str, tuple[int, Variant]] = {}
    for v in variants:
        key = dataset_key(v.config.data)
        if key not in largest or v.config.training.batch_size > largest[key][0]:
            largest[key] = (v.config.training.batch_size, v)
    for batch, v in largest.values():
        try:
            n_train = split_sizes(v.config.data)[0]
        except DataError as err:
            raise DataError(f"{source}: {err}") from None
        except ValueError as err:
            raise SweepError(f"{source}: {err}") from None
        if batch > n_train:
            raise SweepError(f"{source}: training.batch_size: {batch} (in {v.run_name!r}) exceeds the {n_train:,} "
                             f"training samples of {v.config.data.name}; use at most {n_train:,}")


def _check_sections_disjoint(spec: SweepSpec, source: str) -> None:
    """A key in two of grid, zip and random would be silently overridden by the later one."""
    sections = {"grid": spec.grid, "zip": spec.zip, "random.params": spec.random.params if spec.random else {}}
    for key in set(spec.grid) | set(spec.zip):
        found = [name for name, axes in sections.items() if key in axes]
        if len(found) > 1:
            raise SweepError(f"{source}: {key}: varied in both {' and '.join(found)}; vary it in one of them")


def _check_distinct(variants: list[Variant], source: str) -> None:
    """Two variants with one configuration would share a run identity (their key) and train twice."""
    seen: dict[str, Variant] = {}
    for v in variants:
        if v.key in seen:
            raise SweepError(f"{source}: variants {seen[v.key].run_name!r} and {v.run_name!r} have the same "
                             "configuration; remove the duplicate value (or, for random, use fewer samples "
                             "or a continuous distribution)")
        seen[v.key] = v




def unavailable_data(sweep: Sweep) -> list[str]:
    """Why the sweep's datasets cannot be loaded here (empty when they can), checked without
    loading them: the sweep, the data section and the fix each."""
    problems = []
    configs = [v.config for v in sweep.variants] or [sweep.base]  # (an optimised sweep's settings come later)
    for cfg in {dataset_key(c.data): c.data for c in configs}.values():
        try:
            check_available(cfg)
        except DataError as err:
            problems.append(f"{sweep.path}: base.data ({cfg.name}): {err}")
    return problems

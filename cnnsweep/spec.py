"""Study specs: a TOML file, validated with pydantic, expanded into runs (config + seed).

    name = "seed48"
    protocol = "seed"
    seeds = [0]                      # or a count: seeds = 3 means [0, 1, 2]
    [fixed]                          # TrainConfig settings shared by every run
    max_epochs = 50
    [grid]                           # axes, expanded in the order written (first = outermost)
    optimizer = ["adam", "sgd"]
    lr = { by = "optimizer", adam = [1e-3, 1e-4], sgd = [1e-2, 1e-3] }   # values per optimizer
    regularization = [{ batch_norm = true }, { dropout = true }]         # bundles of settings
    [presets.quick]                  # named overrides of [fixed]
    width = 0.25

Each run has a stable ``run_id`` (identity.py: its stated settings and seed, versioned), so the
same run is recognised in any later invocation, and by later releases, and never enqueued twice.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from cnnsweep import identity
from cnnsweep.config import MAX_SEED, Protocol, TrainConfig, make_config
from cnnsweep.errors import ConfigError, describe_validation_error
from cnnsweep.results import check_metric
from cnnsweep.schema import level_label

Scalar = str | int | float | bool
AxisValue = Scalar | dict[str, Scalar]
_CONFIG_FIELDS = set(TrainConfig.model_fields)
# Study and preset names become folder names (runs/<study>-<preset>/): no separators, no dots first.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX_LENGTH = 100
# A study larger than this is refused unless asked for (--max-runs): a typo such as
# seeds = 1000000 should not enqueue a million runs.
MAX_RUNS = 100_000
MAX_SEED_COUNT = 1_000_000  # seeds = N larger than this is surely a mistake (and slow to list)


def check_name(name: str, what: str) -> str:
    """Refuse a study or preset name that is not a plain folder name."""
    if (
        not isinstance(name, str)
        or not re.fullmatch(NAME_PATTERN, name)
        or len(name) > NAME_MAX_LENGTH
    ):
        raise ConfigError(
            f"invalid {what} {name!r}: use letters, digits, '_', '.' and '-', starting with a "
            f"letter or digit, at most {NAME_MAX_LENGTH} characters"
        )
    return name


class DependentAxis(BaseModel):
    """Values that depend on an earlier axis: ``{ by = "optimizer", adam = [...], ... }``."""

    model_config = ConfigDict(extra="allow")
    by: str

    @model_validator(mode="after")
    def _lists_of_values(self) -> DependentAxis:
        for parent, values in (self.model_extra or {}).items():
            if not isinstance(values, list) or not values:
                raise ValueError(
                    f"values for {self.by}={parent!r} must be a non-empty list, e.g. "
                    f"{parent} = [{values!r}]"
                )
            for value in values:
                if not isinstance(value, str | int | float | bool | dict):
                    raise ValueError(f"value {value!r} for {self.by}={parent!r} is not a setting")
        return self

    @property
    def choices(self) -> dict[str, list[Scalar]]:
        return dict(self.model_extra or {})


class SearchRange(BaseModel):
    """A numeric range to search: ``lr = { low = 1e-4, high = 1e-1, log = true }``; integers
    (``batch_size = { low = 16, high = 128, log = true }``) are searched as integers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, not {self.low:g}")
        return self


SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband")


class SearchSpec(BaseModel):
    """``[search]``: Optuna samples ``trials`` runs from the ranges and lists given (every other
    key of the table is a setting to search), optionally pruning runs that fall behind on their
    per-epoch validation accuracy. Each trial is trained once, with the study's seed."""

    model_config = ConfigDict(extra="allow")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    trials: StrictInt = Field(ge=1, le=MAX_RUNS)
    pruner: Literal["median", "hyperband"] | None = None

    @model_validator(mode="after")
    def _space(self) -> SearchSpec:
        space = self.model_extra or {}
        if not space:
            raise ValueError("search has no settings to search: give ranges or lists of values")
        for name, values in space.items():
            if name == "seed" or name not in _CONFIG_FIELDS:
                raise ValueError(f"search setting {name!r} is not a setting")
            if isinstance(values, dict):
                try:
                    space[name] = SearchRange(**values)
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    where = ".".join(map(str, exc.errors()[0]["loc"]))
                    reason = f"{where}: {reason}" if where else reason
                    raise ValueError(f"search range {name!r}: {reason}") from None
                if self.sampler == "grid":
                    raise ValueError(f"sampler 'grid' needs a list of values for {name!r}")
            elif (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str | int | float | bool) for v in values)
            ):
                raise ValueError(
                    f"search setting {name!r} must be a range {{ low = …, high = … }} or a "
                    "non-empty list of values"
                )
        return self

    @property
    def space(self) -> dict[str, SearchRange | list[Scalar]]:
        return dict(self.model_extra or {})


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")  # settings are checked by TrainConfig, run by run

    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    description: str = ""
    data: str | None = None  # a data path; None = CIFAR-10, downloaded once
    protocol: Protocol = "holdout"
    # The report: the metric it ranks the factors by, and the claims it re-tests (a built-in set
    # such as "seed-report", or a TOML file, relative to the spec). Neither changes any run.
    metric: str = "test_accuracy"
    claims: str | None = None
    seeds: list[StrictInt] | StrictInt = [0]
    fixed: dict[str, Any] = {}
    grid: dict[str, list[AxisValue] | DependentAxis] = {}
    search: SearchSpec | None = None  # instead of a grid: Optuna samples the runs
    presets: dict[str, dict[str, Any]] = {}

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, seeds: list[int] | int) -> list[int]:
        if isinstance(seeds, int):
            if not 1 <= seeds <= MAX_SEED_COUNT:
                raise ValueError(f"a seed count must be between 1 and {MAX_SEED_COUNT:,}")
            seeds = list(range(seeds))
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        if min(seeds) < 0 or max(seeds) > MAX_SEED:
            raise ValueError(f"seeds must be between 0 and {MAX_SEED}")
        return seeds

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        return check_metric(metric)

    @field_validator("fixed")
    @classmethod
    def _known_fixed(cls, fixed: dict[str, Any]) -> dict[str, Any]:
        _check_settings(fixed, "[fixed]")
        return fixed

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, presets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, settings in presets.items():
            try:
                check_name(name, "preset name")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            _check_settings(settings, f"[presets.{name}]")
        return presets

    @field_validator("grid", mode="before")
    @classmethod
    def _axis_shapes(cls, grid: Any) -> Any:
        """Name the axis whose values are neither a list of settings nor a dependent table."""
        if not isinstance(grid, dict):
            return grid  # pydantic says what grid must be
        for name, axis in grid.items():
            values = axis if isinstance(axis, list) else None
            if isinstance(axis, dict):
                continue  # a dependent axis: checked by DependentAxis
            if values is None:
                raise ValueError(
                    f"grid axis {name!r} must be a list of values or a {{ by = … }} table, "
                    f"not {axis!r}"
                )
            for value in values:
                if not isinstance(value, str | int | float | bool | dict):
                    raise ValueError(
                        f"grid axis {name!r} has value {value!r}: a value is a string, number, "
                        "boolean or table of settings"
                    )
        return grid

    @field_validator("grid")
    @classmethod
    def _valid_grid(cls, grid: dict[str, list[AxisValue] | DependentAxis]):
        seen: dict[str, list[AxisValue]] = {}
        for name, axis in grid.items():
            if name == "seed":
                raise ValueError("grid axis 'seed': list seeds in the top-level 'seeds' instead")
            if isinstance(axis, DependentAxis):
                if axis.by not in seen:
                    raise ValueError(f"grid axis {name!r} depends on {axis.by!r}, no earlier axis")
                for parent_value in seen[axis.by]:
                    values = axis.choices.get(str(parent_value))
                    if not values:
                        raise ValueError(
                            f"grid axis {name!r} has no values for {axis.by}={parent_value!r}"
                        )
                    _check_axis_values(name, values)
                seen[name] = [v for vs in axis.choices.values() for v in vs]
            else:
                if not axis:
                    raise ValueError(f"grid axis {name!r} is empty")
                _check_axis_values(name, axis)
                seen[name] = axis
            _check_distinct_levels(name, seen[name])
        return grid


def _grid_or_search(spec: StudySpec) -> StudySpec:
    if spec.search is not None and spec.grid:
        raise ConfigError("a spec has a [grid] or a [search], not both")
    if spec.search is None and not spec.grid:
        raise ConfigError("grid is empty: give at least one axis (or a [search])")
    if spec.search is not None and len(spec.seeds) != 1:
        raise ConfigError("a search trains each trial once: give one seed (seeds = [0])")
    return spec


def _check_settings(settings: dict[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - _CONFIG_FIELDS - {"seed"})
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r} in {where}")
    if "seed" in settings:
        raise ValueError(f"'seed' in {where}: list seeds in the top-level 'seeds' instead")
    if "fold" in settings:
        raise ValueError(f"'fold' in {where}: a kfold study runs every fold; set 'folds'")


def _check_distinct_levels(name: str, values: list[AxisValue]) -> None:
    """Two values of one axis must not share a level: the report groups runs by level."""
    first: dict[str, AxisValue] = {}
    for value in values:
        if not isinstance(value, dict):
            continue  # a scalar is its own level (a repeated one is refused as a duplicate run)
        label = format_value(value)
        if first.setdefault(label, value) != value:
            raise ValueError(
                f"grid axis {name!r} has two values labelled {label!r} ({first[label]!r} and "
                f"{value!r}): give one of them a setting that is true only for it"
            )


def _check_axis_values(name: str, values: list[AxisValue]) -> None:
    for value in values:
        if isinstance(value, dict):
            _check_settings(value, f"grid axis {name!r}")
        elif name not in _CONFIG_FIELDS:
            raise ValueError(f"grid axis {name!r} is not a setting (bundle values need a table)")


@dataclass(frozen=True)
class Run:
    """One run of a study: a resolved config (seed included) and the grid values that chose it."""

    index: int  # position in the expansion (the report's loop order)
    run_id: str
    config: TrainConfig
    factors: dict[str, Any]  # axis name -> the value this run took (bundles as their table)

    @property
    def label(self) -> str:
        parts = [f"{k}={format_value(v)}" for k, v in self.factors.items()]
        fold = [f"fold={self.config.fold}"] if self.config.protocol == "kfold" else []
        return " ".join([*parts, f"seed={self.config.seed}", *fold])


def format_value(value: Any) -> str:
    """A grid value as a short label: bundles by their true keys (``batch_norm``)."""
    return str(level_label(value))


@dataclass(frozen=True)
class Study:
    """A spec with its preset applied: the name it is stored under, and its runs."""

    spec: StudySpec
    preset: str | None

    @property
    def name(self) -> str:
        return f"{self.spec.name}-{self.preset}" if self.preset else self.spec.name

    @property
    def settings(self) -> dict[str, Any]:
        """The settings shared by every run: protocol, [fixed], then the preset's overrides."""
        preset = self.spec.presets.get(self.preset, {}) if self.preset else {}
        return {"protocol": self.spec.protocol, **self.spec.fixed, **preset}

    def document(self) -> dict[str, Any]:
        """What is stored with the study and compared when it is run again."""
        return {
            "name": self.name,
            "spec": self.spec.model_dump(mode="json", exclude={"presets"}),
            "preset": self.preset,
            "preset_settings": self.spec.presets.get(self.preset, {}) if self.preset else {},
        }

    def factor_levels(self) -> dict[str, list[Scalar]]:
        """Each grid axis's levels (schema.level_label), in the order the spec lists them; a
        dependent axis has the levels of all its tables (learning rates of every optimizer)."""
        levels: dict[str, list[Scalar]] = {}
        for name, axis in self.spec.grid.items():
            values = (
                [v for vs in axis.choices.values() for v in vs]
                if isinstance(axis, DependentAxis)
                else axis
            )
            levels[name] = list(dict.fromkeys(level_label(v) for v in values))
        return levels

    def search_probes(self) -> list[TrainConfig]:
        """A search's extreme configs: each searched setting at each of its listed values and
        range ends, the others at their first value or low end (validated before anything is
        stored; sized by preflight)."""
        space = self.spec.search.space
        candidates = {name: [v.low, v.high] if isinstance(v, SearchRange) else list(v)
                      for name, v in space.items()}  # fmt: skip
        base = {name: values[0] for name, values in candidates.items()}
        base = {n: int(v) if integer_setting(n, v) else v for n, v in base.items()}
        configs = []
        for name, values in candidates.items():
            for value in values:
                value = int(value) if integer_setting(name, value) else value
                settings = {**self.settings, **base, name: value, "seed": self.spec.seeds[0]}
                try:
                    configs.append(make_config(**settings))
                except ConfigError as exc:
                    raise ConfigError(f"search setting {name}={value!r}: {exc}") from None
        return configs

    def count_runs(self, limit: int) -> int:
        """How many runs the study has, counting no further than ``limit + 1`` (cheap)."""
        if self.spec.search is not None:
            return self.spec.search.trials
        settings = self.settings
        folds = settings.get("folds", 5) if settings.get("protocol") == "kfold" else 1
        replicas = len(self.spec.seeds) * (folds if isinstance(folds, int) and folds > 0 else 1)
        combos = _expand(list(self.spec.grid.items()), {}, {})
        return replicas * sum(1 for _ in itertools.islice(combos, limit // replicas + 1))

    def runs(self, identity_version: int = identity.IDENTITY_VERSION) -> list[Run]:
        """Every run in the report's loop order, with ids under ``identity_version`` (a stored
        study keeps the version it was created with; see identity.py). A search has none in
        advance: its runs are sampled as workers ask for them (search.py)."""
        runs: list[Run] = []
        if self.spec.search is not None:
            return runs
        for factors, assignment in _expand(list(self.spec.grid.items()), {}, {}):
            for seed in self.spec.seeds:
                settings = {**self.settings, **assignment, "seed": seed}
                config = _config(settings, len(runs), factors)
                if config.protocol != "kfold":
                    replicas = [(settings, config)]
                else:  # one run per fold, each fold validating once
                    replicas = [({**settings, "fold": fold}, None) for fold in range(config.folds)]
                for stated, made in replicas:
                    made = made or _config(stated, len(runs), factors)
                    resolved = made.model_dump(mode="json")
                    run_id = identity.run_id(stated, resolved, identity_version)
                    runs.append(Run(len(runs), run_id, made, dict(factors)))
        first_index: dict[str, int] = {}
        for run in runs:
            if (earlier := first_index.setdefault(run.run_id, run.index)) != run.index:
                raise ConfigError(
                    f"runs {earlier + 1} and {run.index + 1} of study {self.name!r} are the same "
                    f"configuration ({run.label})"
                )
        return runs


def integer_setting(name: str, value: Any) -> bool:
    """Whether ``value`` (a search bound, read from TOML as a float) is a whole number for a
    setting of integer type, so that it is searched and used as an integer."""
    annotation = TrainConfig.model_fields[name].annotation
    return annotation in (int, int | None) and isinstance(value, float) and value.is_integer()


def study_from_document(document: dict[str, Any]) -> Study:
    """The Study a stored document describes (its spec, and its preset's settings)."""
    spec = dict(document["spec"])
    preset = document.get("preset")
    if preset:
        spec["presets"] = {preset: document.get("preset_settings", {})}
    return Study(StudySpec(**spec), preset)


def _config(settings: dict[str, Any], index: int, factors: dict[str, Any]) -> TrainConfig:
    try:
        return make_config(**settings)
    except ConfigError as exc:
        raise ConfigError(f"run {index + 1} ({_describe(factors)}): {exc}") from None


def _describe(factors: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in factors.items())


def _expand(axes, factors: dict[str, Any], assignment: dict[str, Any]):
    """Depth-first over the axes: the first axis is the outermost loop, as in the report."""
    if not axes:
        yield factors, assignment
        return
    (name, axis), rest = axes[0], axes[1:]
    values = axis.choices[str(factors[axis.by])] if isinstance(axis, DependentAxis) else axis
    for value in values:
        settings = value if isinstance(value, dict) else {name: value}
        yield from _expand(rest, {**factors, name: value}, {**assignment, **settings})


# --- loading -------------------------------------------------------------------------------


BUILTIN_CLAIMS = ("seed-report", "future")  # cnnsweep/report/claims/<name>.toml


def builtin_specs() -> dict[str, str]:
    """Built-in spec names -> their TOML text."""
    folder = resources.files("cnnsweep") / "studies"
    return {
        entry.name.removesuffix(".toml"): entry.read_text()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    }


def parse_spec(text: str, source: str) -> StudySpec:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML in {source}: {exc}") from None
    try:
        spec = StudySpec(**document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, 'key')}") from None
    try:
        return _grid_or_search(spec)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_spec(name_or_path: str) -> StudySpec:
    """A built-in spec by name, or a TOML file by path."""
    builtins = builtin_specs()
    if name_or_path in builtins:
        return parse_spec(builtins[name_or_path], f"built-in study {name_or_path!r}")
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.exists() and not path.is_file():
            raise ConfigError(f"study spec {path} is not a regular file")
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read study spec {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"study spec {path} is not UTF-8 text (byte {exc.start} cannot be decoded)"
            ) from None
        spec = parse_spec(text, str(path))
        if spec.claims and spec.claims not in BUILTIN_CLAIMS:  # a file beside the spec
            spec.claims = str((path.parent / spec.claims).resolve())
        return spec
    raise ConfigError(
        f"unknown study {name_or_path!r}: not a file; built-in studies: {', '.join(builtins)}"
    )


def load_study(name_or_path: str, preset: str | None = None, max_runs: int = MAX_RUNS) -> Study:
    spec = load_spec(name_or_path)
    if preset is not None and preset not in spec.presets:
        valid = ", ".join(spec.presets) or "none"
        raise ConfigError(f"study {spec.name!r} has no preset {preset!r}; presets: {valid}")
    study = Study(spec, preset)
    check_name(study.name, "study name")
    if (count := study.count_runs(max_runs)) > max_runs:
        raise ConfigError(
            f"study {study.name!r} has more than {max_runs:,} runs ({count:,} counted so far); "
            "pass --max-runs to run a study this large"
        )
    study.runs()  # validate every run's config now, before anything is stored
    if spec.search is not None:
        study.search_probes()  # and a search's extremes
    return study

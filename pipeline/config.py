"""Typed, validated params: every stage reads `params.yaml` through here.

Unknown keys and out-of-range values are rejected with one line that names
the key (for example ``defenses.l2.weight``) and the value that was given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.errors import PipelineError

RESERVED_TARGET_NAMES = ("undefended", "target")  # plots/roc/undefended.csv, plots/training/target.json


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"must be even so every point is IN for exactly half of the models (got {value})")
    return value


EvenCount = Annotated[StrictInt, AfterValidator(_even)]  # attacker models come in disjoint pairs


def _a_list(value: Any) -> Any:
    """A list of names stays as given; a single name or nothing is refused with the list to write instead."""
    if isinstance(value, str):
        raise ValueError(f"must be a list of names: write [{value}]")
    if value is None:
        raise ValueError("must be a list of names: write [] for none")
    return value


Names = Annotated[tuple[str, ...], BeforeValidator(_a_list)]  # dvc.yaml's foreach reads some of these lists


class StrictModel(BaseModel):
    """A params block: unknown keys are errors, values frozen (numbers strict where the field says so)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowParams(StrictModel):
    """The experiment runs go to; `register_models` also registers every audited target in the Model Registry."""

    experiment: str = Field("membership-inference", min_length=1)
    register_models: StrictBool = False


class DataParams(StrictModel):
    dataset: Literal["digits", "csv", "npz", "mnist", "fashion_mnist", "cifar10"] = "digits"
    path: str | None = None
    label_column: str = "label"
    categorical: Literal["one_hot", "error"] = "one_hot"  # csv: feature columns mostly not numbers one-hot encoded, or refused
    n_members: StrictInt = Field(350, gt=0)
    n_test: StrictInt = Field(300, gt=0)
    n_shadow_pool: StrictInt = Field(700, gt=0)
    n_defender_reference: StrictInt = Field(96, ge=0)
    min_per_class: StrictInt = Field(10, ge=1)
    member_column: str | None = None  # with target.model: the csv column (npz array) marking the rows that trained it
    member_index: str | None = None  # with target.model: a file under data/raw/ listing those rows' numbers

    @property
    def marks_members(self) -> bool:
        """Whether the data say which rows trained a given model (then the members are those rows)."""
        return self.member_column is not None or self.member_index is not None

    @model_validator(mode="after")
    def _one_member_marker(self) -> DataParams:
        if self.member_column is not None and self.member_index is not None:
            raise ValueError(
                "give at most one of member_column and member_index (the rows that trained target.model) "
                f"(got member_column={self.member_column!r}, member_index={self.member_index!r})"
            )
        return self

    @model_validator(mode="after")
    def _attacker_models_match_the_target(self) -> DataParams:
        """Shadow models train in disjoint pairs on n_members pool points each, with the defender's amount of reference data.

        With marked members their number comes from the data, so the
        prepare stage checks the same rules once it has read them.
        """
        if self.marks_members:
            return self
        if self.n_shadow_pool < 2 * self.n_members:
            raise ValueError(
                f"n_shadow_pool must be at least 2 * n_members = {2 * self.n_members}, so each pair of shadow "
                f"models trains on as many points as the target (got {self.n_shadow_pool})"
            )
        if self.n_defender_reference > self.n_shadow_pool - self.n_members:
            raise ValueError(
                f"n_defender_reference must be at most n_shadow_pool - n_members = "
                f"{self.n_shadow_pool - self.n_members}, so every shadow model gets as much defender data "
                f"as the target (got {self.n_defender_reference})"
            )
        return self


class ModelParams(StrictModel):
    """Architecture and training recipe; shadows copy the target's."""

    model: str | None = None  # a trained .keras file under data/raw/ to audit instead of training one
    architecture: Literal["mlp", "cnn"] = "mlp"
    hidden_units: StrictInt = Field(128, gt=0)
    conv_filters: tuple[StrictInt, ...] = Field((16, 32), min_length=1)
    epochs: StrictInt = Field(40, gt=0)
    batch_size: StrictInt = Field(32, gt=0)
    learning_rate: StrictFloat = Field(1e-3, gt=0)

    @field_validator("conv_filters")
    @classmethod
    def _positive_filters(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(f <= 0 for f in value):
            raise ValueError(f"every filter count must be positive (got {list(value)})")
        return value


class ShadowParams(StrictModel):
    n_models: EvenCount = Field(8, ge=2)


class ReferenceParams(StrictModel):
    """Reference models of online attacks: each trained on one half of the candidates, like the target."""

    n_models: EvenCount = Field(8, ge=4)


class ComputeParams(StrictModel):
    """Where the attacker's models train: shards of `shard_size` models, here in turn or as Ray tasks.

    One shard trains with its set's own seed (so results do not depend on
    `shard_size` while every model fits in one); shard j of several with a
    seed derived from it and j, whichever backend runs it.
    """

    backend: Literal["local", "ray"] = "local"
    address: str | None = None  # ray: the cluster's address (null: RAY_ADDRESS, else a local instance)
    shard_size: StrictInt = Field(16, ge=1)
    max_retries: StrictInt = Field(2, ge=0)


class AttackSettings(StrictModel):
    """Which attacks run, and `tune_for`: what every choice made on shadow data maximises.

    `tune_for` drives RMIA's `a`, the shadow classifier's model family and
    the headline attack of each target, all chosen on shadow data only.
    The attacks' own blocks (`attack.lira`, `attack.rmia`, ...) and the
    names in `enabled` are checked against the attack registry by
    `pipeline.checks` and the attack stages, so this schema, which every
    stage reads, names no attack.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    enabled: Names = ("shadow_classifier", "loss_threshold")
    tune_for: Literal["tpr_at_1pct_fpr", "auc"] = "tpr_at_1pct_fpr"

    @field_validator("enabled")
    @classmethod
    def _listed_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one attack")
        if len(set(value)) != len(value):
            raise ValueError(f"each attack may be listed once (got {list(value)})")
        return value

    def blocks(self) -> dict[str, Any]:
        """The attacks' own settings blocks, as written (validated by the attack registry)."""
        return dict(self.model_extra or {})


class DefenseBlock(StrictModel):
    """`defenses.<name>`: its `type`; the other keys are that defense's own settings.

    They are validated by the defense's class (`pipeline.defenses.registry`),
    so this schema names no defense.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str

    def settings(self) -> dict[str, Any]:
        """The whole block as written, `type` included."""
        return {"type": self.type, **(self.model_extra or {})}



class DefenseSettings(StrictModel):
    """Which configured defenses run (each becomes a stage defend@<name>), and how they are attacked."""

    adaptive: StrictBool = True
    run: Names = ("dropout", "l2")

    @field_validator("run")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"each defense may be listed once (got {list(value)})")
        return value


class CanaryParams(StrictModel):
    """The one-run canary audit (Steinke, Nasr and Jagielski 2023) of the undefended target and `defenses`.

    `n` canaries of `kind` (and, for DP-SGD, `n` gradient canaries), each
    in the canary run's training on its own fair coin; the bound is
    computed for each k of `guesses` (the k/2 highest scores guessed in,
    the k/2 lowest out) at `delta`.
    """

    n: StrictInt = Field(1000, ge=2)
    kind: Literal["ood", "mislabeled"] = "mislabeled"
    guesses: tuple[StrictInt, ...] = (20, 50, 100, 200, 500, 1000)
    delta: StrictFloat = Field(1e-5, gt=0, lt=1)
    defenses: Names = ()

    @model_validator(mode="after")
    def _guesses_fit(self) -> CanaryParams:
        bad = [k for k in self.guesses if not 1 <= k <= self.n]
        if not self.guesses or bad or len(set(self.guesses)) != len(self.guesses):
            raise ValueError(
                f"canaries.guesses: give distinct guess counts between 1 and canaries.n = {self.n} "
                f"(got {list(self.guesses)})"
            )
        if len(set(self.defenses)) != len(self.defenses):
            raise ValueError(f"canaries.defenses: each defense may be listed once (got {list(self.defenses)})")
        return self


class RecipeAuditParams(StrictModel):
    """The recipe audit: does a defense reduce leakage, and at what accuracy cost?

    Every recipe (the undefended training, each defense in `defense.run`,
    each DP-SGD setting of `dp_baseline`) trains `n_models` models on
    complementary halves of the audit pool (the candidates) plus
    `n_canaries` mislabeled canaries, the same design for every recipe, so
    comparisons are paired. `dp_baseline` names configured `dp_sgd`
    defenses (typically at several epsilons) that trace the DP-SGD
    privacy-utility frontier the heuristic defenses are compared with.
    """

    n_models: EvenCount = Field(32, ge=4)
    n_canaries: EvenCount = Field(64, ge=2)
    dp_baseline: Names = ()
    accuracy_tolerance: StrictFloat = Field(0.01, ge=0, lt=1)  # a DP setting this close in test accuracy counts as accurate


class Params(StrictModel):
    seed: StrictInt = Field(42, ge=0)
    mlflow: MlflowParams = MlflowParams()
    data: DataParams = DataParams()
    target: ModelParams = ModelParams()
    shadows: ShadowParams = ShadowParams()
    reference: ReferenceParams = ReferenceParams()
    compute: ComputeParams = ComputeParams()
    attack: AttackSettings = AttackSettings()
    defense: DefenseSettings = DefenseSettings()
    defenses: dict[str, DefenseBlock] = Field(default_factory=dict)
    canaries: CanaryParams = CanaryParams()
    recipe_audit: RecipeAuditParams = RecipeAuditParams()

    @model_validator(mode="after")
    def _runs_configured_defenses(self) -> Params:
        missing = [name for name in self.defense.run if name not in self.defenses]
        if missing:
            raise ValueError(
                f"defense.run: {missing[0]!r} is not configured under defenses "
                f"(configured: {', '.join(self.defenses) or 'none'}); add a defenses.{missing[0]} block with its type, "
                "or drop it from defense.run"
            )
        not_run = [name for name in self.canaries.defenses if name not in self.defense.run]
        if not_run:
            raise ValueError(
                f"canaries.defenses: {not_run[0]!r} is not in defense.run ({', '.join(self.defense.run) or 'empty'}); "
                "audit only defenses that run, or add it to defense.run"
            )
        baseline = self.recipe_audit.dp_baseline
        unknown = [name for name in baseline if name not in self.defenses]
        if unknown:
            raise ValueError(
                f"recipe_audit.dp_baseline: {unknown[0]!r} is not configured under defenses "
                f"(configured: {', '.join(self.defenses) or 'none'}); add a defenses.{unknown[0]} block with "
                "type: dp_sgd, or drop it from recipe_audit.dp_baseline"
            )
        twice = [name for name in baseline if name in self.defense.run or baseline.count(name) > 1]
        if twice:
            raise ValueError(
                f"recipe_audit.dp_baseline: {twice[0]!r} is listed twice (defense.run's recipes are audited already); "
                "list each DP-SGD setting once"
            )
        return self

    @model_validator(mode="after")
    def _audited_model_has_its_members(self) -> Params:
        if self.target.model is not None and not self.data.marks_members:
            raise ValueError(
                "data.member_column or data.member_index: target.model is set, so the data must mark the rows "
                "that trained it (a 0/1 column, or a file of row numbers under data/raw/)"
            )
        if self.target.model is None and self.data.marks_members:
            raise ValueError(
                "target.model: data.member_column or data.member_index marks the rows that trained a model, "
                "but no model is given; set target.model to its .keras file under data/raw/, or the marker to null"
            )
        if self.target.model is not None and not self.target.model.endswith(".keras"):
            raise ValueError(
                f"target.model: must be a .keras file (Keras 3 format: model.save('model.keras')); got {self.target.model!r}"
            )
        return self

    @field_validator("defenses")
    @classmethod
    def _stage_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(
                    f"defense name {name!r} must use only letters, digits, '_' and '-' "
                    "(it becomes the DVC stage defend@<name>)"
                )
            if name in RESERVED_TARGET_NAMES:
                raise ValueError(f"defense name {name!r} is reserved for the undefended target's files; pick another")
        return value


def describe_errors(error: ValidationError, source: str, prefix: str = "") -> str:
    """One line per problem, `source: key.path: message (got value)`; `prefix` is the validated block's own key."""
    lines = []
    for item in error.errors():
        loc = ".".join([prefix] * bool(prefix) + [str(part) for part in item["loc"]])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        got = item.get("input")
        quiet = item["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) or not loc
        suffix = "" if quiet else f" (got {got!r})"
        where = f"{loc}: " if loc else ""  # whole-file checks name their keys themselves
        lines.append(f"{source}: {where}{message}{suffix}")
    return "; ".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping into `Params`."""
    if raw is None:
        raise PipelineError(
            f"{source}: the file is empty; restore the project's (git checkout {source}) and edit the settings in it"
        )
    if not isinstance(raw, dict):
        raise PipelineError(
            f"{source}: expected a mapping at the top level (key: value lines), got a {type(raw).__name__}; "
            f"restore the project's (git checkout {source}) and edit the settings in it"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(describe_errors(error, source)) from None


class _Yaml12Floats(yaml.SafeLoader):
    """YAML 1.1 reads `1e-05` (no dot) as a string; YAML 1.2, as DVC writes `-S` values, reads a float."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_params(path: str | Path = "params.yaml") -> Any:
    """The params file as YAML reads it (numbers as YAML 1.2 reads them), not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found")
    try:
        return yaml.load(path.read_text(), Loader=_Yaml12Floats)
    except yaml.YAMLError as error:
        raise PipelineError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the params file; raises PipelineError on any problem."""
    return parse_params(read_params(path), Path(path).name)


def flatten_mapping(tree: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys of a nested mapping's leaves (lists and tuples are leaves)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = value

    walk("", tree)
    return out


def flatten(params: Params) -> dict[str, Any]:
    """Dotted-key view of the params, the form MLflow's runs table compares."""
    flat = flatten_mapping(params.model_dump(mode="python"))
    return {key: list(value) if isinstance(value, tuple) else value for key, value in flat.items()}

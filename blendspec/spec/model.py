"""The one typed spec model that both syntaxes build (DESIGN §2).

The YAML form *is* this model's validation schema, except that formulas (objectives, utility,
similarity, rewards) are written as strings in the expression language; they are held here as
expression trees. Models are frozen and forbid unknown fields, so a typo in a key is an error, not a
silently ignored setting. Cross-references (does `p_click` exist? is it a score?) are the semantic
passes' job (`blendspec.spec.checks`), because they need the whole spec and want to report many errors at
once with precise spans.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# The `diversity` block is one plugin class per algorithm and each in-loop constraint one plugin
# class per kind (blendspec.diversity, blendspec.constraints), each carrying its parameters and
# its behaviour at every stage; the names stay importable from here.
from blendspec.constraints import Cap, SemanticIdPenalty, Spacing
from blendspec.diversity import Diversifier, Diversity, Dpp, Mmr, NoDiversity, Ssd  # noqa: F401

# The building blocks are part of the model's public names (callers import them from here).
from blendspec.spec.base import (  # noqa: F401
    MAX_ACTIONS,
    MAX_CAP,
    MAX_INPUT_SIZE,
    MAX_MAGNITUDE,
    MAX_PARAMETER,
    MAX_SLATE,
    MAX_TRUNCATE,
    MAX_WINDOW,
    MIN_TEMPERATURE,
    NAME_PATTERN,
    BinOp,
    Call,
    Coefficient,
    Const,
    Expr,
    Formula,
    Model,
    Name,
    Neg,
    Positive,
    Probability,
    Ref,
    Relevance,
    Tolerance,
    Window,
    _check_name,
    _not_bool,
)

# ---------------------------------------------------------------- inputs

SCALAR_INPUT_KINDS = ("score", "category", "flag")
SIZED_INPUT_KINDS = ("embedding", "semantic_id", "features")
INPUT_KINDS = SCALAR_INPUT_KINDS + SIZED_INPUT_KINDS
_INPUT_TYPE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([^\]]*?)\s*\])?\s*$", re.ASCII
)  # ASCII spaces only, like the DSL


_INPUT_SCHEMA = {
    "type": "string",
    "pattern": r"^(score|category|flag|(embedding|semantic_id|features)\[[1-9][0-9]*\])$",
    "description": "score, category, flag, embedding[D], semantic_id[L] or features[D]",
}


class Input(Model):
    """A typed column of the candidate dump: `score`, `embedding[D]`, `semantic_id[L]`, …"""

    kind: Literal["score", "embedding", "semantic_id", "category", "flag", "features"]
    size: Annotated[int, Field(le=MAX_INPUT_SIZE), BeforeValidator(_not_bool)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return parse_input_type(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sized(self) -> Input:
        if self.kind in SIZED_INPUT_KINDS and (self.size is None or self.size < 1):
            raise PydanticCustomError(
                "E104",
                "`{kind}` needs a size of at least 1, as in `{kind}[8]`",
                {"kind": self.kind},
            )
        if self.kind in SCALAR_INPUT_KINDS and self.size is not None:
            raise PydanticCustomError("E104", "`{kind}` takes no size", {"kind": self.kind})
        return self

    def __str__(self) -> str:
        return self.kind if self.size is None else f"{self.kind}[{self.size}]"

    @property
    def per_request(self) -> bool:
        """Request features are constant within a request; every other input is per candidate."""
        return self.kind == "features"


def parse_input_type(text: str) -> dict[str, Any]:
    match = _INPUT_TYPE.match(text)
    if not match:
        raise PydanticCustomError(
            "E104", "`{text}` is not an input type; expected one of {kinds}", _kinds(text)
        )
    kind, size = match.group(1), match.group(2)
    if kind not in INPUT_KINDS:
        from blendspec.spec.diagnostics import did_you_mean

        hint = did_you_mean(kind, INPUT_KINDS)
        raise PydanticCustomError(
            "E104",
            "unknown input type `{kind}`; expected one of {kinds}" + (f" ({hint})" if hint else ""),
            {"kind": kind, "kinds": ", ".join(INPUT_KINDS)},
        )
    if size is None:
        return {"kind": kind}
    if not _DIGITS.fullmatch(size):
        raise PydanticCustomError(
            "E104",
            "the size of `{kind}` must be a whole number, not `{size}`",
            {"kind": kind, "size": size},
        )
    if len(size.lstrip("0")) > len(str(MAX_INPUT_SIZE)) or int(size) > MAX_INPUT_SIZE:
        raise PydanticCustomError(
            "E104",
            "the size of `{kind}` must be at most {max}, not {size}",
            {
                "kind": kind,
                "size": size if len(size) <= 20 else size[:20] + "…",
                "max": MAX_INPUT_SIZE,
            },
        )
    return {"kind": kind, "size": int(size)}


_DIGITS = re.compile(r"[0-9]+")
"""ASCII digits only: `str.isdigit` would also take `٦٤` (Arabic-Indic 64) as a size."""


def _kinds(text: str) -> dict[str, str]:
    return {"text": text, "kinds": ", ".join(INPUT_KINDS)}


# ---------------------------------------------------------------- weights


class Weight(Model):
    """A named utility weight: default, bounds [lo, hi], implied sign, and where its value comes from."""

    # Non-finite values reach `_finite` below, which says so in the words weights always used.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=True
    )

    default: Annotated[float, BeforeValidator(_not_bool)]
    bounds: tuple[
        Annotated[float, BeforeValidator(_not_bool)], Annotated[float, BeforeValidator(_not_bool)]
    ]
    sign: Literal["positive", "negative", "any"] = "positive"
    source: Literal["fixed", "policy"] = "fixed"
    grid: tuple[Annotated[float, BeforeValidator(_not_bool)], ...] | None = None

    @field_validator("default", "bounds", "grid")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and not math.isfinite(v) for v in values):
            raise PydanticCustomError("E100", "numbers in a spec must be finite")
        if any(v is not None and abs(v) > MAX_MAGNITUDE for v in values):
            raise PydanticCustomError("E100", "weights lie within ±1e9")
        return value

    @model_validator(mode="after")
    def _grid_matches_source(self) -> Weight:
        if self.source == "policy" and not self.grid:
            raise PydanticCustomError(
                "E101", "a weight whose source is `policy` needs a `grid` of values to choose from"
            )
        if self.source == "fixed" and self.grid is not None:
            raise PydanticCustomError(
                "E100", "`grid` is only meaningful for a weight whose source is `policy`"
            )
        return self


# ---------------------------------------------------------------- penalties and rules


class Rules(Model):
    """Hard rules applied before and during selection."""

    filters: tuple[Name, ...] = ()
    caps: dict[Name, Cap] = Field(default_factory=dict)
    truncate: Annotated[int, Field(ge=1, le=MAX_TRUNCATE), BeforeValidator(_not_bool)] | None = None


class Slate(Model):
    """The slate's length T, a compile-time constant."""

    length: Annotated[int, Field(ge=1, le=MAX_SLATE), BeforeValidator(_not_bool)]


# ---------------------------------------------------------------- policy


class NoExploration(Model):
    kind: Literal["none"]


class UniformExploration(Model):
    """Every action of the grid with equal probability (exploration traffic)."""

    kind: Literal["uniform"]


class EpsilonExploration(Model):
    """With probability epsilon a uniformly drawn action, otherwise the policy's choice."""

    kind: Literal["epsilon"]
    epsilon: Probability


class SoftmaxExploration(Model):
    """Sample the policy's softmax at a temperature."""

    kind: Literal["softmax"]
    temperature: Annotated[
        float, Field(ge=MIN_TEMPERATURE, le=MAX_PARAMETER), BeforeValidator(_not_bool)
    ]


Exploration = Annotated[
    NoExploration | UniformExploration | EpsilonExploration | SoftmaxExploration,
    Field(discriminator="kind"),
]


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class Policy(Model):
    """DRL-PUT: a network maps a request's state to one action of the policy weights' grid."""

    state: Annotated[tuple[Name, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
    file: str | None = None
    exploration: Exploration = Field(default_factory=lambda: NoExploration(kind="none"))
    reward: Name | None = None
    fallback: Literal["defaults", "nearest"] = "defaults"


# ---------------------------------------------------------------- the spec


class Spec(Model):
    """A whole blending layer: inputs → utility → diversity under penalties and rules → slate."""

    name: Name
    slate: Slate
    inputs: Annotated[
        dict[Name, Annotated[Input, WithJsonSchema(_INPUT_SCHEMA, mode="validation")]],
        Field(min_length=1),
    ]
    objectives: dict[Name, Formula] = Field(default_factory=dict)
    weights: dict[Name, Weight] = Field(default_factory=dict)
    utility: Formula
    diversity: Diversity = Field(default_factory=lambda: NoDiversity(algorithm="none"))
    spacing: dict[Name, Spacing] = Field(default_factory=dict)
    semantic_id_penalty: SemanticIdPenalty | None = None
    rules: Rules = Field(default_factory=Rules)
    outcomes: tuple[Name, ...] = ()
    rewards: dict[Name, Formula] = Field(default_factory=dict)
    policy: Policy | None = None

    @field_validator("inputs", "objectives", "weights", "spacing", "rewards", mode="before")
    @classmethod
    def _valid_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise PydanticCustomError(
                        "E100", "names must be text, not `{key}`", {"key": key}
                    )
                _check_name(key)
        return value

    @property
    def policy_weights(self) -> tuple[str, ...]:
        """The weights a policy sets, in declaration order: the axes of the action grid."""
        return tuple(name for name, w in self.weights.items() if w.source == "policy")

    @property
    def action_count(self) -> int:
        count = 1
        for name in self.policy_weights:
            count *= len(self.weights[name].grid or ())
        return count if self.policy_weights else 0

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
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Ranges of every number a spec holds (docs/errors.md, E100/E104). A spec that validates must run:
# these keep every compiled tensor small, every float finite through the float32 graph, and every
# value exact in both syntaxes (all integers below 2**53, so YAML → DSL → YAML changes nothing).
MAX_SLATE = 10_000
"""Slate length T: the greedy loop runs T steps and per-request state is O(T)."""
MAX_WINDOW = 1_000
"""Look-back windows (diversity, spacing, semantic-ID penalty, caps). The compiled SSD and DPP
loops size buffers by the window, not by min(window, T) (SSD keeps a window × window Gram matrix
per request: 4 MB at 1,000, 400 MB at 10,000), and a window of more than a few dozen slots has no
use."""
MAX_TRUNCATE = 1_000_000
"""Pre-truncation M: the number of candidates a request keeps."""
MAX_CAP = 10_000
"""A cap's `max`: more than T can never bind."""
MAX_INPUT_SIZE = 65_536
"""D of `embedding[D]` / `features[D]` and L of `semantic_id[L]`."""
MAX_ACTIONS = 100_000
"""The policy's action grid (the product of its weights' grid sizes): each request holds a
distribution over every action."""
MAX_MAGNITUDE = 1e9
"""Weights (default, bounds, grid) and numbers in formulas lie in [-1e9, 1e9]."""
MAX_PARAMETER = 1e6
"""Upper bound of the positive parameters: gamma, alpha, temperature, penalty coefficients."""
MIN_TEMPERATURE = 1e-6
"""A softmax temperature below this turns finite scores into infinities."""


def _not_bool(value: Any) -> Any:
    """YAML `true` is not the number 1: pydantic's lax mode would read it as one. A whole number
    past every range is named as such (pydantic would call a 400-digit int "not a valid number")."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "E100", "expected a number, not `{value}`", {"value": str(value).lower()}
        )
    if isinstance(value, int) and value.bit_length() > 60:
        raise PydanticCustomError("E100", "this number is far out of range")
    return value


class Model(BaseModel):
    # allow_inf_nan=False: `inf`, `.inf`, `"Infinity"` and `1e400` (which PyYAML reads as text) are
    # not numbers a spec can hold; every float field rejects them with a located E100.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise PydanticCustomError("E100", "expected a name, not `{value}`", {"value": repr(name)})
    if not NAME_PATTERN.fullmatch(name):
        raise PydanticCustomError(
            "E100",
            "`{name}` is not a valid name (letters, digits and _, not starting with a digit)",
            {"name": name},
        )
    return name


Name = Annotated[str, BeforeValidator(_check_name)]


# ---------------------------------------------------------------- expressions


class Const(Model):
    """A numeric literal."""

    # Non-finite values reach `_finite` below, which says so in the words formulas always used.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=True
    )

    kind: Literal["const"] = "const"
    value: Annotated[float, BeforeValidator(_not_bool)]

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise PydanticCustomError("E100", "numbers in a spec must be finite")
        if abs(value) > MAX_MAGNITUDE:
            raise PydanticCustomError(
                "E100",
                "`{value}` is too large: numbers in a formula lie within ±1e9",
                {"value": _short(value)},
            )
        return value


def _short(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class Ref(Model):
    """A reference to a named input, objective, weight or outcome."""

    kind: Literal["ref"] = "ref"
    name: str


class Neg(Model):
    """Unary minus of a non-literal (a negated literal is folded into `Const`)."""

    kind: Literal["neg"] = "neg"
    operand: Expr


class BinOp(Model):
    """`left op right` for op in + - * /."""

    kind: Literal["binop"] = "binop"
    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr


class Call(Model):
    """A transform (log1p, clip, pow, zscore, rank) or a similarity signal (cosine, category, prefix)."""

    kind: Literal["call"] = "call"
    fn: str
    args: tuple[Expr, ...]


def _parse_expression_text(value: Any) -> Any:
    """Python callers may pass formulas as text, like the YAML form; parse them the same way."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "E100", "expected a formula, not `{value}`", {"value": str(value).lower()}
        )
    if isinstance(value, str):
        from blendspec.spec.syntax import parse_expression

        return parse_expression(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"kind": "const", "value": float(value)}
    return value


_EXPR_SCHEMA = {
    "type": "string",
    "description": "A formula in the blendspec expression language, e.g. `0.5 * log1p(p_save)`.",
}

Expr = Annotated[
    Const | Ref | Neg | BinOp | Call,
    Field(discriminator="kind"),
]
Formula = Annotated[
    Expr, BeforeValidator(_parse_expression_text), WithJsonSchema(_EXPR_SCHEMA, mode="validation")
]

for _node in (Neg, BinOp, Call):
    _node.model_rebuild()


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


# ---------------------------------------------------------------- diversity

Relevance = Literal["zscore", "minmax", "raw"]
Probability = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_not_bool)]
Window = Annotated[int, Field(ge=1, le=MAX_WINDOW), BeforeValidator(_not_bool)]
Positive = Annotated[float, Field(gt=0.0, le=MAX_PARAMETER), BeforeValidator(_not_bool)]
Tolerance = Annotated[float, Field(gt=0.0, le=1.0), BeforeValidator(_not_bool)]
Coefficient = Annotated[float, Field(ge=0.0, le=MAX_PARAMETER), BeforeValidator(_not_bool)]


class Ssd(Model):
    """Sliding Spectrum Decomposition (Huang et al. 2021), stabilised variant by default."""

    algorithm: Literal["ssd"]
    similarity: Formula
    theta: Probability = 0.5
    gamma: Positive = 1.0
    window: Window = 10
    variant: Literal["stabilized", "volume"] = "stabilized"
    relevance: Relevance = "zscore"
    epsilon: Tolerance = 1e-6


class Dpp(Model):
    """Greedy MAP of a DPP by incremental Cholesky (Chen et al. 2018), optionally windowed."""

    algorithm: Literal["dpp"]
    similarity: Formula
    alpha: Positive = 1.0
    window: Window | None = None
    relevance: Relevance = "zscore"
    epsilon: Tolerance = 1e-6


class Mmr(Model):
    """Maximal Marginal Relevance (Carbonell & Goldstein 1998)."""

    algorithm: Literal["mmr"]
    similarity: Formula
    lambda_: Probability = Field(default=0.5, alias="lambda")
    relevance: Relevance = "zscore"


class NoDiversity(Model):
    """No diversifier: greedy by utility, still under the spec's penalties and caps."""

    algorithm: Literal["none"]


Diversity = Annotated[Ssd | Dpp | Mmr | NoDiversity, Field(discriminator="algorithm")]


# ---------------------------------------------------------------- penalties and rules


class Spacing(Model):
    """Soft spacing of one sensitive set (a flag input), DESIGN §3.5."""

    window: Window
    coefficient: Coefficient


class SemanticIdPenalty(Model):
    """Penalty on semantic-ID prefix overlap with recent slate items, DESIGN §3.6."""

    input: Name
    window: Window
    min_prefix: Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE), BeforeValidator(_not_bool)] = 1
    coefficient: Coefficient


class Cap(Model):
    """At most `max` items of one category in any `window` consecutive slots, DESIGN §3.8."""

    max: Annotated[int, Field(ge=1, le=MAX_CAP), BeforeValidator(_not_bool)]
    window: Window


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

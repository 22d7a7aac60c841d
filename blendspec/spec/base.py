"""The building blocks of the spec model: the frozen base class, names, the expression tree and
the ranges every number of a spec lies in.

They live apart from `spec/model.py` so that each diversifier plugin (`blendspec.diversity`) can
declare its own parameters with them while the model assembles the plugins' union: the model
imports the plugins, and both import this module.
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


# ---------------------------------------------------------------- parameters

Relevance = Literal["zscore", "minmax", "raw"]
Probability = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_not_bool)]
Window = Annotated[int, Field(ge=1, le=MAX_WINDOW), BeforeValidator(_not_bool)]
Positive = Annotated[float, Field(gt=0.0, le=MAX_PARAMETER), BeforeValidator(_not_bool)]
Tolerance = Annotated[float, Field(gt=0.0, le=1.0), BeforeValidator(_not_bool)]
Coefficient = Annotated[float, Field(ge=0.0, le=MAX_PARAMETER), BeforeValidator(_not_bool)]

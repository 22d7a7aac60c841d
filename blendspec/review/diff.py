"""`blend diff`: what a spec change means, how serious it is, and what it does to real slates.

A text diff of a spec tells a reviewer little: it shows reordered keys and reformatted lines, and
hides that a weight doubled or that an input the serving stack provides is gone. This module diffs
the *meaning* instead:

* both specs are read into the typed model, so formatting, comments, key order and YAML-vs-DSL make
  no difference; named things (inputs, objectives, weights, signals, utility terms, sets, caps,
  rewards) are matched by name, never by position;
* a renamed input is one rename, not a removal and an addition, when it can be told: the same type,
  and every place the spec uses it maps onto the new name (objectives and weights the same way);
* every change has a severity: **breaking** when something outside the spec stops fitting (the
  dump's columns, a trained policy, consumers of the slates), **behavioural** when the slates may
  change, **cosmetic** when nothing does;
* with a candidate dump, both specs blend the same requests and the slates and metrics are compared
  (`compute_impact`).

Renderers live in `blendspec.review.render`; the `blend diff` command is `blendspec.cli.diff`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blendspec.spec.emit import format_expr, format_number
from blendspec.spec.forms import constant_value, is_constant, refs, split_similarity, split_utility
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import (
    BinOp,
    Call,
    Const,
    Dpp,
    Expr,
    Mmr,
    Neg,
    NoDiversity,
    Ref,
    Spec,
    Ssd,
    Weight,
)
from blendspec.spec.syntax import KEY, PathKey, syntax_of

if TYPE_CHECKING:
    import torch

    from blendspec.io.dump import DumpReader, RequestBatch

DIFF_FORMAT_VERSION = 1


class Severity(StrEnum):
    """How serious a change is; the order of the members is the order of seriousness."""

    breaking = "breaking"
    behavioural = "behavioural"
    cosmetic = "cosmetic"

    @property
    def rank(self) -> int:
        return {"breaking": 2, "behavioural": 1, "cosmetic": 0}[self.value]


SEVERITIES: tuple[Severity, ...] = (Severity.breaking, Severity.behavioural, Severity.cosmetic)


@dataclass(frozen=True)
class Location:
    """Where a change shows in a file: 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True)
class Change:
    """One semantic change.

    `path` names the changed thing in the spec's YAML form (`weights.w_click.default`); keyed
    members of formulas are written in brackets (`utility[w_click * click]`,
    `diversity.similarity[cosine(visual)]`). `old`/`new` are JSON values (None where the thing
    does not exist on that side); `relative_change` is (new - old) / |old| for numbers.
    `old_at`/`new_at` locate the change in the old and new files; `anchor` is where an annotation
    on the new file goes when the thing exists only in the old one (its section, if any).
    """

    kind: str
    path: str
    severity: Severity
    description: str
    old: Any = None
    new: Any = None
    relative_change: float | None = None
    old_at: Location | None = field(default=None, compare=False)
    new_at: Location | None = field(default=None, compare=False)
    anchor: Location | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "severity": self.severity.value,
            "old": self.old,
            "new": self.new,
            "relative_change": _round(self.relative_change),
            "description": self.description,
            "old_line": self.old_at.line if self.old_at else None,
            "new_line": self.new_at.line if self.new_at else None,
        }


@dataclass
class SpecDiff:
    """The changes between two specs (or the addition/deletion of one), and optionally the impact."""

    old_file: str | None
    new_file: str | None
    old_name: str | None
    new_name: str | None
    changes: list[Change]
    status: str = "modified"  # modified | added | deleted
    impact: Impact | None = None
    deleted_path: str | None = None  # a deleted spec's path, for annotations

    @property
    def annotated_file(self) -> str:
        """The file that GitHub annotations name: the new file, or where a deleted one was."""
        return self.new_file or self.deleted_path or self.old_file or ""

    def count(self, severity: Severity) -> int:
        return sum(1 for c in self.changes if c.severity is severity)

    @property
    def worst(self) -> Severity | None:
        return max((c.severity for c in self.changes), key=lambda s: s.rank, default=None)

    def by_severity(self) -> list[Change]:
        """Changes ordered by severity, keeping the spec's section order within one severity."""
        return sorted(self.changes, key=lambda c: -c.severity.rank)


@dataclass
class DiffReport:
    """What one `blend diff` run found: one SpecDiff per compared pair of files."""

    files: list[SpecDiff]

    @property
    def changes(self) -> list[Change]:
        return [c for f in self.files for c in f.changes]

    def count(self, severity: Severity) -> int:
        return sum(f.count(severity) for f in self.files)

    def fails(self, *, exit_code: bool, fail_on: Severity | None) -> bool:
        """The exit-code contract: any change with --exit-code; changes at least `fail_on` else."""
        changes = self.changes
        if exit_code and changes:
            return True
        if fail_on is not None:
            return any(c.severity.rank >= fail_on.rank for c in changes)
        return False


# ---------------------------------------------------------------- small helpers


def relative(old: Any, new: Any) -> float | None:
    """(new - old) / |old| for two numbers, None when undefined (old is 0, or not numbers)."""
    numbers = (int, float)
    if isinstance(old, bool) or isinstance(new, bool):
        return None
    if isinstance(old, numbers) and isinstance(new, numbers) and old != 0:
        return (new - old) / abs(old)
    return None


def _round(value: float | None, digits: int = 6) -> float | None:
    """Round to `digits` significant digits so JSON is stable across platforms; NaN → None."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def fmt_value(value: Any) -> str:
    """A spec value the way the spec writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def fmt_relative(rel: float | None) -> str:
    """`(+40%)`; a tenfold or larger growth reads better as a factor: `(×100)`."""
    if rel is None:
        return ""
    if rel >= 9:
        return f" (×{1 + rel:.3g})"
    return f" ({rel * 100:+.3g}%)"


def _grid_text(grid: Sequence[float] | None) -> str:
    if not grid:
        return "none"
    values = [format_number(v) for v in grid]
    if len(values) > 6:
        values = [*values[:2], "…", values[-1]]
    return f"[{', '.join(values)}] ({len(grid)} values)"


def _rename_expr(expr: Expr, names: Mapping[str, str]) -> Expr:
    """The expression with references renamed (old name → new name)."""
    if isinstance(expr, Ref):
        return Ref(name=names[expr.name]) if expr.name in names else expr
    if isinstance(expr, Neg):
        return Neg(operand=_rename_expr(expr.operand, names))
    if isinstance(expr, BinOp):
        return BinOp(
            op=expr.op, left=_rename_expr(expr.left, names), right=_rename_expr(expr.right, names)
        )
    if isinstance(expr, Call):
        return Call(fn=expr.fn, args=tuple(_rename_expr(a, names) for a in expr.args))
    return expr


def linear_form(expr: Expr) -> dict[str, float]:
    """A formula as {term text: coefficient} ('' for the constant).

    Formulas are weighted sums, so two formulas mean the same when these agree: `a + 2 * b` and
    `b * 2 + a` are no change, and a changed coefficient can be shown as old → new.
    """
    acc: dict[str, float] = defaultdict(float)

    def visit(node: Expr, scale: float) -> None:
        if isinstance(node, Const):
            acc[""] += scale * node.value
        elif isinstance(node, Neg):
            visit(node.operand, -scale)
        elif isinstance(node, BinOp) and node.op in "+-":
            visit(node.left, scale)
            visit(node.right, scale if node.op == "+" else -scale)
        elif isinstance(node, BinOp) and node.op == "*" and is_constant(node.left):
            visit(node.right, scale * constant_value(node.left))
        elif isinstance(node, BinOp) and node.op == "*" and is_constant(node.right):
            visit(node.left, scale * constant_value(node.right))
        elif (
            isinstance(node, BinOp)
            and node.op == "/"
            and is_constant(node.right)
            and constant_value(node.right) != 0
        ):
            visit(node.left, scale / constant_value(node.right))
        else:
            acc[format_expr(node)] += scale

    visit(expr, 1.0)
    return {k: v for k, v in acc.items() if v != 0}


def _same_form(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-12) for k in a)


def _form_changes(old: Mapping[str, float], new: Mapping[str, float]) -> list[str]:
    """What changed between two linear forms, term by term, for a one-line description."""
    parts: list[str] = []
    for key in [*old, *(k for k in new if k not in old)]:
        label = "constant" if key == "" else f"`{key}`"
        if key not in new:
            parts.append(f"{label} removed")
        elif key not in old:
            parts.append(f"{label} added")
        elif not math.isclose(old[key], new[key], rel_tol=1e-12):
            if key == "":
                parts.append(f"constant {format_number(old[key])} → {format_number(new[key])}")
            else:
                parts.append(
                    f"coefficient of {label} {format_number(old[key])} → {format_number(new[key])}"
                )
    return parts


# ---------------------------------------------------------------- renames


def _input_uses(spec: Spec) -> dict[str, set[str]]:
    """Where the spec uses each input, independent of the input's own name."""
    uses: dict[str, set[str]] = defaultdict(set)
    for expr in spec.objectives.values():
        # The objective's formula with this input as a placeholder, not the objective's name:
        # an objective renamed together with its input still matches.
        for name in {name for name, _ in refs(expr, ())}:
            form = linear_form(_rename_expr(expr, {name: "@"}))
            uses[name].add("objective:" + repr(sorted(form.items())))
    for name, _ in refs(spec.utility, ()):
        uses[name].add("utility")
    if not isinstance(spec.diversity, NoDiversity):
        signals, _ = split_similarity(spec.diversity.similarity, ())
        for signal in signals:
            uses[signal.input].add(f"similarity:{signal.signal}")
    for name in spec.spacing:
        uses[name].add("spacing")
    for name in spec.rules.caps:
        uses[name].add("cap")
    for name in spec.rules.filters:
        uses[name].add("filter")
    if spec.semantic_id_penalty is not None:
        uses[spec.semantic_id_penalty.input].add("semantic_id_penalty")
    if spec.policy is not None:
        for i, name in enumerate(spec.policy.state):
            uses[name].add(f"state:{i}")
    return uses


def _unique_pairs(
    removed: Sequence[str], added: Sequence[str], match: Callable[[str, str], bool]
) -> dict[str, str]:
    """Pairs (removed, added) that match each other and nothing else: renames that can be told."""
    candidates = {r: [a for a in added if match(r, a)] for r in removed}
    pairs: dict[str, str] = {}
    for r, matches in candidates.items():
        if len(matches) == 1:
            a = matches[0]
            if sum(1 for other in candidates.values() if a in other) == 1:
                pairs[r] = a
    return pairs


def _utility_terms(spec: Spec) -> tuple[list[Any], float]:
    operands = set(spec.objectives) | set(spec.inputs)
    terms, constant, _ = split_utility(spec.utility, ("utility",), set(spec.weights), operands)
    return terms, constant


@dataclass(frozen=True)
class Renames:
    """Old name → new name of the renames detected, per namespace."""

    inputs: dict[str, str]
    objectives: dict[str, str]
    weights: dict[str, str]
    rewards: dict[str, str]

    @property
    def names(self) -> dict[str, str]:
        """Inputs, objectives and weights share one namespace (references use bare names)."""
        return {**self.inputs, **self.objectives, **self.weights}


def detect_renames(old: Spec, new: Spec) -> Renames:
    """Renames, told apart from a removal plus an addition.

    An input is renamed when a removed and an added input have the same type and the spec uses
    them in exactly the same places (and in some place at all). Then objectives with the same
    formula (after the input renames), weights with the same settings that weight the same
    objectives, and rewards with the same formula. A pair counts only if neither side matches
    anything else.
    """
    uses_old, uses_new = _input_uses(old), _input_uses(new)
    removed = [n for n in old.inputs if n not in new.inputs]
    added = [n for n in new.inputs if n not in old.inputs]
    inputs = _unique_pairs(
        removed,
        added,
        lambda r, a: (
            old.inputs[r] == new.inputs[a] and bool(uses_old[r]) and uses_old[r] == uses_new[a]
        ),
    )

    removed = [n for n in old.objectives if n not in new.objectives]
    added = [n for n in new.objectives if n not in old.objectives]
    forms_old = {n: linear_form(_rename_expr(old.objectives[n], inputs)) for n in removed}
    forms_new = {n: linear_form(new.objectives[n]) for n in added}
    objectives = _unique_pairs(removed, added, lambda r, a: _same_form(forms_old[r], forms_new[a]))

    names = {**inputs, **objectives}
    terms_old, _ = _utility_terms(old)
    terms_new, _ = _utility_terms(new)
    weighted_old: dict[str, set[str]] = defaultdict(set)
    weighted_new: dict[str, set[str]] = defaultdict(set)
    for t in terms_old:
        weighted_old[t.weight].add(names.get(t.objective, t.objective))
    for t in terms_new:
        weighted_new[t.weight].add(t.objective)
    removed = [n for n in old.weights if n not in new.weights]
    added = [n for n in new.weights if n not in old.weights]
    weights = _unique_pairs(
        removed,
        added,
        lambda r, a: old.weights[r] == new.weights[a] and weighted_old[r] == weighted_new[a],
    )

    removed = [n for n in old.rewards if n not in new.rewards]
    added = [n for n in new.rewards if n not in old.rewards]
    rewards = _unique_pairs(
        removed,
        added,
        lambda r, a: _same_form(linear_form(old.rewards[r]), linear_form(new.rewards[a])),
    )
    return Renames(inputs, objectives, weights, rewards)


# ---------------------------------------------------------------- the semantic diff


def _diversity_params(diversity: Any) -> dict[str, Any]:
    data = diversity.model_dump(mode="python", by_alias=True)
    data.pop("algorithm", None)
    data.pop("similarity", None)
    return data


def _param_text(algorithm: str, params: Mapping[str, Any]) -> str:
    if not params:
        return algorithm
    inner = ", ".join(
        f"{k} {'whole slate' if v is None and k == 'window' else fmt_value(v)}"
        for k, v in params.items()
    )
    return f"{algorithm} {{{inner}}}"


class _Differ:
    """Walks both specs section by section, in the canonical order, collecting changes."""

    def __init__(self, old: LoadedSpec, new: LoadedSpec) -> None:
        self.old, self.new = old, new
        self.o, self.n = old.spec, new.spec
        self.renames = detect_renames(self.o, self.n)
        self.names = self.renames.names
        self.changes: list[Change] = []

    # ------------------------------------------------------------ plumbing

    def name(self, old_name: str) -> str:
        return self.names.get(old_name, old_name)

    def _at(self, loaded: LoadedSpec, path: PathKey | None, key: bool) -> Location | None:
        if path is None:
            return None
        document = loaded.document
        span = document.key_span(path) if key else document.span_of(path)
        return Location(span.line, span.column) if span is not None else None

    def add(
        self,
        kind: str,
        severity: Severity,
        path: str,
        description: str,
        *,
        old: Any = None,
        new: Any = None,
        old_at: PathKey | None = None,
        new_at: PathKey | None = None,
        key: bool = False,
        rel: float | None = None,
        anchor_at: PathKey | None = None,
    ) -> None:
        """Record a change; `old_at`/`new_at` are spec paths in the old and the new document,
        `anchor_at` where to annotate the new file when the change has no line there."""
        new_loc = self._at(self.new, new_at, key)
        anchor = new_loc or self._at(self.new, anchor_at, key) or self._anchor(old_at)
        self.changes.append(
            Change(
                kind=kind,
                path=path,
                severity=severity,
                description=description,
                old=old,
                new=new,
                relative_change=rel,
                old_at=self._at(self.old, old_at, key),
                new_at=new_loc,
                anchor=anchor,
            )
        )

    def _anchor(self, old_at: PathKey | None) -> Location | None:
        """Where a change that exists only in the old file goes in the new one: the same named
        place if it is there, else its section (the section's key, or its first entry)."""
        if old_at is None:
            return None
        path = [self.name(p) if isinstance(p, str) else p for p in old_at]
        while path and isinstance(path[-1], int):
            path.pop()  # a list position names nothing in the other file
        document = self.new.document
        for end in range(len(path), 0, -1):
            prefix = tuple(path[:end])
            span = document.spans.get(prefix + (KEY,)) or document.spans.get(prefix)
            if span is None:
                node: Any = document.data
                for part in prefix:
                    node = node.get(part) if isinstance(node, dict) else None
                first = next(iter(node), None) if isinstance(node, dict | list) else None
                if isinstance(node, list) and node:
                    span = document.spans.get((*prefix, 0))
                elif first is not None:
                    span = document.key_span((*prefix, first))
            if span is not None:
                return Location(span.line, span.column)
        return None

    def value(
        self,
        kind: str,
        severity: Severity,
        path: str,
        label: str,
        old: Any,
        new: Any,
        old_at: PathKey,
        new_at: PathKey,
    ) -> None:
        """A changed scalar setting: `label old → new (+x%)`."""
        if old == new:
            return
        rel = relative(old, new)
        self.add(
            kind,
            severity,
            path,
            f"{label} {fmt_value(old)} → {fmt_value(new)}{fmt_relative(rel)}",
            old=_json(old),
            new=_json(new),
            # A setting that is absent on one side has no line there.
            old_at=None if old is None else old_at,
            new_at=None if new is None else new_at,
            anchor_at=new_at,
            rel=rel,
        )

    # ------------------------------------------------------------ sections

    def run(self) -> list[Change]:
        self.spec_name()
        self.slate()
        self.inputs()
        self.objectives()
        self.weights()
        self.utility()
        self.diversity()
        self.spacing()
        self.semantic_id_penalty()
        self.rules()
        self.outcomes()
        self.rewards()
        self.policy()
        return self.changes

    def spec_name(self) -> None:
        if self.o.name != self.n.name:
            self.add(
                "spec.renamed",
                Severity.cosmetic,
                "name",
                f"spec renamed `{self.o.name}` → `{self.n.name}`",
                old=self.o.name,
                new=self.n.name,
                old_at=("name",),
                new_at=("name",),
            )

    def slate(self) -> None:
        old, new = self.o.slate.length, self.n.slate.length
        if old != new:
            rel = relative(old, new)
            self.add(
                "slate.length",
                Severity.breaking,
                "slate.length",
                f"slate length {old} → {new}{fmt_relative(rel)}: consumers of the slates get "
                "another number of items",
                old=old,
                new=new,
                old_at=("slate", "length"),
                new_at=("slate", "length"),
                rel=rel,
            )

    def inputs(self) -> None:
        o, n = self.o.inputs, self.n.inputs
        renamed = self.renames.inputs
        state = set(self.n.policy.state) if self.n.policy else set()
        for name, declared in o.items():
            target = renamed.get(name, name)
            if name in renamed:
                self.add(
                    "input.renamed",
                    Severity.breaking,
                    f"inputs.{target}",
                    f"input `{name}` renamed to `{target}` ({declared}): dumps must provide "
                    f"column `{target}`",
                    old=name,
                    new=target,
                    old_at=("inputs", name),
                    new_at=("inputs", target),
                    key=True,
                )
            if target not in n:
                self.add(
                    "input.removed",
                    Severity.breaking,
                    f"inputs.{name}",
                    f"input `{name}` ({declared}) removed",
                    old=str(declared),
                    old_at=("inputs", name),
                    key=True,
                )
                continue
            now = n[target]
            if now.kind != declared.kind:
                self.add(
                    "input.retyped",
                    Severity.breaking,
                    f"inputs.{target}",
                    f"input `{target}` retyped: {declared} → {now}",
                    old=str(declared),
                    new=str(now),
                    old_at=("inputs", name),
                    new_at=("inputs", target),
                )
            elif now.size != declared.size:
                rel = relative(declared.size, now.size)
                note = ""
                if target in state:
                    note = ": it is the policy's state, a trained policy no longer fits"
                self.add(
                    "input.resized",
                    Severity.breaking,
                    f"inputs.{target}",
                    f"input `{target}` resized: {declared} → {now}{note}",
                    old=str(declared),
                    new=str(now),
                    old_at=("inputs", name),
                    new_at=("inputs", target),
                    rel=rel,
                )
        targets = {renamed.get(x, x) for x in o}
        for name, declared in n.items():
            if name not in targets:
                self.add(
                    "input.added",
                    Severity.breaking,
                    f"inputs.{name}",
                    f"input `{name}` ({declared}) added: dumps must provide the column",
                    new=str(declared),
                    new_at=("inputs", name),
                    key=True,
                )

    def _named_formulas(
        self,
        section: str,
        noun: str,
        old: Mapping[str, Expr],
        new: Mapping[str, Expr],
        renamed: Mapping[str, str],
        names: Mapping[str, str],
    ) -> None:
        """Objectives and rewards: named formulas compared as weighted sums."""
        for name, expr in old.items():
            target = renamed.get(name, name)
            if name in renamed:
                self.add(
                    f"{noun}.renamed",
                    Severity.cosmetic,
                    f"{section}.{target}",
                    f"{noun} `{name}` renamed to `{target}` (same formula)",
                    old=name,
                    new=target,
                    old_at=(section, name),
                    new_at=(section, target),
                    key=True,
                )
            if target not in new:
                self.add(
                    f"{noun}.removed",
                    Severity.behavioural,
                    f"{section}.{name}",
                    f"{noun} `{name}` removed (was {format_expr(expr)})",
                    old=format_expr(expr),
                    old_at=(section, name),
                    key=True,
                )
                continue
            before = linear_form(_rename_expr(expr, names))
            after = linear_form(new[target])
            if _same_form(before, after):
                continue
            # Term by term only when the formulas share terms; otherwise old → new says it all.
            detail = _form_changes(before, after) if before.keys() & after.keys() else []
            rel = None
            common = [k for k in before if k in after]
            changed = [k for k in common if not math.isclose(before[k], after[k], rel_tol=1e-12)]
            if len(changed) == 1 and before.keys() == after.keys():
                rel = relative(before[changed[0]], after[changed[0]])
            old_text, new_text = format_expr(expr), format_expr(new[target])
            self.add(
                f"{noun}.changed",
                Severity.behavioural,
                f"{section}.{target}",
                f"{noun} `{target}`: {old_text} → {new_text}"
                + (f" ({'; '.join(detail)})" if detail and len(detail) <= 3 else ""),
                old=old_text,
                new=new_text,
                old_at=(section, name),
                new_at=(section, target),
                rel=rel,
            )
        targets = {renamed.get(x, x) for x in old}
        for name, expr in new.items():
            if name not in targets:
                self.add(
                    f"{noun}.added",
                    Severity.behavioural,
                    f"{section}.{name}",
                    f"{noun} `{name}` added: {format_expr(expr)}",
                    new=format_expr(expr),
                    new_at=(section, name),
                    key=True,
                )

    def objectives(self) -> None:
        self._named_formulas(
            "objectives",
            "objective",
            self.o.objectives,
            self.n.objectives,
            self.renames.objectives,
            self.names,
        )

    # ------------------------------------------------------------ weights and the action grid

    def _actions(self, spec: Spec) -> int:
        return spec.action_count

    def _grid_note(self) -> str:
        return (
            f" (action grid {self._actions(self.o):,} → {self._actions(self.n):,} actions): "
            "a trained policy no longer fits"
        )

    def weights(self) -> None:
        o, n = self.o.weights, self.n.weights
        renamed = self.renames.weights
        both_policies = self.o.policy is not None and self.n.policy is not None
        for name, weight in o.items():
            target = renamed.get(name, name)
            if name in renamed:
                self.add(
                    "weight.renamed",
                    Severity.behavioural,
                    f"weights.{target}",
                    f"weight `{name}` renamed to `{target}`: the slates' column "
                    f"`weight_{name}` becomes `weight_{target}`",
                    old=name,
                    new=target,
                    old_at=("weights", name),
                    new_at=("weights", target),
                    key=True,
                )
            if target not in n:
                axis = weight.source == "policy" and both_policies
                self.add(
                    "weight.removed",
                    Severity.breaking if axis else Severity.behavioural,
                    f"weights.{name}",
                    f"weight `{name}` removed (was {_weight_text(weight)})"
                    + (self._grid_note() if axis else ""),
                    old=_weight_json(weight),
                    old_at=("weights", name),
                    key=True,
                )
                continue
            self._weight(name, target, weight, n[target], both_policies)
        targets = {renamed.get(x, x) for x in o}
        for name, weight in n.items():
            if name not in targets:
                axis = weight.source == "policy" and both_policies
                self.add(
                    "weight.added",
                    Severity.breaking if axis else Severity.behavioural,
                    f"weights.{name}",
                    f"weight `{name}` added ({_weight_text(weight)})"
                    + (self._grid_note() if axis else ""),
                    new=_weight_json(weight),
                    new_at=("weights", name),
                    key=True,
                )
        self._axis_order()

    def _weight(self, name: str, target: str, old: Weight, new: Weight, both: bool) -> None:
        at_old, at_new = ("weights", name), ("weights", target)
        b = Severity.behavioural
        self.value(
            "weight.default",
            b,
            f"weights.{target}.default",
            f"weight `{target}` default",
            old.default,
            new.default,
            at_old + ("default",),
            at_new + ("default",),
        )
        for i, end in enumerate(("lower", "upper")):
            self.value(
                "weight.bound",
                b,
                f"weights.{target}.bounds.{end}",
                f"weight `{target}` {end} bound",
                old.bounds[i],
                new.bounds[i],
                at_old + ("bounds",),
                at_new + ("bounds",),
            )
        self.value(
            "weight.sign",
            b,
            f"weights.{target}.sign",
            f"weight `{target}` sign",
            old.sign,
            new.sign,
            at_old + ("sign",),
            at_new + ("sign",),
        )
        if old.source != new.source:
            self.add(
                "weight.source",
                Severity.breaking if both else b,
                f"weights.{target}.source",
                f"weight `{target}` source {old.source} → {new.source}"
                + (self._grid_note() if both else ""),
                old=old.source,
                new=new.source,
                old_at=at_old + ("source",),
                new_at=at_new + ("source",),
            )
        elif old.source == "policy" and tuple(old.grid or ()) != tuple(new.grid or ()):
            self.add(
                "weight.grid",
                Severity.breaking,
                f"weights.{target}.grid",
                f"weight `{target}` policy grid {_grid_text(old.grid)} → {_grid_text(new.grid)}"
                + (
                    self._grid_note()
                    if len(old.grid or ()) != len(new.grid or ())
                    else ": the same action ids now mean other weights, a trained policy no "
                    "longer fits"
                ),
                old=list(old.grid or ()),
                new=list(new.grid or ()),
                old_at=at_old + ("grid",),
                new_at=at_new + ("grid",),
            )

    def _axis_order(self) -> None:
        """The action grid is the product of the policy weights' grids in declaration order, so
        reordering policy weights renumbers every action even though no value changed."""
        if self.o.policy is None or self.n.policy is None:
            return
        old_axes = [self.name(w) for w in self.o.policy_weights]
        new_axes = list(self.n.policy_weights)
        common_old = [w for w in old_axes if w in new_axes]
        common_new = [w for w in new_axes if w in old_axes]
        if common_old != common_new:
            self.add(
                "policy.axes",
                Severity.breaking,
                "policy.axes",
                f"policy weights reordered ({', '.join(common_old)} → {', '.join(common_new)}): "
                "action ids are renumbered, a trained policy no longer fits",
                old=common_old,
                new=common_new,
                old_at=("weights", self.o.policy_weights[0]),
                new_at=("weights", self.n.policy_weights[0]),
                key=True,
            )

    # ------------------------------------------------------------ utility and diversity

    def utility(self) -> None:
        terms_old, constant_old = _utility_terms(self.o)
        terms_new, constant_new = _utility_terms(self.n)
        keyed_old = {(self.name(t.weight), self.name(t.objective)): t for t in terms_old}
        keyed_new = {(t.weight, t.objective): t for t in terms_new}
        for key, term in keyed_old.items():
            if key not in keyed_new:
                text = f"{key[0]} * {key[1]}"
                self.add(
                    "utility.term_removed",
                    Severity.behavioural,
                    f"utility[{text}]",
                    f"utility term `{text}` removed",
                    old=text,
                    old_at=term.path,
                    anchor_at=("utility",),
                )
        for key, term in keyed_new.items():
            if key not in keyed_old:
                text = f"{key[0]} * {key[1]}"
                self.add(
                    "utility.term_added",
                    Severity.behavioural,
                    f"utility[{text}]",
                    f"utility term `{text}` added",
                    new=text,
                    new_at=term.path,
                )
        self.value(
            "utility.constant",
            Severity.behavioural,
            "utility.constant",
            "utility constant",
            constant_old,
            constant_new,
            ("utility",),
            ("utility",),
        )

    def diversity(self) -> None:
        old, new = self.o.diversity, self.n.diversity
        b = Severity.behavioural
        params_old, params_new = _diversity_params(old), _diversity_params(new)
        if old.algorithm != new.algorithm:
            self.add(
                "diversity.algorithm",
                b,
                "diversity.algorithm",
                f"diversity algorithm {_param_text(old.algorithm, params_old)} → "
                f"{_param_text(new.algorithm, params_new)}",
                old={"algorithm": old.algorithm, **params_old},
                new={"algorithm": new.algorithm, **params_new},
                old_at=("diversity", "algorithm"),
                new_at=("diversity", "algorithm"),
            )
        else:
            for key, value in params_old.items():
                after = params_new.get(key)
                if value == after:
                    continue
                rel = relative(value, after)
                show = lambda v, k=key: (  # noqa: E731
                    "whole slate" if v is None and k == "window" else fmt_value(v)
                )
                self.add(
                    "diversity.parameter",
                    b,
                    f"diversity.{key}",
                    f"{new.algorithm} {key} {show(value)} → {show(after)}{fmt_relative(rel)}",
                    old=_json(value),
                    new=_json(after),
                    old_at=("diversity", key) if value is not None else None,
                    new_at=("diversity", key) if after is not None else None,
                    anchor_at=("diversity", key),
                    rel=rel,
                )
        if isinstance(old, Ssd | Dpp | Mmr) and isinstance(new, Ssd | Dpp | Mmr):
            self._signals(old.similarity, new.similarity)

    def _signals(self, old: Expr, new: Expr) -> None:
        base = ("diversity", "similarity")
        signals_old, _ = split_similarity(old, base)
        signals_new, _ = split_similarity(new, base)
        keyed_old: dict[tuple[str, str], list[Any]] = {}
        keyed_new: dict[tuple[str, str], list[Any]] = {}
        for s in signals_old:
            entry = keyed_old.setdefault((s.signal, self.name(s.input)), [0.0, s.path])
            entry[0] += s.beta
        for s in signals_new:
            entry = keyed_new.setdefault((s.signal, s.input), [0.0, s.path])
            entry[0] += s.beta
        b = Severity.behavioural
        for key, (beta, path) in keyed_old.items():
            text = f"{key[0]}({key[1]})"
            if key not in keyed_new:
                self.add(
                    "similarity.signal_removed",
                    b,
                    f"diversity.similarity[{text}]",
                    f"similarity signal `{text}` removed (was β {format_number(beta)})",
                    old=beta,
                    old_at=path,
                    anchor_at=base,
                )
            elif not math.isclose(beta, keyed_new[key][0], rel_tol=1e-12):
                after, new_path = keyed_new[key]
                rel = relative(beta, after)
                self.add(
                    "similarity.beta",
                    b,
                    f"diversity.similarity[{text}]",
                    f"similarity β of `{text}` {format_number(beta)} → {format_number(after)}"
                    f"{fmt_relative(rel)}",
                    old=beta,
                    new=after,
                    old_at=path,
                    new_at=new_path,
                    rel=rel,
                )
        for key, (beta, path) in keyed_new.items():
            if key not in keyed_old:
                text = f"{key[0]}({key[1]})"
                self.add(
                    "similarity.signal_added",
                    b,
                    f"diversity.similarity[{text}]",
                    f"similarity signal `{text}` added (β {format_number(beta)})",
                    new=beta,
                    new_at=path,
                )

    # ------------------------------------------------------------ penalties and rules

    def spacing(self) -> None:
        old = {self.name(k): (k, v) for k, v in self.o.spacing.items()}
        new = self.n.spacing
        b = Severity.behavioural
        for target, (name, spacing) in old.items():
            if target not in new:
                self.add(
                    "spacing.removed",
                    b,
                    f"spacing.{target}",
                    f"spacing of set `{target}` removed (was window {spacing.window}, "
                    f"coefficient {format_number(spacing.coefficient)})",
                    old=spacing.model_dump(),
                    old_at=("spacing", name),
                    key=True,
                )
                continue
            for key in ("window", "coefficient"):
                self.value(
                    "spacing.parameter",
                    b,
                    f"spacing.{target}.{key}",
                    f"spacing of `{target}` {key}",
                    getattr(spacing, key),
                    getattr(new[target], key),
                    ("spacing", name, key),
                    ("spacing", target, key),
                )
        for name, spacing in new.items():
            if name not in old:
                self.add(
                    "spacing.added",
                    b,
                    f"spacing.{name}",
                    f"spacing of set `{name}` added (window {spacing.window}, coefficient "
                    f"{format_number(spacing.coefficient)})",
                    new=spacing.model_dump(),
                    new_at=("spacing", name),
                    key=True,
                )

    def semantic_id_penalty(self) -> None:
        old, new = self.o.semantic_id_penalty, self.n.semantic_id_penalty
        b = Severity.behavioural
        path = ("semantic_id_penalty",)
        if old is None and new is None:
            return
        if old is None or new is None:
            present = new if new is not None else old
            assert present is not None
            values = present.model_dump()
            self.add(
                "semantic_id_penalty." + ("added" if old is None else "removed"),
                b,
                "semantic_id_penalty",
                f"semantic-ID penalty {'added' if old is None else 'removed'} "
                f"({fmt_value(values)[1:-1]})",
                old=old.model_dump() if old else None,
                new=new.model_dump() if new else None,
                old_at=path if old else None,
                new_at=path if new else None,
                key=True,
            )
            return
        if self.name(old.input) != new.input:
            self.add(
                "semantic_id_penalty.parameter",
                b,
                "semantic_id_penalty.input",
                f"semantic-ID penalty input `{old.input}` → `{new.input}`",
                old=old.input,
                new=new.input,
                old_at=(*path, "input"),
                new_at=(*path, "input"),
            )
        for key in ("window", "min_prefix", "coefficient"):
            self.value(
                "semantic_id_penalty.parameter",
                b,
                f"semantic_id_penalty.{key}",
                f"semantic-ID penalty {key}",
                getattr(old, key),
                getattr(new, key),
                (*path, key),
                (*path, key),
            )

    def rules(self) -> None:
        b = Severity.behavioural
        old_filters = {self.name(f): i for i, f in enumerate(self.o.rules.filters)}
        new_filters = {f: i for i, f in enumerate(self.n.rules.filters)}
        for name, i in old_filters.items():
            if name not in new_filters:
                self.add(
                    "filter.removed",
                    b,
                    f"rules.filters[{name}]",
                    f"filter on set `{name}` removed",
                    old=name,
                    old_at=("rules", "filters", i),
                )
        for name, i in new_filters.items():
            if name not in old_filters:
                self.add(
                    "filter.added",
                    b,
                    f"rules.filters[{name}]",
                    f"filter on set `{name}` added",
                    new=name,
                    new_at=("rules", "filters", i),
                )
        old_caps = {self.name(k): (k, v) for k, v in self.o.rules.caps.items()}
        new_caps = self.n.rules.caps
        for target, (name, cap) in old_caps.items():
            if target not in new_caps:
                self.add(
                    "cap.removed",
                    b,
                    f"rules.caps.{target}",
                    f"cap on `{target}` removed (was at most {cap.max} in {cap.window})",
                    old=cap.model_dump(),
                    old_at=("rules", "caps", name),
                    key=True,
                )
                continue
            for key in ("max", "window"):
                self.value(
                    "cap.parameter",
                    b,
                    f"rules.caps.{target}.{key}",
                    f"cap on `{target}` {key}",
                    getattr(cap, key),
                    getattr(new_caps[target], key),
                    ("rules", "caps", name),
                    ("rules", "caps", target),
                )
        for name, cap in new_caps.items():
            if name not in old_caps:
                self.add(
                    "cap.added",
                    b,
                    f"rules.caps.{name}",
                    f"cap on `{name}` added (at most {cap.max} in {cap.window})",
                    new=cap.model_dump(),
                    new_at=("rules", "caps", name),
                    key=True,
                )
        old_t, new_t = self.o.rules.truncate, self.n.rules.truncate
        if old_t != new_t:
            rel = relative(old_t, new_t)
            self.add(
                "truncate.changed",
                b,
                "rules.truncate",
                f"truncation {_truncation_text(old_t)} → {_truncation_text(new_t)}"
                f"{fmt_relative(rel)}",
                old=old_t,
                new=new_t,
                old_at=("rules", "truncate") if old_t is not None else None,
                new_at=("rules", "truncate") if new_t is not None else None,
                anchor_at=("rules", "truncate"),
                rel=rel,
            )

    # ------------------------------------------------------------ policy learning

    def outcomes(self) -> None:
        old = {o: i for i, o in enumerate(self.o.outcomes)}
        new = {o: i for i, o in enumerate(self.n.outcomes)}
        for name, i in old.items():
            if name not in new:
                self.add(
                    "outcome.removed",
                    Severity.behavioural,
                    f"outcomes[{name}]",
                    f"outcome `{name}` removed",
                    old=name,
                    old_at=("outcomes", i),
                )
        for name, i in new.items():
            if name not in old:
                self.add(
                    "outcome.added",
                    Severity.behavioural,
                    f"outcomes[{name}]",
                    f"outcome `{name}` added: logs must provide the column",
                    new=name,
                    new_at=("outcomes", i),
                )

    def rewards(self) -> None:
        self._named_formulas(
            "rewards", "reward", self.o.rewards, self.n.rewards, self.renames.rewards, {}
        )

    def policy(self) -> None:
        old, new = self.o.policy, self.n.policy
        b = Severity.behavioural
        if old is None and new is None:
            return
        if old is None or new is None:
            present = new if new is not None else old
            assert present is not None
            verb = "added" if old is None else "removed"
            self.add(
                f"policy.{verb}",
                b,
                "policy",
                f"policy {verb} (state {', '.join(present.state)}; "
                f"{self._actions(self.n if old is None else self.o):,} actions): weights are "
                + ("now chosen per request" if old is None else "now fixed"),
                old=_json(old.model_dump(mode="json")) if old else None,
                new=_json(new.model_dump(mode="json")) if new else None,
                old_at=("policy",) if old else None,
                new_at=("policy",) if new else None,
                key=True,
            )
            return
        state_old = [self.name(s) for s in old.state]
        if state_old != list(new.state):
            self.add(
                "policy.state",
                Severity.breaking,
                "policy.state",
                f"policy state [{', '.join(old.state)}] → [{', '.join(new.state)}]: the "
                "network's input changes, a trained policy no longer fits",
                old=list(old.state),
                new=list(new.state),
                old_at=("policy", "state"),
                new_at=("policy", "state"),
            )
        self.value(
            "policy.file",
            b,
            "policy.file",
            "policy file",
            old.file,
            new.file,
            ("policy", "file"),
            ("policy", "file"),
        )
        exp_old, exp_new = old.exploration.model_dump(), new.exploration.model_dump()
        if exp_old != exp_new:
            rel = None
            change = f"{_exploration_text(exp_old)} → {_exploration_text(exp_new)}"
            if exp_old["kind"] == exp_new["kind"]:
                (param,) = [k for k in exp_old if k != "kind"]  # same kind: its one parameter
                rel = relative(exp_old[param], exp_new[param])
                change = (
                    f"{exp_old['kind']}"
                    + (f" {param}" if param != exp_old["kind"] else "")
                    + f" {fmt_value(exp_old[param])} → {fmt_value(exp_new[param])}"
                )
            self.add(
                "policy.exploration",
                b,
                "policy.exploration",
                f"policy exploration {change}{fmt_relative(rel)}",
                old=exp_old,
                new=exp_new,
                old_at=("policy", "exploration"),
                new_at=("policy", "exploration"),
                rel=rel,
            )
        reward_old = self.renames.rewards.get(old.reward or "", old.reward)
        if reward_old != new.reward:
            self.add(
                "policy.reward",
                b,
                "policy.reward",
                f"policy learns reward {fmt_value(old.reward)} → {fmt_value(new.reward)}",
                old=old.reward,
                new=new.reward,
                old_at=("policy", "reward"),
                new_at=("policy", "reward"),
            )
        self.value(
            "policy.fallback",
            b,
            "policy.fallback",
            "policy fallback",
            old.fallback,
            new.fallback,
            ("policy", "fallback"),
            ("policy", "fallback"),
        )


def _exploration_text(exploration: Mapping[str, Any]) -> str:
    """`epsilon 0.05`, `softmax temperature 2`, `uniform`."""
    kind = str(exploration["kind"])
    params = [
        fmt_value(v) if k == kind else f"{k} {fmt_value(v)}"
        for k, v in exploration.items()
        if k != "kind"
    ]
    return " ".join([kind, *params])


def _truncation_text(keep: int | None) -> str:
    return "none" if keep is None else f"top {keep} by utility"


def _weight_text(weight: Weight) -> str:
    lo, hi = weight.bounds
    text = f"{format_number(weight.default)} in [{format_number(lo)}, {format_number(hi)}]"
    if weight.sign != "positive":
        text += f", sign {weight.sign}"
    if weight.source == "policy":
        text += f", policy grid {_grid_text(weight.grid)}"
    return text


def _weight_json(weight: Weight) -> dict[str, Any]:
    return _json(weight.model_dump(mode="json", exclude_defaults=True))


def _json(value: Any) -> Any:
    """A JSON value: tuples as lists, recursively."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def diff_specs(old: LoadedSpec, new: LoadedSpec) -> SpecDiff:
    """The semantic changes from `old` to `new`, in the spec's canonical section order."""
    changes = _Differ(old, new).run()
    return SpecDiff(
        old_file=old.document.source.name,
        new_file=new.document.source.name,
        old_name=old.spec.name,
        new_name=new.spec.name,
        changes=changes,
    )


# ---------------------------------------------------------------- impact on a dump


@dataclass(frozen=True)
class MetricComparison:
    """One slate metric, old vs new, over the requests where both are defined."""

    name: str
    old: float
    new: float
    difference: float
    low: float
    high: float
    requests: int

    @property
    def significant(self) -> bool:
        """The 95% interval of the mean difference excludes 0."""
        return (self.low > 0 or self.high < 0) and math.isfinite(self.low)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "old": _round(self.old),
            "new": _round(self.new),
            "difference": _round(self.difference),
            "ci95": [_round(self.low), _round(self.high)],
            "requests": self.requests,
        }


@dataclass(frozen=True)
class RequestChange:
    """How much one request's slate changed."""

    request_id: str
    old_length: int
    new_length: int
    overlap: float  # overlap@T
    kendall: float
    spearman: float
    position_shift: float
    first_difference: int  # 0-based slot of the first difference

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "old_length": self.old_length,
            "new_length": self.new_length,
            "overlap": _round(self.overlap),
            "kendall_tau": _round(self.kendall),
            "spearman_rho": _round(self.spearman),
            "position_shift": _round(self.position_shift),
            "first_difference": self.first_difference,
        }


@dataclass
class Impact:
    """What the change does to the slates of the requests of a dump (see docs/diff.md)."""

    candidates: str
    requests: int  # compared: blended by both specs
    only_old: int  # rejected by the new spec only
    only_new: int  # rejected by the old spec only
    rejected: int  # rejected by both
    changed: int
    length_changed: int
    position_shift: float
    overlap: dict[int, float]
    kendall: float
    spearman: float
    metrics: list[MetricComparison]
    most_changed: list[RequestChange]
    slate_length: int  # T = the longer of the two slate lengths
    resamples: int = 1000
    seed: int = 0
    seconds: float = 0.0

    @property
    def changed_fraction(self) -> float:
        return self.changed / self.requests if self.requests else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "requests": self.requests,
            "rejected": {
                "by_old_only": self.only_new,
                "by_new_only": self.only_old,
                "by_both": self.rejected,
            },
            "slates_changed": {"count": self.changed, "fraction": _round(self.changed_fraction)},
            "lengths_changed": self.length_changed,
            "mean_position_shift": _round(self.position_shift),
            "overlap": {str(k): _round(v) for k, v in self.overlap.items()},
            "kendall_tau": _round(self.kendall),
            "spearman_rho": _round(self.spearman),
            "metrics": [m.to_json() for m in self.metrics],
            "most_changed": [r.to_json() for r in self.most_changed],
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "interval": 0.95},
        }


def overlap_ks(length: int) -> tuple[int, ...]:
    """k of overlap@k: 5, 10 and the slate length T, without duplicates or k > T."""
    return tuple(sorted({k for k in (5, 10) if k < length} | {length}))


def compare_slates(a: torch.Tensor, b: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-request comparison of two batches of slates (`[B, Ta]`, `[B, Tb]` candidate indices,
    -1 past the end). Definitions, for slates A (old) and B (new):

    * `changed`: the slates differ as sequences; `first_difference`: first differing slot (-1);
    * `shift`: mean |pos_A(i) - pos_B(i)| over the items in both (NaN when none);
    * `overlap@k`: |A[:k] ∩ B[:k]| / max(|A[:k]|, |B[:k]|) (NaN when both are empty);
    * `kendall` (τ-b) and `spearman` (ρ) over the union U = A ∪ B: an item's rank in a slate is
      its position, and the items of U missing from a slate share the ranks after its end (all
      tied at their average), so dropping an item counts as moving it to the bottom. NaN when U
      has fewer than two items or either ranking is constant.
    """
    import torch

    bsz, ta = a.shape
    tb = b.shape[1]
    in_a, in_b = a >= 0, b >= 0
    len_a, len_b = in_a.sum(1), in_b.sum(1)
    width = max(ta, tb)
    pad_a = torch.full((bsz, width), -1, dtype=torch.int64)
    pad_b = torch.full((bsz, width), -1, dtype=torch.int64)
    pad_a[:, :ta], pad_b[:, :tb] = a, b
    differs = pad_a != pad_b
    changed = differs.any(1)
    first = torch.where(changed, differs.to(torch.int64).argmax(1), torch.full_like(len_a, -1))

    eq = (a[:, :, None] == b[:, None, :]) & in_a[:, :, None]  # [B, Ta, Tb]
    a_in_b = eq.any(2)  # [B, Ta]
    b_in_a = eq.any(1)  # [B, Tb]
    pos_a = torch.arange(ta, dtype=torch.float64)
    pos_b = torch.arange(tb, dtype=torch.float64)
    where_in_b = eq.to(torch.int64).argmax(2).to(torch.float64)  # position in B of A's items
    common = a_in_b.sum(1)
    moved = ((pos_a[None, :] - where_in_b).abs() * a_in_b).sum(1)
    shift = torch.where(common > 0, moved / common.clamp_min(1), float("nan"))

    out: dict[str, torch.Tensor] = {
        "changed": changed,
        "first_difference": first,
        "shift": shift,
        "old_length": len_a,
        "new_length": len_b,
    }
    for k in ks:
        top = eq[:, :k, :k].any(2).sum(1).to(torch.float64)
        denominator = torch.maximum(len_a.clamp(max=k), len_b.clamp(max=k)).to(torch.float64)
        out[f"overlap@{k}"] = torch.where(
            denominator > 0, top / denominator.clamp_min(1), float("nan")
        )

    # The union: A's items, then B's items that are not in A.
    n = (len_a + len_b - common).to(torch.float64)  # |U|
    missing_a = (len_a.to(torch.float64) + n - 1) / 2  # average rank of the ranks after A's end
    missing_b = (len_b.to(torch.float64) + n - 1) / 2
    rank_a = torch.cat(
        [pos_a.expand(bsz, ta), missing_a[:, None].expand(bsz, tb)], dim=1
    )  # [B, Ta + Tb]
    rank_b = torch.cat(
        [torch.where(a_in_b, where_in_b, missing_b[:, None]), pos_b.expand(bsz, tb)], dim=1
    )
    valid = torch.cat([in_a, in_b & ~b_in_a], dim=1)
    pair = valid[:, :, None] & valid[:, None, :]
    sign_a = torch.sign(rank_a[:, :, None] - rank_a[:, None, :])
    sign_b = torch.sign(rank_b[:, :, None] - rank_b[:, None, :])
    concordance = (sign_a * sign_b * pair).sum((1, 2)) / 2
    pairs = n * (n - 1) / 2
    tied_a = ((sign_a == 0) & pair).sum((1, 2)).to(torch.float64) - n  # minus the diagonal
    tied_b = ((sign_b == 0) & pair).sum((1, 2)).to(torch.float64) - n
    denominator = torch.sqrt((pairs - tied_a / 2) * (pairs - tied_b / 2))
    out["kendall"] = torch.where(
        denominator > 0, concordance / denominator.clamp_min(1e-300), float("nan")
    )
    weights = valid.to(torch.float64)
    count = weights.sum(1, keepdim=True).clamp_min(1)
    mean_a = (rank_a * weights).sum(1, keepdim=True) / count
    mean_b = (rank_b * weights).sum(1, keepdim=True) / count
    da, db = (rank_a - mean_a) * weights, (rank_b - mean_b) * weights
    spread = torch.sqrt((da * da).sum(1) * (db * db).sum(1))
    out["spearman"] = torch.where(
        spread > 0, (da * db).sum(1) / spread.clamp_min(1e-300), float("nan")
    )
    return out


@dataclass(frozen=True)
class _Yardstick:
    """Which inputs and settings measure *both* slates, so that old and new metrics compare.

    They are what `blend run` uses for the old spec (its first cosine embedding, category,
    semantic ID and penalty min_prefix), completed from the new spec, plus the spacing sets of
    both specs, and the widest of both specs' windows. Each entry is (side, input name).
    """

    embedding: tuple[str, str] | None
    category: tuple[str, str] | None
    semantic_id: tuple[str, str] | None
    flags: dict[str, tuple[str, str]]  # metric name → (side, input)
    window: int
    min_prefix: int


def _runner_inputs(spec: Spec) -> dict[str, str | None]:
    embedding = None
    if isinstance(spec.diversity, Ssd | Dpp | Mmr):
        signals, _ = split_similarity(spec.diversity.similarity, ())
        embedding = next((s.input for s in signals if s.signal == "cosine"), None)
    if embedding is None:
        embedding = next((n for n, i in spec.inputs.items() if i.kind == "embedding"), None)
    penalty = spec.semantic_id_penalty
    return {
        "embedding": embedding,
        "category": next((n for n, i in spec.inputs.items() if i.kind == "category"), None),
        "semantic_id": penalty.input
        if penalty
        else next((n for n, i in spec.inputs.items() if i.kind == "semantic_id"), None),
    }


def _yardstick(old: Spec, new: Spec, renames: Mapping[str, str]) -> _Yardstick:
    chosen_old, chosen_new = _runner_inputs(old), _runner_inputs(new)

    def pick(role: str) -> tuple[str, str] | None:
        if chosen_old[role] is not None:
            return ("old", chosen_old[role])  # type: ignore[return-value]
        if chosen_new[role] is not None:
            return ("new", chosen_new[role])  # type: ignore[return-value]
        return None

    flags = {renames.get(name, name): ("old", name) for name in old.spacing}
    for name in new.spacing:
        flags.setdefault(name, ("new", name))
    windows = [s.window for s in old.spacing.values()] + [s.window for s in new.spacing.values()]
    penalty = old.semantic_id_penalty or new.semantic_id_penalty
    return _Yardstick(
        pick("embedding"),
        pick("category"),
        pick("semantic_id"),
        flags,
        max([*windows, 5]),
        penalty.min_prefix if penalty else 1,
    )


def _dump_columns(path: Path) -> set[str] | None:
    """Column names of a dump's first file, to read a renamed input under either name."""
    from blendspec.io.dump import JSONL_SUFFIXES, dump_files

    try:
        files = dump_files(path)
        if not files:
            return None
        first = files[0]
        if first.suffix.lower() in JSONL_SUFFIXES:
            with first.open("rb") as handle:
                line = handle.readline()
            return set(json.loads(line)) if line.strip() else None
        import pyarrow.parquet as pq

        return set(pq.read_schema(first).names)
    except Exception:  # the reader reports unreadable dumps properly
        return None


def _reading_spec(spec: Spec, aliases: Mapping[str, str]) -> Spec:
    """The spec with some inputs read from other columns (a renamed input's other name)."""
    if not aliases:
        return spec
    inputs = {aliases.get(n, n): i for n, i in spec.inputs.items()}
    return spec.model_copy(update={"inputs": inputs})


def _subset(
    batch: RequestBatch,
    spec: Spec,
    out: dict[str, torch.Tensor],
    rows: torch.Tensor,
    width: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """The compared requests' rows of a batch and of its blend, cut to `width` candidates (both
    sides then have the same shapes even when one side's batch also held a request it rejected)."""
    inputs = {}
    for name, tensor in batch.inputs.items():
        picked = tensor.index_select(0, rows)
        per_request = name in spec.inputs and spec.inputs[name].per_request
        inputs[name] = picked if per_request else picked[:, :width]
    selected = {k: v.index_select(0, rows) for k, v in out.items() if k != "weights"}
    selected["candidate_utility"] = selected["candidate_utility"][:, :width]
    return inputs, selected, batch.mask.index_select(0, rows)[:, :width]


class _Accumulator:
    """Per-request values of every batch, joined at the end."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.values: dict[str, list[np.ndarray]] = defaultdict(list)
        self.metrics_old: dict[str, list[np.ndarray]] = defaultdict(list)
        self.metrics_new: dict[str, list[np.ndarray]] = defaultdict(list)
        self.most: list[tuple[tuple[float, ...], RequestChange]] = []

    def add(self, ids: Sequence[str], comparison: dict[str, torch.Tensor], t: int) -> None:
        arrays = {k: v.numpy() for k, v in comparison.items()}
        for key, value in arrays.items():
            self.values[key].append(value)
        if self.top <= 0:
            return
        for i in np.flatnonzero(arrays["changed"]):
            kendall = float(arrays["kendall"][i])
            change = RequestChange(
                request_id=str(ids[i]),
                old_length=int(arrays["old_length"][i]),
                new_length=int(arrays["new_length"][i]),
                overlap=float(arrays[f"overlap@{t}"][i]),
                kendall=kendall,
                spearman=float(arrays["spearman"][i]),
                position_shift=float(arrays["shift"][i]),
                first_difference=int(arrays["first_difference"][i]),
            )
            key = (
                _nan_last(change.overlap),
                _nan_last(kendall),
                -_nan_first(change.position_shift),
                float(change.first_difference),
            )
            self.most.append((key, change))
        if len(self.most) > 4 * self.top:
            self.most.sort(key=lambda item: (item[0], item[1].request_id))
            del self.most[self.top :]

    def column(self, key: str) -> np.ndarray:
        parts = self.values.get(key)
        return np.concatenate(parts) if parts else np.zeros(0)


def _nan_last(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _nan_first(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def bootstrap_interval(
    differences: np.ndarray, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the mean of paired differences, by a seeded bootstrap over
    requests (the same resamples for every metric, so intervals are comparable)."""
    n = len(differences)
    if n == 0:
        return float("nan"), float("nan")
    if np.all(differences == differences[0]):
        return float(differences[0]), float(differences[0])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picks = rng.integers(0, n, size=(size, n))
        means[start : start + size] = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    # A mean of exactly-zero differences can come out as ±1e-20: that is 0, not a signal.
    scale = float(np.abs(differences).max())
    return _snap(float(low), scale), _snap(float(high), scale)


def _snap(value: float, scale: float) -> float:
    return 0.0 if abs(value) <= 1e-12 * scale else value


_SKIPPED_METRICS = ("empty",)  # the same for both by construction: it describes the request


def _measure(
    selected: dict[str, torch.Tensor],
    mask: torch.Tensor,
    inputs: Mapping[str, Mapping[str, torch.Tensor]],
    yardstick: _Yardstick,
) -> dict[str, torch.Tensor]:
    """Metrics of one side's slates, measured with the shared yardstick."""
    from blendspec import ops

    def tensor(entry: tuple[str, str] | None) -> torch.Tensor | None:
        return None if entry is None else inputs[entry[0]][entry[1]]

    selection = ops.Selection(
        indices=selected["indices"],
        scores=selected["scores"],
        cap_violations=selected["cap_violations"],
        early_stops=selected["early_stops"],
    )
    return ops.slate_metrics(
        selection,
        selected["candidate_utility"],
        mask,
        embeddings=tensor(yardstick.embedding),
        categories=tensor(yardstick.category),
        semantic_ids=tensor(yardstick.semantic_id),
        flags={name: inputs[side][column] for name, (side, column) in yardstick.flags.items()},
        window=yardstick.window,
        min_prefix=yardstick.min_prefix,
    )


class _Scattered(Exception):
    """A request came back after another one: the comparison starts over (see
    `compute_impact`)."""

    def __init__(self, progressed: int) -> None:
        self.progressed = progressed


class _Comparison:
    """One pass of `compute_impact` over both readers' batches: blends both sides, compares
    the requests both blended, counts the ones either rejected."""

    def __init__(
        self,
        old: LoadedSpec,
        new: LoadedSpec,
        *,
        back_old: Mapping[str, str],
        back_new: Mapping[str, str],
        yardstick: _Yardstick,
        ks: Sequence[int],
        t: int,
        top: int,
    ) -> None:
        from blendspec.engine.blend import Runner

        self.old, self.new = old, new
        self.runner_old, self.runner_new = Runner(old), Runner(new)
        self.back_old, self.back_new = back_old, back_new
        self.yardstick, self.ks, self.t, self.top = yardstick, ks, t, top
        self.acc = _Accumulator(top)

    def reset(self) -> None:
        """Forget what a pass accumulated (it compared part of a scattered request)."""
        self.acc = _Accumulator(self.top)

    def run(
        self,
        reader_old: DumpReader,
        reader_new: DumpReader,
        batch_size: int,
        limit: int | None,
        progress: Callable[[int], None] | None,
        *,
        restartable: bool,
    ) -> tuple[int, int, int]:
        """(rejected by the new spec only, by the old only, by both); raises `_Scattered`
        when `restartable` and a request's rows turn out not to be contiguous."""
        import torch

        from blendspec.io.dump import CHECK_CONTIGUOUS

        acc, ks, t = self.acc, self.ks, self.t
        only_old = only_new = rejected_both = progressed = 0
        batches_old = reader_old.batches(batch_size, limit)
        batches_new = reader_new.batches(batch_size, limit)
        for batch_old, batch_new in zip(batches_old, batches_new, strict=True):
            if restartable and any(
                CHECK_CONTIGUOUS in problem.checks
                for problem in (*batch_old.rejected, *batch_new.rejected)
            ):
                raise _Scattered(progressed)
            batch_old.inputs = {self.back_old.get(k, k): v for k, v in batch_old.inputs.items()}
            batch_new.inputs = {self.back_new.get(k, k): v for k, v in batch_new.inputs.items()}
            rejected_old = {r.request_id for r in batch_old.rejected}
            rejected_new = {r.request_id for r in batch_new.rejected}
            rejected_both += len(rejected_old & rejected_new)
            position_new = {r: i for i, r in enumerate(batch_new.request_ids)}
            ids = [r for r in batch_old.request_ids if r in position_new]
            only_old += batch_old.size - len(ids)
            only_new += batch_new.size - len(ids)
            if ids:
                out_old = self.runner_old.blend(batch_old)
                out_new = self.runner_new.blend(batch_new)
                position_old = {r: i for i, r in enumerate(batch_old.request_ids)}
                rows_old = torch.tensor([position_old[r] for r in ids], dtype=torch.int64)
                rows_new = torch.tensor([position_new[r] for r in ids], dtype=torch.int64)
                width = int(batch_old.mask.index_select(0, rows_old).sum(1).max())
                inputs_old, sel_old, mask = _subset(
                    batch_old, self.old.spec, out_old, rows_old, width
                )
                inputs_new, sel_new, _ = _subset(batch_new, self.new.spec, out_new, rows_new, width)
                comparison = compare_slates(sel_old["indices"], sel_new["indices"], ks)
                acc.add(ids, comparison, t)
                sides = {"old": inputs_old, "new": inputs_new}
                with torch.inference_mode():
                    for side_metrics, selected in (
                        (acc.metrics_old, sel_old),
                        (acc.metrics_new, sel_new),
                    ):
                        for name, values in _measure(selected, mask, sides, self.yardstick).items():
                            if name not in _SKIPPED_METRICS:
                                side_metrics[name].append(values.to(torch.float64).numpy())
            if progress is not None:
                progress(batch_old.size + len(batch_old.rejected))
                progressed += batch_old.size + len(batch_old.rejected)
        return only_old, only_new, rejected_both


def compute_impact(
    old: LoadedSpec,
    new: LoadedSpec,
    candidates: Path,
    *,
    renames: Mapping[str, str] | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    top: int = 5,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Impact:
    """Blend the same requests with both specs and compare the slates and their metrics.

    The dump is read by one reader per spec (each spec reads its own inputs); both readers see
    the same raw requests per batch, so the k-th batches are joined on request id. A request
    that one spec rejects is counted, not compared. `renames` (old input → new input) lets a
    renamed input be read from whichever of its two names the dump has.

    A request whose rows are not contiguous is found where it comes back, after its first run
    may have been compared. As in ``blend run`` (`blendspec.engine.blend.blend_source`), the comparison
    then starts over: the ids are scanned for every such request, and a second pass has both
    readers reject each of them whole, once ("rejected by both"), so no slate is compared from
    part of a request's rows. A dump without such a request is read once.
    """
    from blendspec.io.dump import DumpReader

    started = time.perf_counter()
    renames = dict(renames or {})
    columns = _dump_columns(candidates) or set()
    old_alias = {o: n for o, n in renames.items() if o not in columns and n in columns}
    new_alias = {n: o for o, n in renames.items() if n not in columns and o in columns}
    spec_old = _reading_spec(old.spec, old_alias)
    spec_new = _reading_spec(new.spec, new_alias)
    t = max(old.spec.slate.length, new.spec.slate.length)
    ks = overlap_ks(t)
    compare = _Comparison(
        old, new, back_old={v: k for k, v in old_alias.items()},
        back_new={v: k for k, v in new_alias.items()},
        yardstick=_yardstick(old.spec, new.spec, renames), ks=ks, t=t, top=top,
    )  # fmt: skip
    readers = (DumpReader(candidates, spec_old), DumpReader(candidates, spec_new))
    try:
        counts = compare.run(*readers, batch_size, limit, progress, restartable=True)
    except _Scattered as stopped:
        scattered = readers[0].scattered_runs(limit)
        if progress is not None:
            progress(-stopped.progressed)
        compare.reset()
        counts = compare.run(
            DumpReader(candidates, spec_old, scattered=scattered),
            DumpReader(candidates, spec_new, scattered=scattered),
            batch_size, limit, progress, restartable=False,
        )  # fmt: skip
    only_old, only_new, rejected_both = counts
    acc = compare.acc

    metrics: list[MetricComparison] = []
    for name, parts in acc.metrics_old.items():
        before = np.concatenate(parts)
        after = np.concatenate(acc.metrics_new[name])
        both = np.isfinite(before) & np.isfinite(after)
        d = after[both] - before[both]
        low, high = bootstrap_interval(d, resamples=resamples, seed=seed)
        metrics.append(
            MetricComparison(
                name=name,
                old=float(before[both].mean()) if both.any() else float("nan"),
                new=float(after[both].mean()) if both.any() else float("nan"),
                difference=float(d.mean()) if len(d) else float("nan"),
                low=low,
                high=high,
                requests=int(both.sum()),
            )
        )
    changed = acc.column("changed").astype(bool)
    acc.most.sort(key=lambda item: (item[0], item[1].request_id))
    return Impact(
        candidates=str(candidates),
        requests=len(changed),
        only_old=only_old,
        only_new=only_new,
        rejected=rejected_both,
        changed=int(changed.sum()),
        length_changed=int((acc.column("old_length") != acc.column("new_length")).sum()),
        position_shift=_nanmean(acc.column("shift")),
        overlap={k: _nanmean(acc.column(f"overlap@{k}")) for k in ks},
        kendall=_nanmean(acc.column("kendall")),
        spearman=_nanmean(acc.column("spearman")),
        metrics=metrics,
        most_changed=[change for _, change in acc.most[:top]],
        slate_length=t,
        resamples=resamples,
        seed=seed,
        seconds=time.perf_counter() - started,
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


# ---------------------------------------------------------------- git


class GitError(Exception):
    """A git command failed (not a repository, unknown revision, …)."""


def _git(args: Sequence[str], cwd: Path) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as error:
        raise GitError(f"cannot run git: {error}") from None
    if done.returncode != 0:
        raise GitError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout


_YAML_SPEC = re.compile(r"^(inputs|utility)\s*:", re.MULTILINE)


def _looks_like_spec(path: str, text: str) -> bool:
    """Any DSL file is a spec; a YAML file is one when it has top-level `inputs` or `utility`
    (so workflow files and .pre-commit-hooks.yaml in the same tree are left alone)."""
    if syntax_of(Path(path)) == "dsl":
        return True
    return bool(_YAML_SPEC.search(text))


@dataclass(frozen=True)
class GitPair:
    """A spec file that differs between a revision and the working tree."""

    status: str  # modified | added | deleted
    path: str  # relative to the repository's top level
    old_text: str | None
    new_path: Path | None  # the working-tree file
    location: Path  # where the file is, or was, in the working tree


def git_pairs(rev: str, paths: Sequence[Path], cwd: Path | None = None) -> list[GitPair]:
    """Spec files (*.blend, *.yaml, *.yml) that differ between `rev` and the working tree,
    including untracked ones, restricted to `paths` (files or folders; default: everything)."""
    cwd = Path(cwd or Path.cwd())
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd)
    specs = [str(p) for p in paths]
    listed = _git(["diff", "--name-status", "--no-renames", rev, "--", *specs], cwd)
    entries: dict[str, str] = {}
    for line in listed.splitlines():
        if not line.strip():
            continue
        code, _, name = line.partition("\t")
        entries[name] = {"A": "added", "D": "deleted"}.get(code[:1], "modified")
    untracked = _git(
        ["ls-files", "--others", "--exclude-standard", "--full-name", "--", *specs], cwd
    )
    for name in untracked.splitlines():
        if name.strip():
            entries.setdefault(name, "added")
    pairs: list[GitPair] = []
    for name in sorted(entries):
        if syntax_of(Path(name)) is None:
            continue
        status = entries[name]
        old_text = None if status == "added" else _git(["show", f"{rev}:{name}"], top)
        new_path = None if status == "deleted" else top / name
        text = new_path.read_text(encoding="utf-8") if new_path is not None else old_text or ""
        if not _looks_like_spec(name, text):
            continue
        pairs.append(GitPair(status, name, old_text, new_path, top / name))
    return pairs


def display_path(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def file_event(pair: GitPair, rev: str, loaded: LoadedSpec | None) -> SpecDiff:
    """A spec added or deleted since the revision: one change for the whole file."""
    shown = display_path(pair.new_path) if pair.new_path else f"{rev}:{pair.path}"
    name = loaded.spec.name if loaded else Path(pair.path).stem
    if pair.status == "added":
        change = Change(
            "spec.added",
            "(spec)",
            Severity.behavioural,
            f"spec `{name}` added",
            new=name,
            new_at=Location(1, 1),
            anchor=Location(1, 1),
        )
        return SpecDiff(None, shown, None, name, [change], status="added")
    change = Change(
        "spec.deleted",
        "(spec)",
        Severity.breaking,
        f"spec `{name}` deleted: whatever serves or replays it loses its spec",
        old=name,
        old_at=Location(1, 1),
    )
    return SpecDiff(
        f"{rev}:{pair.path}",
        None,
        name,
        None,
        [change],
        status="deleted",
        deleted_path=display_path(pair.location),
    )


def build_report(
    pairs: Sequence[tuple[LoadedSpec, LoadedSpec] | SpecDiff],
    *,
    impact_for: Callable[[LoadedSpec, LoadedSpec, Mapping[str, str]], Impact] | None = None,
) -> DiffReport:
    """Diff each (old, new) pair, in order, with its impact when `impact_for` is given (a
    `SpecDiff` in the list, an added or deleted file, is taken as it is)."""
    files: list[SpecDiff] = []
    for item in pairs:
        if isinstance(item, SpecDiff):
            files.append(item)
            continue
        old, new = item
        diff = diff_specs(old, new)
        if impact_for is not None:
            diff.impact = impact_for(old, new, detect_renames(old.spec, new.spec).inputs)
        files.append(diff)
    return DiffReport(files)

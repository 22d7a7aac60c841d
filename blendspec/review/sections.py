"""The section differ: both specs walked section by section, in the canonical order, each
section compared the way its meaning asks (named members by name, formulas as weighted sums,
settings value by value), every change recorded with its severity and its lines in both files.

This is the heart of `blend diff` (docs/diff.md says what counts as a change and how serious it
is). It is torch-free: the plain diff path imports nothing heavier than the spec layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from blendspec.review.changes import Change, Location, Severity, SpecDiff
from blendspec.review.formulas import form_changes, linear_form, rename_expr, same_form
from blendspec.review.renames import detect_renames, utility_terms
from blendspec.review.wording import (
    exploration_text,
    fmt_relative,
    fmt_value,
    grid_text,
    json_value,
    param_text,
    relative,
    truncation_text,
    weight_json,
    weight_text,
)
from blendspec.spec.emit import format_expr, format_number
from blendspec.spec.forms import split_similarity
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Dpp, Expr, Mmr, Spec, Ssd, Weight
from blendspec.spec.syntax import KEY, PathKey


def _diversity_params(diversity: Any) -> dict[str, Any]:
    data = diversity.model_dump(mode="python", by_alias=True)
    data.pop("algorithm", None)
    data.pop("similarity", None)
    return data


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
            old=json_value(old),
            new=json_value(new),
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
            before = linear_form(rename_expr(expr, names))
            after = linear_form(new[target])
            if same_form(before, after):
                continue
            # Term by term only when the formulas share terms; otherwise old → new says it all.
            detail = form_changes(before, after) if before.keys() & after.keys() else []
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
                    f"weight `{name}` removed (was {weight_text(weight)})"
                    + (self._grid_note() if axis else ""),
                    old=weight_json(weight),
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
                    f"weight `{name}` added ({weight_text(weight)})"
                    + (self._grid_note() if axis else ""),
                    new=weight_json(weight),
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
                f"weight `{target}` policy grid {grid_text(old.grid)} → {grid_text(new.grid)}"
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
        terms_old, constant_old = utility_terms(self.o)
        terms_new, constant_new = utility_terms(self.n)
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
                f"diversity algorithm {param_text(old.algorithm, params_old)} → "
                f"{param_text(new.algorithm, params_new)}",
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
                    old=json_value(value),
                    new=json_value(after),
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
                f"truncation {truncation_text(old_t)} → {truncation_text(new_t)}"
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
                old=json_value(old.model_dump(mode="json")) if old else None,
                new=json_value(new.model_dump(mode="json")) if new else None,
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
            change = f"{exploration_text(exp_old)} → {exploration_text(exp_new)}"
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

"""The section differ: both specs walked section by section, in the canonical order, each
section compared the way its meaning asks, every change recorded with its severity and its lines
in both files.

This is the heart of `blend diff` (docs/diff.md says what counts as a change and how serious it
is). Most sections are collections of named members (inputs, objectives, weights, spacing sets,
caps, filters, outcomes, rewards, utility terms, similarity signals) that all change the same
ways — renamed, removed, changed, added — so one walker (`SectionDiffer.members`) does that for
every one of them, and each section only declares how its members read (`Members`) and how two
versions of a member compare. `SECTIONS` is the order of the whole walk. It is torch-free: the
plain diff path imports nothing heavier than the spec layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
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
    setting_text,
    truncation_text,
    weight_json,
    weight_text,
)
from blendspec.spec.emit import format_expr, format_number
from blendspec.spec.forms import split_similarity
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Diversifier, Expr, Weight
from blendspec.spec.syntax import KEY, PathKey

BREAKING, BEHAVIOURAL, COSMETIC = Severity.breaking, Severity.behavioural, Severity.cosmetic


@dataclass(frozen=True)
class Member:
    """One member of a section on one side: where it is in that side's spec, and its value."""

    at: PathKey
    value: Any


@dataclass(frozen=True)
class Members:
    """How the members of one section read in changes.

    Change kinds are `kind` + `renamed` / `removed` / `added` (`input.removed`,
    `utility.term_added`). `path` gives a member's change path from its name (its new name, for a
    renamed one); `removed` and `added` its description from its name and value, `json` its JSON
    value; `severity` is the severity of a removal or an addition, `renamed` the description of a
    rename (from old name, new name and value) and `renamed_severity` its severity. `anchor` is
    where to annotate the new file for a removed member, when not the section it was in. `key`
    says the members' lines are their keys' lines.
    """

    kind: str
    path: Callable[[Any], str]
    removed: Callable[[Any, Any], str]
    added: Callable[[Any, Any], str]
    json: Callable[[Any, Any], Any]
    severity: Severity | Callable[[Any], Severity] = BEHAVIOURAL
    renamed: Callable[[str, str, Any], str] | None = None
    renamed_severity: Severity = COSMETIC
    anchor: PathKey | None = None
    key: bool = True

    def severity_of(self, value: Any) -> Severity:
        return self.severity if isinstance(self.severity, Severity) else self.severity(value)


Compare = Callable[[Any, Member, Member], None]
"""Compares the two versions of a member present on both sides (called with its new name)."""


def _named(
    at: PathKey, items: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> dict[Hashable, Member]:
    """A mapping's members keyed by name (by their new name on the old side, with `names`)."""
    rename = names or {}
    return {rename.get(name, name): Member((*at, name), value) for name, value in items.items()}


def _positions(
    at: PathKey, names: Sequence[str], rename: Callable[[str], str] = str
) -> dict[Hashable, Member]:
    """A list's members keyed by name, each at its position in the list."""
    return {rename(name): Member((*at, i), name) for i, name in enumerate(names)}


def _diversity_params(diversity: Diversifier) -> dict[str, Any]:
    """The diversity algorithm's own parameters (not its name or similarity): its plugin's
    fields, compared one by one when the algorithm stays, shown together when it changes."""
    data = diversity.model_dump(mode="python", by_alias=True)
    data.pop("algorithm", None)
    data.pop("similarity", None)
    return data


class SectionDiffer:
    """Walks both specs through `SECTIONS`, collecting changes."""

    def __init__(self, old: LoadedSpec, new: LoadedSpec) -> None:
        self.old, self.new = old, new
        self.o, self.n = old.spec, new.spec
        self.renames = detect_renames(self.o, self.n)
        self.names = self.renames.names
        self.changes: list[Change] = []

    def run(self) -> list[Change]:
        for _, compare in SECTIONS:
            compare(self)
        return self.changes

    # ------------------------------------------------------------ plumbing

    def name(self, old_name: str) -> str:
        """An old name as the new spec calls it (itself unless renamed)."""
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

    # ------------------------------------------------------------ the three shapes of a change

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
        *,
        show: Callable[[Any], str] = fmt_value,
        note: str = "",
    ) -> None:
        """A changed scalar setting: `label old → new (+x%)`, then `note`."""
        if old == new:
            return
        rel = relative(old, new)
        self.add(
            kind,
            severity,
            path,
            f"{label} {show(old)} → {show(new)}{fmt_relative(rel)}{note}",
            old=json_value(old),
            new=json_value(new),
            # A setting that is absent on one side has no line there.
            old_at=None if old is None else old_at,
            new_at=None if new is None else new_at,
            anchor_at=new_at,
            rel=rel,
        )

    def settings(
        self,
        kind: str,
        path: str,
        label: str,
        old: Any,
        new: Any,
        keys: Sequence[str],
        old_at: PathKey,
        new_at: PathKey,
        *,
        per_key: bool = True,
    ) -> None:
        """Several behavioural settings of one thing (`path.key`, `label key`); with `per_key`
        each setting's line is its own, else the thing's."""
        for key in keys:
            self.value(
                kind,
                BEHAVIOURAL,
                f"{path}.{key}",
                f"{label} {key}",
                getattr(old, key),
                getattr(new, key),
                (*old_at, key) if per_key else old_at,
                (*new_at, key) if per_key else new_at,
            )

    def members(
        self,
        how: Members,
        old: Mapping[Hashable, Member],
        new: Mapping[Hashable, Member],
        compare: Compare | None = None,
        renamed: Mapping[str, str] | None = None,
    ) -> None:
        """Walk a section of members matched by name: `old` is keyed by the name each member has
        in the new spec, `renamed` maps new names back to old names for the renamed ones. In the
        old spec's order: a rename, then a removal or the `compare` of both versions; then the
        additions in the new spec's order."""
        renamed = renamed or {}
        for name, before in old.items():
            if name in renamed:
                assert how.renamed is not None
                self.add(
                    how.kind + "renamed",
                    how.renamed_severity,
                    how.path(name),
                    how.renamed(renamed[name], name, before.value),
                    old=renamed[name],
                    new=name,
                    old_at=before.at,
                    new_at=new[name].at,
                    key=True,
                )
            if name not in new:
                self.add(
                    how.kind + "removed",
                    how.severity_of(before.value),
                    how.path(name),
                    how.removed(name, before.value),
                    old=how.json(name, before.value),
                    old_at=before.at,
                    key=how.key,
                    anchor_at=how.anchor,
                )
            elif compare is not None:
                compare(name, before, new[name])
        for name, after in new.items():
            if name not in old:
                self.add(
                    how.kind + "added",
                    how.severity_of(after.value),
                    how.path(name),
                    how.added(name, after.value),
                    new=how.json(name, after.value),
                    new_at=after.at,
                    key=how.key,
                )

    def present(
        self, section: str, old: Any, new: Any, describe: Callable[[str, Any], str]
    ) -> bool:
        """A section that may be absent (`semantic_id_penalty`, `policy`): when it is on one side
        only, one change for all of it. True unless it is on both sides (then compare them)."""
        if old is None and new is None:
            return True
        if old is not None and new is not None:
            return False
        present = new if new is not None else old
        verb = "added" if old is None else "removed"
        self.add(
            f"{section}.{verb}",
            BEHAVIOURAL,
            section,
            describe(verb, present),
            old=json_value(old.model_dump(mode="json")) if old else None,
            new=json_value(new.model_dump(mode="json")) if new else None,
            old_at=(section,) if old else None,
            new_at=(section,) if new else None,
            key=True,
        )
        return True

    # ------------------------------------------------------------ the sections

    def spec_name(self) -> None:
        if self.o.name != self.n.name:
            self.add(
                "spec.renamed",
                COSMETIC,
                "name",
                f"spec renamed `{self.o.name}` → `{self.n.name}`",
                old=self.o.name,
                new=self.n.name,
                old_at=("name",),
                new_at=("name",),
            )

    def slate(self) -> None:
        at = ("slate", "length")
        self.value(
            "slate.length", BREAKING, "slate.length", "slate length",
            self.o.slate.length, self.n.slate.length, at, at,
            note=": consumers of the slates get another number of items",
        )  # fmt: skip

    def inputs(self) -> None:
        state = set(self.n.policy.state) if self.n.policy else set()

        def compare(name: str, before: Member, after: Member) -> None:
            declared, now = before.value, after.value
            if now.kind != declared.kind:
                self.add(
                    "input.retyped",
                    BREAKING,
                    f"inputs.{name}",
                    f"input `{name}` retyped: {declared} → {now}",
                    old=str(declared),
                    new=str(now),
                    old_at=before.at,
                    new_at=after.at,
                )
            elif now.size != declared.size:
                note = ""
                if name in state:
                    note = ": it is the policy's state, a trained policy no longer fits"
                self.add(
                    "input.resized",
                    BREAKING,
                    f"inputs.{name}",
                    f"input `{name}` resized: {declared} → {now}{note}",
                    old=str(declared),
                    new=str(now),
                    old_at=before.at,
                    new_at=after.at,
                    rel=relative(declared.size, now.size),
                )

        how = Members(
            kind="input.",
            path=lambda name: f"inputs.{name}",
            removed=lambda name, declared: f"input `{name}` ({declared}) removed",
            added=lambda name, declared: (
                f"input `{name}` ({declared}) added: dumps must provide the column"
            ),
            json=lambda _, declared: str(declared),
            severity=BREAKING,
            renamed=lambda name, target, declared: (
                f"input `{name}` renamed to `{target}` ({declared}): dumps must provide column "
                f"`{target}`"
            ),
            renamed_severity=BREAKING,
        )
        renamed = self.renames.inputs
        old = _named(("inputs",), self.o.inputs, renamed)
        self.members(how, old, _named(("inputs",), self.n.inputs), compare, _back(renamed))

    def _formulas(
        self,
        section: str,
        noun: str,
        old: Mapping[str, Expr],
        new: Mapping[str, Expr],
        renamed: Mapping[str, str],
        names: Mapping[str, str],
    ) -> None:
        """Objectives and rewards: named formulas compared as weighted sums."""

        def compare(name: str, before: Member, after: Member) -> None:
            expr = before.value
            form_old = linear_form(rename_expr(expr, names))
            form_new = linear_form(after.value)
            if same_form(form_old, form_new):
                return
            # Term by term only when the formulas share terms; otherwise old → new says it all.
            detail = form_changes(form_old, form_new) if form_old.keys() & form_new.keys() else []
            rel = None
            common = [k for k in form_old if k in form_new]
            changed = [
                k for k in common if not math.isclose(form_old[k], form_new[k], rel_tol=1e-12)
            ]
            if len(changed) == 1 and form_old.keys() == form_new.keys():
                rel = relative(form_old[changed[0]], form_new[changed[0]])
            old_text, new_text = format_expr(expr), format_expr(after.value)
            self.add(
                f"{noun}.changed",
                BEHAVIOURAL,
                f"{section}.{name}",
                f"{noun} `{name}`: {old_text} → {new_text}"
                + (f" ({'; '.join(detail)})" if detail and len(detail) <= 3 else ""),
                old=old_text,
                new=new_text,
                old_at=before.at,
                new_at=after.at,
                rel=rel,
            )

        how = Members(
            kind=f"{noun}.",
            path=lambda name: f"{section}.{name}",
            removed=lambda name, expr: f"{noun} `{name}` removed (was {format_expr(expr)})",
            added=lambda name, expr: f"{noun} `{name}` added: {format_expr(expr)}",
            json=lambda _, expr: format_expr(expr),
            renamed=lambda name, target, _: f"{noun} `{name}` renamed to `{target}` (same formula)",
        )
        self.members(
            how, _named((section,), old, renamed), _named((section,), new), compare, _back(renamed)
        )

    def objectives(self) -> None:
        self._formulas(
            "objectives",
            "objective",
            self.o.objectives,
            self.n.objectives,
            self.renames.objectives,
            self.names,
        )

    # ------------------------------------------------------------ weights and the action grid

    def _grid_note(self) -> str:
        return (
            f" (action grid {self.o.action_count:,} → {self.n.action_count:,} actions): "
            "a trained policy no longer fits"
        )

    def weights(self) -> None:
        both = self.o.policy is not None and self.n.policy is not None

        def axis(weight: Weight) -> bool:
            """A policy weight while both specs have a policy: one axis of the action grid."""
            return weight.source == "policy" and both

        def note(weight: Weight) -> str:
            return self._grid_note() if axis(weight) else ""

        how = Members(
            kind="weight.",
            path=lambda name: f"weights.{name}",
            removed=lambda name, w: f"weight `{name}` removed (was {weight_text(w)})" + note(w),
            added=lambda name, w: f"weight `{name}` added ({weight_text(w)})" + note(w),
            json=lambda _, weight: weight_json(weight),
            severity=lambda weight: BREAKING if axis(weight) else BEHAVIOURAL,
            renamed=lambda name, target, _: (
                f"weight `{name}` renamed to `{target}`: the slates' column `weight_{name}` "
                f"becomes `weight_{target}`"
            ),
            renamed_severity=BEHAVIOURAL,
        )
        renamed = self.renames.weights
        old = _named(("weights",), self.o.weights, renamed)
        self.members(
            how,
            old,
            _named(("weights",), self.n.weights),
            lambda name, before, after: self._weight(name, before, after, both),
            _back(renamed),
        )
        self._axis_order()

    def _weight(self, target: str, before: Member, after: Member, both: bool) -> None:
        old, new = before.value, after.value
        at_old, at_new = before.at, after.at
        path, label = f"weights.{target}", f"weight `{target}`"
        self.settings("weight.default", path, label, old, new, ("default",), at_old, at_new)
        for i, end in enumerate(("lower", "upper")):
            self.value(
                "weight.bound",
                BEHAVIOURAL,
                f"{path}.bounds.{end}",
                f"{label} {end} bound",
                old.bounds[i],
                new.bounds[i],
                (*at_old, "bounds"),
                (*at_new, "bounds"),
            )
        self.settings("weight.sign", path, label, old, new, ("sign",), at_old, at_new)
        if old.source != new.source:
            self.add(
                "weight.source",
                BREAKING if both else BEHAVIOURAL,
                f"{path}.source",
                f"{label} source {old.source} → {new.source}" + (self._grid_note() if both else ""),
                old=old.source,
                new=new.source,
                old_at=(*at_old, "source"),
                new_at=(*at_new, "source"),
            )
        elif old.source == "policy" and tuple(old.grid or ()) != tuple(new.grid or ()):
            self.add(
                "weight.grid",
                BREAKING,
                f"{path}.grid",
                f"{label} policy grid {grid_text(old.grid)} → {grid_text(new.grid)}"
                + (
                    self._grid_note()
                    if len(old.grid or ()) != len(new.grid or ())
                    else ": the same action ids now mean other weights, a trained policy no "
                    "longer fits"
                ),
                old=list(old.grid or ()),
                new=list(new.grid or ()),
                old_at=(*at_old, "grid"),
                new_at=(*at_new, "grid"),
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
                BREAKING,
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
        old = {(self.name(t.weight), self.name(t.objective)): Member(t.path, t) for t in terms_old}
        new = {(t.weight, t.objective): Member(t.path, t) for t in terms_new}
        self.members(UTILITY_TERMS, old, new)
        at = ("utility",)
        self.value(
            "utility.constant", BEHAVIOURAL, "utility.constant", "utility constant",
            constant_old, constant_new, at, at,
        )  # fmt: skip

    def diversity(self) -> None:
        old, new = self.o.diversity, self.n.diversity
        params_old, params_new = _diversity_params(old), _diversity_params(new)
        if old.algorithm != new.algorithm:
            self.add(
                "diversity.algorithm",
                BEHAVIOURAL,
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
                at = ("diversity", key)
                self.value(
                    "diversity.parameter", BEHAVIOURAL, f"diversity.{key}",
                    f"{new.algorithm} {key}", value, params_new.get(key), at, at,
                    show=lambda v, k=key: setting_text(k, v),
                )  # fmt: skip
        similarity_old, similarity_new = old.similarity_formula(), new.similarity_formula()
        if similarity_old is not None and similarity_new is not None:
            self._signals(similarity_old, similarity_new)

    def _signals(self, old: Expr, new: Expr) -> None:
        """Similarity signals keyed by (signal, input), their βs summed."""

        def keyed(expr: Expr, rename: Callable[[str], str]) -> dict[Hashable, Member]:
            signals, _ = split_similarity(expr, SIMILARITY)
            members: dict[Hashable, Member] = {}
            for s in signals:
                key = (s.signal, rename(s.input))
                first = members.get(key)
                beta = s.beta if first is None else first.value + s.beta
                members[key] = Member(s.path if first is None else first.at, beta)
            return members

        def compare(key: tuple[str, str], before: Member, after: Member) -> None:
            if not math.isclose(before.value, after.value, rel_tol=1e-12):
                self.value(
                    "similarity.beta", BEHAVIOURAL, SIGNALS.path(key),
                    f"similarity β of `{_signal_text(key)}`", before.value, after.value,
                    before.at, after.at,
                )  # fmt: skip

        self.members(SIGNALS, keyed(old, self.name), keyed(new, str), compare)

    # ------------------------------------------------------------ penalties and rules

    def spacing(self) -> None:
        def compare(name: str, before: Member, after: Member) -> None:
            self.settings(
                "spacing.parameter", f"spacing.{name}", f"spacing of `{name}`",
                before.value, after.value, ("window", "coefficient"), before.at, after.at,
            )  # fmt: skip

        old = _named(("spacing",), self.o.spacing, self.names)
        self.members(SPACING, old, _named(("spacing",), self.n.spacing), compare)

    def semantic_id_penalty(self) -> None:
        old, new = self.o.semantic_id_penalty, self.n.semantic_id_penalty
        section = "semantic_id_penalty"
        if self.present(
            section,
            old,
            new,
            lambda verb, penalty: (
                f"semantic-ID penalty {verb} ({fmt_value(penalty.model_dump())[1:-1]})"
            ),
        ):
            return
        assert old is not None and new is not None
        if self.name(old.input) != new.input:
            self.add(
                f"{section}.parameter",
                BEHAVIOURAL,
                f"{section}.input",
                f"semantic-ID penalty input `{old.input}` → `{new.input}`",
                old=old.input,
                new=new.input,
                old_at=(section, "input"),
                new_at=(section, "input"),
            )
        keys = ("window", "min_prefix", "coefficient")
        at = (section,)
        self.settings(
            f"{section}.parameter", section, "semantic-ID penalty", old, new, keys, at, at
        )

    def rules(self) -> None:
        at = ("rules", "filters")
        old = _positions(at, self.o.rules.filters, self.name)
        self.members(FILTERS, old, _positions(at, self.n.rules.filters))

        def compare(name: str, before: Member, after: Member) -> None:
            self.settings(
                "cap.parameter", f"rules.caps.{name}", f"cap on `{name}`",
                before.value, after.value, ("max", "window"), before.at, after.at, per_key=False,
            )  # fmt: skip

        at = ("rules", "caps")
        old = _named(at, self.o.rules.caps, self.names)
        self.members(CAPS, old, _named(at, self.n.rules.caps), compare)
        at = ("rules", "truncate")
        self.value(
            "truncate.changed", BEHAVIOURAL, "rules.truncate", "truncation",
            self.o.rules.truncate, self.n.rules.truncate, at, at, show=truncation_text,
        )  # fmt: skip

    # ------------------------------------------------------------ policy learning

    def outcomes(self) -> None:
        at = ("outcomes",)
        self.members(OUTCOMES, _positions(at, self.o.outcomes), _positions(at, self.n.outcomes))

    def rewards(self) -> None:
        self._formulas(
            "rewards", "reward", self.o.rewards, self.n.rewards, self.renames.rewards, {}
        )

    def policy(self) -> None:
        old, new = self.o.policy, self.n.policy

        def describe(verb: str, policy: Any) -> str:
            actions = (self.n if verb == "added" else self.o).action_count
            return (
                f"policy {verb} (state {', '.join(policy.state)}; {actions:,} actions): weights "
                "are " + ("now chosen per request" if verb == "added" else "now fixed")
            )

        if self.present("policy", old, new, describe):
            return
        assert old is not None and new is not None
        state_old = [self.name(s) for s in old.state]
        if state_old != list(new.state):
            self.add(
                "policy.state",
                BREAKING,
                "policy.state",
                f"policy state [{', '.join(old.state)}] → [{', '.join(new.state)}]: the "
                "network's input changes, a trained policy no longer fits",
                old=list(old.state),
                new=list(new.state),
                old_at=("policy", "state"),
                new_at=("policy", "state"),
            )
        at = ("policy",)
        self.settings("policy.file", "policy", "policy", old, new, ("file",), at, at)
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
                BEHAVIOURAL,
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
                BEHAVIOURAL,
                "policy.reward",
                f"policy learns reward {fmt_value(old.reward)} → {fmt_value(new.reward)}",
                old=old.reward,
                new=new.reward,
                old_at=("policy", "reward"),
                new_at=("policy", "reward"),
            )
        self.settings("policy.fallback", "policy", "policy", old, new, ("fallback",), at, at)


def _back(renamed: Mapping[str, str]) -> dict[str, str]:
    """New name → old name."""
    return {new: old for old, new in renamed.items()}


def _signal_text(key: tuple[str, str]) -> str:
    return f"{key[0]}({key[1]})"


SIMILARITY: PathKey = ("diversity", "similarity")

UTILITY_TERMS = Members(
    kind="utility.term_",
    path=lambda key: f"utility[{key[0]} * {key[1]}]",
    removed=lambda key, _: f"utility term `{key[0]} * {key[1]}` removed",
    added=lambda key, _: f"utility term `{key[0]} * {key[1]}` added",
    json=lambda key, _: f"{key[0]} * {key[1]}",
    anchor=("utility",),
    key=False,
)
SIGNALS = Members(
    kind="similarity.signal_",
    path=lambda key: f"diversity.similarity[{_signal_text(key)}]",
    removed=lambda key, beta: (
        f"similarity signal `{_signal_text(key)}` removed (was β {format_number(beta)})"
    ),
    added=lambda key, beta: (
        f"similarity signal `{_signal_text(key)}` added (β {format_number(beta)})"
    ),
    json=lambda _, beta: beta,
    anchor=SIMILARITY,
    key=False,
)
SPACING = Members(
    kind="spacing.",
    path=lambda name: f"spacing.{name}",
    removed=lambda name, s: (
        f"spacing of set `{name}` removed (was window {s.window}, coefficient "
        f"{format_number(s.coefficient)})"
    ),
    added=lambda name, s: (
        f"spacing of set `{name}` added (window {s.window}, coefficient "
        f"{format_number(s.coefficient)})"
    ),
    json=lambda _, spacing: spacing.model_dump(),
)
FILTERS = Members(
    kind="filter.",
    path=lambda name: f"rules.filters[{name}]",
    removed=lambda name, _: f"filter on set `{name}` removed",
    added=lambda name, _: f"filter on set `{name}` added",
    json=lambda name, _: name,
    key=False,
)
CAPS = Members(
    kind="cap.",
    path=lambda name: f"rules.caps.{name}",
    removed=lambda name, cap: f"cap on `{name}` removed (was at most {cap.max} in {cap.window})",
    added=lambda name, cap: f"cap on `{name}` added (at most {cap.max} in {cap.window})",
    json=lambda _, cap: cap.model_dump(),
)
OUTCOMES = Members(
    kind="outcome.",
    path=lambda name: f"outcomes[{name}]",
    removed=lambda name, _: f"outcome `{name}` removed",
    added=lambda name, _: f"outcome `{name}` added: logs must provide the column",
    json=lambda name, _: name,
    key=False,
)

SECTIONS: tuple[tuple[str, Callable[[SectionDiffer], None]], ...] = (
    ("name", SectionDiffer.spec_name),
    ("slate", SectionDiffer.slate),
    ("inputs", SectionDiffer.inputs),
    ("objectives", SectionDiffer.objectives),
    ("weights", SectionDiffer.weights),  # and the order of the policy's axes
    ("utility", SectionDiffer.utility),
    ("diversity", SectionDiffer.diversity),  # and its similarity signals
    ("spacing", SectionDiffer.spacing),
    ("semantic_id_penalty", SectionDiffer.semantic_id_penalty),
    ("rules", SectionDiffer.rules),  # filters, caps, truncation
    ("outcomes", SectionDiffer.outcomes),
    ("rewards", SectionDiffer.rewards),
    ("policy", SectionDiffer.policy),
)
"""The spec's sections in canonical order, each with how it is compared: the order of the walk,
so the order of changes within a severity."""


def diff_specs(old: LoadedSpec, new: LoadedSpec) -> SpecDiff:
    """The semantic changes from `old` to `new`, in the spec's canonical section order."""
    changes = SectionDiffer(old, new).run()
    return SpecDiff(
        old_file=old.document.source.name,
        new_file=new.document.source.name,
        old_name=old.spec.name,
        new_name=new.spec.name,
        changes=changes,
    )

"""Rename detection: a removed and an added thing that are one renamed thing, when that can be
told.

Without it, renaming an input reads as a removal plus an addition, two breaking changes that hide
what happened. The rules (docs/diff.md, "Renames") are strict on purpose: a pair counts only when
both sides match each other and nothing else. The section differ and the impact run (which reads a
renamed input under either name) both use the result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blendspec.constraints import PLUGINS as CONSTRAINTS
from blendspec.review.formulas import linear_form, rename_expr, same_form
from blendspec.spec.forms import refs, split_similarity, split_utility
from blendspec.spec.model import Spec


def _input_uses(spec: Spec) -> dict[str, set[str]]:
    """Where the spec uses each input, independent of the input's own name."""
    uses: dict[str, set[str]] = defaultdict(set)
    for expr in spec.objectives.values():
        # The objective's formula with this input as a placeholder, not the objective's name:
        # an objective renamed together with its input still matches.
        for name in {name for name, _ in refs(expr, ())}:
            form = linear_form(rename_expr(expr, {name: "@"}))
            uses[name].add("objective:" + repr(sorted(form.items())))
    for name, _ in refs(spec.utility, ()):
        uses[name].add("utility")
    similarity = spec.diversity.similarity_formula()
    if similarity is not None:
        signals, _ = split_similarity(similarity, ())
        for signal in signals:
            uses[signal.input].add(f"similarity:{signal.signal}")
    for kind in CONSTRAINTS:
        for declared in kind.declared(spec):
            uses[declared.input].add(kind.op)
    for name in spec.rules.filters:
        uses[name].add("filter")
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


def utility_terms(spec: Spec) -> tuple[list[Any], float]:
    """The utility's `weight * objective` terms (with their spec paths) and its constant."""
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
    forms_old = {n: linear_form(rename_expr(old.objectives[n], inputs)) for n in removed}
    forms_new = {n: linear_form(new.objectives[n]) for n in added}
    objectives = _unique_pairs(removed, added, lambda r, a: same_form(forms_old[r], forms_new[a]))

    names = {**inputs, **objectives}
    terms_old, _ = utility_terms(old)
    terms_new, _ = utility_terms(new)
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
        lambda r, a: same_form(linear_form(old.rewards[r]), linear_form(new.rewards[a])),
    )
    return Renames(inputs, objectives, weights, rewards)

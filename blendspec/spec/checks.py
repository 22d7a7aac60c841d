"""Semantic checks: pure functions over a validated spec, run in order, each yielding diagnostics.

They need the whole spec (is `p_click` declared? is it a score?) and report every problem they find
with the span of the token at fault, so a user fixes a spec in one round trip instead of one error
at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from blendspec.constraints import PLUGINS as CONSTRAINTS
from blendspec.spec.diagnostics import Diagnostic, Severity, Span, did_you_mean
from blendspec.spec.forms import (
    SIGNALS,
    Problem,
    linear_problems,
    refs,
    split_similarity,
    split_utility,
)
from blendspec.spec.model import MAX_ACTIONS, Spec
from blendspec.spec.syntax import BIDI_CONTROLS, Document, PathKey, char_name


@dataclass(frozen=True)
class CheckContext:
    spec: Spec
    document: Document
    base_dir: Path | None

    def error(
        self, code: str, message: str, path: PathKey, help: str | None = None, *, key: bool = False
    ) -> Diagnostic:
        span = self.document.key_span(path) if key else self.document.span_of(path)
        return Diagnostic(code, message, span, help)

    def warning(
        self, code: str, message: str, path: PathKey, help: str | None = None
    ) -> Diagnostic:
        return Diagnostic(code, message, self.document.key_span(path), help, Severity.WARNING)

    def problem(self, problem: Problem) -> Diagnostic:
        return self.error(problem.code, problem.message, problem.path, problem.help)

    @property
    def utility_operands(self) -> set[str]:
        """Names a utility weight may multiply: objectives and score inputs."""
        scores = {n for n, i in self.spec.inputs.items() if i.kind == "score"}
        return set(self.spec.objectives) | scores


Check = Callable[[CheckContext], Iterable[Diagnostic]]


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _input_ref(
    ctx: CheckContext, name: str, path: PathKey, wanted: str, role: str, *, key: bool = False
) -> Iterator[Diagnostic]:
    """`name` must be an input of kind `wanted`: E200 if unknown, E201 if of another kind."""
    inputs = ctx.spec.inputs
    if name not in inputs:
        same_kind = [n for n, i in inputs.items() if i.kind == wanted]
        yield ctx.error(
            "E200",
            f"unknown input `{name}`",
            path,
            did_you_mean(name, same_kind or inputs) or _declare_help(wanted, name),
            key=key,
        )
    elif inputs[name].kind != wanted:
        yield ctx.error(
            "E201",
            f"{role} needs {_article(wanted)} {wanted} input, but `{name}` is declared `{inputs[name]}`",
            path,
            _same_kind_help(ctx, wanted),
            key=key,
        )


def _declare_help(kind: str, name: str) -> str:
    example = {
        "embedding": "embedding[64]",
        "semantic_id": "semantic_id[4]",
        "features": "features[16]",
    }
    return f"declare it under `inputs`, as in `{name}: {example.get(kind, kind)}`"


def _same_kind_help(ctx: CheckContext, kind: str) -> str | None:
    names = [n for n, i in ctx.spec.inputs.items() if i.kind == kind]
    if names:
        return f"{kind} inputs: " + ", ".join(f"`{n}`" for n in names)
    return None


# ---------------------------------------------------------------- the passes


def check_namespaces(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Inputs, objectives and weights are referred to by bare name, so they share one namespace."""
    seen: dict[str, str] = {}
    for section in ("inputs", "objectives", "weights"):
        for name in getattr(ctx.spec, section):
            if name in seen:
                yield ctx.error(
                    "E103",
                    f"`{name}` is declared in both `{seen[name]}` and `{section}`",
                    (section, name),
                    "give one of them another name",
                    key=True,
                )
            else:
                seen[name] = section


def check_objectives(ctx: CheckContext) -> Iterator[Diagnostic]:
    for name, expr in ctx.spec.objectives.items():
        yield from _formula_refs(ctx, expr, ("objectives", name), "score", "an objective")
        yield from map(ctx.problem, linear_problems(expr, ("objectives", name)))


def _formula_refs(
    ctx: CheckContext, expr, path: PathKey, wanted: str, role: str
) -> Iterator[Diagnostic]:
    for ref, ref_path in refs(expr, path):
        yield from _input_ref(ctx, ref, ref_path, wanted, role)


def check_utility(ctx: CheckContext) -> Iterator[Diagnostic]:
    spec = ctx.spec
    weights = set(spec.weights)
    operands = ctx.utility_operands
    for name, path in refs(spec.utility, ("utility",)):
        if name in weights or name in operands:
            continue
        if name in spec.inputs:
            yield ctx.error(
                "E201",
                f"the utility weighs objectives and score inputs, but `{name}` is declared "
                f"`{spec.inputs[name]}`",
                path,
            )
        else:
            yield ctx.error(
                "E200",
                f"unknown name `{name}`",
                path,
                did_you_mean(name, weights | operands)
                or "declare it as a weight, an objective or a score input",
            )
    _, _, problems = split_utility(spec.utility, ("utility",), weights, operands)
    known = weights | operands
    for problem in problems:
        # An unknown name already has its own E200; don't also call its term malformed.
        names = {n for n, _ in refs(_node_at(spec.utility, problem.path[1:]), ())}
        if names <= known:
            yield ctx.problem(problem)


def _node_at(expr, path: PathKey):
    node = expr
    for key in path:
        node = node.args[key] if isinstance(key, int) else getattr(node, key)
    return node


def check_weights(ctx: CheckContext) -> Iterator[Diagnostic]:
    for name, weight in ctx.spec.weights.items():
        path = ("weights", name)
        lo, hi = weight.bounds
        if lo > hi:
            yield ctx.error(
                "E301", f"the bounds of `{name}` are inverted: [{lo:g}, {hi:g}]", path + ("bounds",)
            )
            continue
        if not lo <= weight.default <= hi:
            yield ctx.error(
                "E300",
                f"the default of `{name}` ({weight.default:g}) is outside its bounds [{lo:g}, {hi:g}]",
                path + ("default",),
            )
        if weight.sign == "positive" and lo < 0:
            yield ctx.error(
                "E302",
                f"`{name}` must stay ≥ 0, but its bounds allow {lo:g}",
                path + ("bounds", 0),
                "raise the lower bound to 0, or declare `sign = negative` (or `any`) on the weight",
            )
        if weight.sign == "negative" and hi > 0:
            yield ctx.error(
                "E302",
                f"`{name}` is a negative weight and must stay ≤ 0, but its bounds allow {hi:g}",
                path + ("bounds", 1),
                "lower the upper bound to 0",
            )
        for i, value in enumerate(weight.grid or ()):
            if not lo <= value <= hi:
                yield ctx.error(
                    "E303",
                    f"the policy grid of `{name}` has {value:g}, outside its bounds [{lo:g}, {hi:g}]",
                    path + ("grid", i),
                )
        grid = weight.grid or ()
        if len(set(grid)) != len(grid):
            yield ctx.error(
                "E100", f"the policy grid of `{name}` repeats a value", path + ("grid",)
            )


def check_diversity(ctx: CheckContext) -> Iterator[Diagnostic]:
    similarity = ctx.spec.diversity.similarity_formula()
    if similarity is None:
        return
    path = ("diversity", "similarity")
    signals, problems = split_similarity(similarity, path)
    yield from map(ctx.problem, problems)
    seen: set[tuple[str, str]] = set()
    for term in signals:
        wanted = SIGNALS[term.signal]
        yield from _input_ref(ctx, term.input, term.path, wanted, f"`{term.signal}`")
        if (term.signal, term.input) in seen:
            yield ctx.error(
                "E103", f"`{term.signal}({term.input})` appears twice in the similarity", term.path
            )
        seen.add((term.signal, term.input))
    if not problems and signals and all(t.beta == 0 for t in signals):
        yield ctx.error("E100", "every similarity weight is zero", path)


def check_penalties_and_rules(ctx: CheckContext) -> Iterator[Diagnostic]:
    spec = ctx.spec
    for kind in CONSTRAINTS:
        for d in kind.declared(spec):
            yield from _input_ref(
                ctx, d.input, d.input_path, kind.input_kind, kind.described_as, key=d.input_is_key
            )
            for problem in d.block.problems(d, spec.inputs.get(d.input)):
                yield ctx.error(problem.code, problem.message, problem.path)
    for i, name in enumerate(spec.rules.filters):
        yield from _input_ref(ctx, name, ("rules", "filters", i), "flag", "a filter")
    truncate = spec.rules.truncate
    if truncate is not None and truncate < spec.slate.length:
        yield ctx.error(
            "E306",
            f"`truncate` keeps {truncate} candidates, fewer than the slate's {spec.slate.length}",
            ("rules", "truncate"),
        )


def check_windows(ctx: CheckContext) -> Iterator[Diagnostic]:
    """A look-back window can reach at most T-1 earlier slots; anything longer never binds."""
    spec = ctx.spec
    length = spec.slate.length
    windows: list[tuple[PathKey, int, int]] = []
    for key, window in spec.diversity.windows():
        windows.append((("diversity", key), window, length - 1))
    for kind in CONSTRAINTS:
        for d in kind.declared(spec):
            for key, window in d.block.windows():
                windows.append(((*d.path, key), window, length - kind.reach))
    for path, window, reach in windows:
        if window > reach:
            yield ctx.warning(
                "W002",
                f"window {window} can never matter: a slate of {length} reaches back at most {reach}",
                path,
                f"use {max(reach, 1)} or less",
            )


def check_policy(ctx: CheckContext) -> Iterator[Diagnostic]:
    spec = ctx.spec
    policy_weights = spec.policy_weights
    policy = spec.policy
    if policy is None:
        for name in policy_weights:
            yield ctx.error(
                "E305",
                f"`{name}` takes its value from a policy, but the spec declares no `policy`",
                ("weights", name, "source"),
                "add a `policy` section, or make the weight `fixed`",
            )
        return
    if not policy_weights:
        yield ctx.error(
            "E305",
            "the spec declares a `policy` but no weight takes its value from it",
            ("policy",),
            "set `source = policy` and a `grid` on the weights the policy should choose",
            key=True,
        )
    yield from _action_grid_size(ctx)
    for i, name in enumerate(policy.state):
        yield from _input_ref(ctx, name, ("policy", "state", i), "features", "the policy state")
    if not spec.rewards:
        yield ctx.error(
            "E304",
            "the policy has no reward to learn from",
            ("policy",),
            "declare `outcomes` and a `reward`, e.g. `reward clicks = click`",
            key=True,
        )
    elif policy.reward is None and len(spec.rewards) > 1:
        yield ctx.error(
            "E308",
            "several rewards are declared and the policy does not say which one it learns",
            ("policy",),
            "set `reward` to one of " + ", ".join(f"`{r}`" for r in spec.rewards),
            key=True,
        )
    elif policy.reward is not None and policy.reward not in spec.rewards:
        yield ctx.error(
            "E200",
            f"unknown reward `{policy.reward}`",
            ("policy", "reward"),
            did_you_mean(policy.reward, spec.rewards),
        )
    if policy.file is not None and ctx.base_dir is not None:
        from blendspec.policy.files import policy_path_problem

        problem = policy_path_problem(policy.file, ctx.base_dir)
        if problem is not None:
            yield ctx.error("E307", problem[0], ("policy", "file"), problem[1])


def _action_grid_size(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The runtime holds per-request distributions over every action: 4 grids of 1,000 values
    (10^12 actions) validated, then asked for 16 TB on the first request."""
    count = 1
    for name in ctx.spec.policy_weights:
        count *= len(ctx.spec.weights[name].grid or ())
        if count > MAX_ACTIONS:
            yield ctx.error(
                "E100",
                f"the policy's action grid reaches {count:,} actions at `{name}` "
                f"(at most {MAX_ACTIONS:,}: the product of the policy weights' grid sizes)",
                ("weights", name, "grid"),
                "use fewer grid values or fewer policy weights",
            )
            return


def check_rewards(ctx: CheckContext) -> Iterator[Diagnostic]:
    outcomes = set(ctx.spec.outcomes)
    seen: set[str] = set()
    for i, name in enumerate(ctx.spec.outcomes):
        if name in seen:
            yield ctx.error("E103", f"outcome `{name}` is declared twice", ("outcomes", i))
        seen.add(name)
    for name, expr in ctx.spec.rewards.items():
        path = ("rewards", name)
        for ref, ref_path in refs(expr, path):
            if ref not in outcomes:
                yield ctx.error(
                    "E200",
                    f"unknown outcome `{ref}`",
                    ref_path,
                    did_you_mean(ref, outcomes)
                    or f"declare it in `outcomes`, as in `outcome {ref}`",
                )
        yield from map(ctx.problem, linear_problems(expr, path))


def check_unused(ctx: CheckContext) -> Iterator[Diagnostic]:
    spec = ctx.spec
    used: set[str] = set()
    for expr in spec.objectives.values():
        used.update(name for name, _ in refs(expr, ()))
    used.update(name for name, _ in refs(spec.utility, ()))
    similarity = spec.diversity.similarity_formula()
    if similarity is not None:
        used.update(name for name, _ in refs(similarity, ()))
    used.update(d.input for kind in CONSTRAINTS for d in kind.declared(spec))
    used.update(spec.rules.filters)
    if spec.policy is not None:
        used.update(spec.policy.state)
    for name, declared in spec.inputs.items():
        if name not in used:
            yield ctx.warning(
                "W001",
                f"input `{name}` ({declared}) is declared but never used",
                ("inputs", name),
                "remove it, or use it; a dump must still provide every declared input",
            )
    for name in spec.objectives:
        if name not in used:
            yield ctx.warning(
                "W003", f"objective `{name}` is not part of the utility", ("objectives", name)
            )
    for name in spec.weights:
        if name not in used:
            yield ctx.warning(
                "W003", f"weight `{name}` is not used by the utility", ("weights", name)
            )


def check_bidi(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Trojan Source (CVE-2021-42574): bidi controls in a comment or string make a line display
    differently from what it means, so a reviewer can be shown one spec and run another. Like
    rustc and gcc, warn at each line that holds one; an escape (`\\u202e`) says the same safely."""
    text = ctx.document.source.text
    last_line = 0
    for match in _BIDI.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if line == last_line:
            continue
        last_line = line
        column = match.start() - text.rfind("\n", 0, match.start())
        char = match.group()
        yield Diagnostic(
            "W004",
            f"bidirectional control character {char_name(char)} can make this line "
            "display differently from what it means",
            Span.point(line, column),
            f"remove it; a string that needs it can say `\\u{ord(char):04x}`",
            Severity.WARNING,
        )


_BIDI = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")


CHECKS: tuple[Check, ...] = (
    check_namespaces,
    check_objectives,
    check_utility,
    check_weights,
    check_diversity,
    check_penalties_and_rules,
    check_windows,
    check_policy,
    check_rewards,
    check_unused,
    check_bidi,
)


def run_checks(spec: Spec, document: Document, base_dir: Path | None) -> list[Diagnostic]:
    ctx = CheckContext(spec, document, base_dir)
    return [diagnostic for check in CHECKS for diagnostic in check(ctx)]

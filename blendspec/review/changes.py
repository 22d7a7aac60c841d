"""The records a `blend diff` run produces: each semantic change with its severity and lines, the
diff of one pair of files, the report of a run, and the impact records of `--candidates`.

They are one torch-free module of plain dataclasses so that everything else in `review/` — the
section differ that fills them, the renderers that print them, git pairing, the impact run — can
depend on them without depending on each other. The JSON each record gives is versioned by
`DIFF_FORMAT_VERSION` (docs/diff.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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
            "relative_change": round_json(self.relative_change),
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
    outcome: Outcome | None = None  # `--logs`: the estimated effect on the reward

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

    def worse(self) -> bool:
        """Some file's estimated outcome is worse at 95% (`--fail-on worse`)."""
        return any(f.outcome is not None and f.outcome.verdict == WORSE for f in self.files)

    def fails(self, *, exit_code: bool, fail_on: Severity | None) -> bool:
        """The exit-code contract: any change with --exit-code; changes at least `fail_on` else."""
        changes = self.changes
        if exit_code and changes:
            return True
        if fail_on is not None:
            return any(c.severity.rank >= fail_on.rank for c in changes)
        return False


def round_json(value: float | None, digits: int = 6) -> float | None:
    """Round to `digits` significant digits so JSON is stable across platforms; NaN → None."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


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
            "old": round_json(self.old),
            "new": round_json(self.new),
            "difference": round_json(self.difference),
            "ci95": [round_json(self.low), round_json(self.high)],
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
            "overlap": round_json(self.overlap),
            "kendall_tau": round_json(self.kendall),
            "spearman_rho": round_json(self.spearman),
            "position_shift": round_json(self.position_shift),
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
            "slates_changed": {
                "count": self.changed,
                "fraction": round_json(self.changed_fraction),
            },
            "lengths_changed": self.length_changed,
            "mean_position_shift": round_json(self.position_shift),
            "overlap": {str(k): round_json(v) for k, v in self.overlap.items()},
            "kendall_tau": round_json(self.kendall),
            "spearman_rho": round_json(self.spearman),
            "metrics": [m.to_json() for m in self.metrics],
            "most_changed": [r.to_json() for r in self.most_changed],
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "interval": 0.95},
        }


# ---------------------------------------------------------------- estimated outcome (--logs)

BETTER = "better"
WORSE = "worse"
NO_CHANGE = "no detectable change"


@dataclass(frozen=True)
class OutcomeEstimate:
    """One estimator's value of the old and the new spec (mean reward per logged request) and
    of their paired difference new − old, each with its 95% bootstrap interval."""

    estimator: str  # as printed: SNIPS, DR, IPS
    old: float
    old_low: float
    old_high: float
    new: float
    new_low: float
    new_high: float
    difference: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """better / worse when the interval of the difference excludes 0, else no change."""
        if math.isfinite(self.low) and self.low > 0:
            return BETTER
        if math.isfinite(self.high) and self.high < 0:
            return WORSE
        return NO_CHANGE

    def to_json(self) -> dict[str, Any]:
        def side(value: float, low: float, high: float) -> dict[str, Any]:
            return {"value": round_json(value), "ci95": [round_json(low), round_json(high)]}

        return {
            "estimator": self.estimator.lower(),
            "old": side(self.old, self.old_low, self.old_high),
            "new": side(self.new, self.new_low, self.new_high),
            "difference": side(self.difference, self.low, self.high),
            "verdict": self.verdict,
        }


@dataclass
class Outcome:
    """`blend diff --logs`: both specs' estimated reward and the difference, or why the logs
    cannot say (`not_estimable`). The first estimator is the primary one (verdict, --fail-on)."""

    logs: str
    reward: str | None
    requests: int  # logged requests the estimate rests on
    estimators: list[str]  # asked for, in order (lower case)
    min_effective: float = 30
    resamples: int = 1000
    seed: int = 0
    estimates: list[OutcomeEstimate] = field(default_factory=list)
    effective_old: float | None = None
    effective_new: float | None = None
    not_estimable: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def primary(self) -> OutcomeEstimate | None:
        return self.estimates[0] if self.estimates and self.not_estimable is None else None

    @property
    def verdict(self) -> str | None:
        primary = self.primary
        return primary.verdict if primary is not None else None

    def to_json(self) -> dict[str, Any]:
        primary = self.primary
        return {
            "logs": self.logs,
            "reward": self.reward,
            "requests": self.requests,
            "effective_n": {
                "old": round_json(self.effective_old),
                "new": round_json(self.effective_new),
            },
            "min_effective_n": round_json(self.min_effective),
            "primary": primary.estimator.lower() if primary else None,
            "verdict": self.verdict,
            "estimates": [e.to_json() for e in self.estimates] if primary else [],
            "not_estimable": self.not_estimable,
            "notes": list(self.notes),
            "bootstrap": {
                "resamples": self.resamples,
                "seed": self.seed,
                "interval": 0.95,
                "paired": True,
            },
        }

"""The entry `blend diff` calls: one `DiffReport` from the pairs of specs it loaded (and the
whole-file changes of `--git`), each pair diffed section by section and, when asked, with its
impact on a dump.

The impact is passed in as a function so that this module, and the plain diff path through it,
never imports the blend (torch): `blendspec.cli.diff` supplies one only with `--candidates`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from blendspec.review.changes import DiffReport, Impact, SpecDiff
from blendspec.review.renames import detect_renames
from blendspec.review.sections import diff_specs
from blendspec.spec.loader import LoadedSpec


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

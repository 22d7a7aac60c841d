"""`blendspec.review.diff` (and the old flat `blendspec.diff`, aliased to it by
`blendspec/_moved.py`): every name the single diff module defined publicly before it was split,
re-exported from its new home, so scripts written against it keep working.

In-repo code imports the focused modules instead, and so should new code:

* `review/changes.py` — the records: `Severity`, `Change`, `SpecDiff`, `DiffReport`, `Impact`, …
* `review/wording.py` — how values read in descriptions;
* `review/formulas.py` — formulas as weighted sums (`linear_form`);
* `review/renames.py` — rename detection (`detect_renames`);
* `review/sections.py` — the section differ (`diff_specs`);
* `review/slates.py` — comparing two slates, bootstrap intervals;
* `review/impact.py` — `--candidates` (`compute_impact`; needs torch when called);
* `review/git.py` — `--git` (`git_pairs`, `file_event`);
* `review/report.py` — the command's entry (`build_report`).

Importing this module loads all of them (numpy too), which the plain `blend diff` path avoids by
importing the focused modules.
"""

from __future__ import annotations

from blendspec.review.changes import (
    DIFF_FORMAT_VERSION,
    SEVERITIES,
    Change,
    DiffReport,
    Impact,
    Location,
    MetricComparison,
    RequestChange,
    Severity,
    SpecDiff,
)
from blendspec.review.formulas import linear_form
from blendspec.review.git import GitError, GitPair, display_path, file_event, git_pairs
from blendspec.review.impact import compute_impact
from blendspec.review.renames import Renames, detect_renames
from blendspec.review.report import build_report
from blendspec.review.sections import diff_specs
from blendspec.review.slates import bootstrap_interval, compare_slates, overlap_ks
from blendspec.review.wording import fmt_relative, fmt_value, relative

__all__ = [
    "DIFF_FORMAT_VERSION",
    "SEVERITIES",
    "Change",
    "DiffReport",
    "GitError",
    "GitPair",
    "Impact",
    "Location",
    "MetricComparison",
    "Renames",
    "RequestChange",
    "Severity",
    "SpecDiff",
    "bootstrap_interval",
    "build_report",
    "compare_slates",
    "compute_impact",
    "detect_renames",
    "diff_specs",
    "display_path",
    "file_event",
    "fmt_relative",
    "fmt_value",
    "git_pairs",
    "linear_form",
    "overlap_ks",
    "relative",
]

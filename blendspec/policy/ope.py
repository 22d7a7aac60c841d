"""Off-policy evaluation: what a target policy would have earned, estimated from logged actions.

DRL-PUT policies are trained on logs whose actions a *different* (behaviour) policy chose, so the
only honest way to compare them before an A/B test is to reweight those logs (DESIGN §5, issue 5).
Every estimator here reads the same four arrays, so a policy file, a value-based learner and a
hand-written matrix of action probabilities are evaluated the same way:

* ``replay`` — mean reward over the requests where the target's most probable action equals the
  logged one (the PRL-PUTS offline metric). Unbiased for a deterministic target under uniform
  logging; otherwise it evaluates the target's argmax policy, not the target itself.
* ``ips`` — inverse propensity scoring, mean of ``w_i r_i`` with ``w_i = π(a_i|x_i) / μ(a_i|x_i)``.
  Unbiased whenever the behaviour propensities are right and positive, but high variance.
* ``snips`` — self-normalised IPS, ``Σ w r / Σ w``: slightly biased, much lower variance, and
  invariant to a constant shift of the reward.
* ``dr`` — doubly robust, ``Σ_a π(a|x) q(x,a) + w (r − q(x,a_i))`` with a reward model ``q``:
  unbiased if either the propensities or ``q`` are right, lower variance when ``q`` is good.

Intervals are percentile bootstrap intervals over requests (resampling rows of the log). The
reward model of DR is held fixed during the bootstrap, so its own estimation noise is not in the
interval; with cross-fitting (below) that noise does not bias the estimate either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ESTIMATORS",
    "MIN_EFFECTIVE",
    "PAIRED_ESTIMATORS",
    "Estimate",
    "PairedEstimate",
    "evaluate",
    "evaluate_pair",
    "kish",
    "per_action_mean_model",
]

ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr")

MIN_EFFECTIVE = 30
"""Below this many effective requests an estimate carries a warning (see :class:`Estimate`)."""

# Bootstrap replicates are summed with one matrix product per chunk; this bounds the chunk's
# [replicates, n] count matrix so memory stays flat for logs of millions of rows.
_BOOTSTRAP_CELLS = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its bootstrap 95% interval.

    ``n_effective`` is how many logged requests really inform the estimate: the number of matches
    for ``replay``, Kish's effective sample size ``(Σw)² / Σw²`` for the weighted estimators. A
    small value next to a narrow interval is a warning sign. ``flag`` is None when the estimate is
    usable, otherwise a short reason (``"no-matches"`` when replay found no logged action equal to
    the target's choice, so its value is NaN rather than a misleading 0). ``warning`` is set
    when fewer than :data:`MIN_EFFECTIVE` requests carry the estimate: the value is computed, but
    a bootstrap over a handful of matches gives intervals that look tight and mean nothing (a
    deterministic policy over 1,000 actions matches about 1 uniformly logged request in 1,000).
    """

    name: str
    value: float
    low: float
    high: float
    n: int
    n_effective: float
    std_error: float
    flag: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.flag is None and math.isfinite(self.value)

    def covers(self, truth: float) -> bool:
        """Whether ``truth`` lies in the interval (False for an unusable estimate)."""
        return self.ok and self.low <= truth <= self.high

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "n_effective": self.n_effective,
            "std_error": self.std_error,
            "flag": self.flag,
            "warning": self.warning,
        }


def per_action_mean_model(
    actions: np.ndarray,
    rewards: np.ndarray,
    n_actions: int,
    *,
    folds: int = 2,
    prior: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """A cross-fitted per-action mean reward, as an ``[n, K]`` prediction matrix for DR.

    Row ``i`` is predicted from the folds that do not contain ``i`` (cross-fitting), so a request's
    own reward never enters its own control variate, which would bias DR. Each action's mean is
    shrunk towards the fold's global mean with ``prior`` pseudo-observations, because with
    a 1,000-action grid most actions are seen only a few times. The model ignores the state: it
    only removes the part of the reward variance explained by the action, which is what lowers
    DR's variance under uniform logging.
    """
    actions = np.asarray(actions, dtype=np.int64)
    rewards = np.asarray(rewards, dtype=np.float64)
    n = actions.shape[0]
    out = np.empty((n, n_actions), dtype=np.float64)
    if n == 0:
        return out
    folds = max(1, min(folds, n))
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    for f in range(folds):
        test = fold == f
        train = ~test if folds > 1 else test
        a, r = actions[train], rewards[train]
        base = float(r.mean()) if r.size else 0.0
        sums = np.bincount(a, weights=r, minlength=n_actions)
        counts = np.bincount(a, minlength=n_actions).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts + prior > 0, (sums + prior * base) / (counts + prior), base)
        out[test] = mean
    return out


def _check(
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    target_probs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(actions)
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(propensities, dtype=np.float64)
    t = np.asarray(target_probs, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"actions must be 1-D, got shape {a.shape}")
    n = a.shape[0]
    if r.shape != (n,) or p.shape != (n,):
        raise ValueError(
            f"actions, rewards and propensities must have the same length; got {a.shape}, "
            f"{r.shape}, {p.shape}"
        )
    if t.ndim != 2 or t.shape[0] != n:
        raise ValueError(f"target_probs must have shape [n={n}, K], got {t.shape}")
    if not np.issubdtype(a.dtype, np.integer) and a.size and not np.all(np.equal(np.mod(a, 1), 0)):
        raise ValueError("actions must be integer action ids")
    a = a.astype(np.int64)
    k = t.shape[1]
    if a.size and (a.min() < 0 or a.max() >= k):
        bad = int(np.flatnonzero((a < 0) | (a >= k))[0])
        raise ValueError(f"row {bad}: action {a[bad]} is outside the {k} actions of target_probs")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"row {int(np.flatnonzero(~np.isfinite(r))[0])}: reward is not finite")
    bad_p = ~np.isfinite(p) | (p <= 0) | (p > 1)
    if bad_p.any():
        row = int(np.flatnonzero(bad_p)[0])
        raise ValueError(
            f"row {row}: behaviour propensity {p[row]!r} must be in (0, 1]; a logged action with "
            "propensity 0 cannot have been drawn, so the log or its propensities are wrong"
        )
    if not np.all(np.isfinite(t)) or (t < 0).any():
        raise ValueError("target_probs must be finite and non-negative")
    sums = t.sum(axis=1)
    if n and not np.allclose(sums, 1.0, atol=1e-4):
        row = int(np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-4))[0])
        raise ValueError(f"row {row}: target_probs sum to {sums[row]:.6g}, not 1")
    return a, r, p, t


def evaluate(
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    target_probs: np.ndarray,
    estimators: Sequence[str] = ESTIMATORS,
    reward_model: np.ndarray | None = None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    clip: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Estimate]:
    """Estimate the mean per-request reward of a target policy from a behaviour policy's log.

    Arguments (numpy arrays, one row per logged request):

    * ``actions`` — int ``[n]``, the logged action ids (indices into the ``K`` columns);
    * ``rewards`` — float ``[n]``, the logged reward of each request;
    * ``propensities`` — float ``[n]``, the behaviour policy's probability of the logged action;
      must be in (0, 1] (a 0 raises ``ValueError``: that action could not have been logged);
    * ``target_probs`` — float ``[n, K]``, the target policy's action distribution per request
      (a deterministic policy is a one-hot row);
    * ``reward_model`` — float ``[n, K]`` predicted rewards for DR; when None, DR uses
      :func:`per_action_mean_model`, a per-action mean fitted with 2-fold cross-fitting;
    * ``clip`` — cap on the importance weights ``π/μ`` (trades bias for variance; None: no cap);
    * ``bootstrap`` — number of bootstrap replicates for the 95% interval (0: no interval, the
      bounds are NaN); ``seed`` makes the resampling reproducible;
    * ``progress`` — called with the number of replicates as each chunk of them is drawn (on
      millions of logged requests the bootstrap takes a while).

    Returns one :class:`Estimate` per requested estimator, keyed by name. Replay with no match is
    NaN with ``flag="no-matches"``, never silently 0.
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; known: {list(ESTIMATORS)}")
    if bootstrap < 0:
        raise ValueError("bootstrap must be >= 0")
    if clip is not None and not clip > 0:
        raise ValueError("clip must be > 0")
    a, r, p, t = _check(actions, rewards, propensities, target_probs)
    n, k = t.shape
    rows = np.arange(n)
    w = t[rows, a] / p
    if clip is not None:
        w = np.minimum(w, clip)
    match = (np.argmax(t, axis=1) == a).astype(np.float64) if n else np.zeros(0)
    dr_terms = np.zeros(n)
    if "dr" in estimators:
        if reward_model is None:
            q = per_action_mean_model(a, r, k, seed=seed)
        else:
            q = np.asarray(reward_model, dtype=np.float64)
            if q.shape != (n, k):
                raise ValueError(f"reward_model must have shape {(n, k)}, got {q.shape}")
            if not np.all(np.isfinite(q)):
                raise ValueError("reward_model must be finite")
        dr_terms = (t * q).sum(axis=1) + w * (r - q[rows, a])
    # Every estimator is a ratio of sums of per-row terms, so one resampling serves them all.
    terms = np.stack([match * r, match, w * r, w, dr_terms, np.ones(n)], axis=1)

    sums = terms.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = {
            "replay": sums[0] / sums[1],
            "ips": sums[2] / sums[5],
            "snips": sums[2] / sums[3],
            "dr": sums[4] / sums[5],
        }
    replicates: dict[str, np.ndarray] = {e: np.zeros(0) for e in estimators}
    if bootstrap and n:
        sums = resampled_sums(terms, bootstrap, seed, progress)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = {
                "replay": sums[:, 0] / sums[:, 1],
                "ips": sums[:, 2] / sums[:, 5],
                "snips": sums[:, 2] / sums[:, 3],
                "dr": sums[:, 4] / sums[:, 5],
            }
        replicates = {e: boot[e] for e in estimators}
    out: dict[str, Estimate] = {}
    for name in estimators:
        value = float(point[name]) if n else float("nan")
        flag: str | None = None
        if name == "replay":
            effective = float(match.sum())
            if effective == 0:
                flag, value = "no-matches", float("nan")
        else:
            effective = kish(w)
            if n == 0:
                flag = "empty"
            elif name == "snips" and not w.sum() > 0:
                flag, value = "zero-weight", float("nan")
        reps = replicates[name]
        reps = reps[np.isfinite(reps)]
        if reps.size and flag is None:
            low, high = (float(x) for x in np.percentile(reps, [2.5, 97.5]))
            se = float(reps.std(ddof=1)) if reps.size > 1 else float("nan")
        else:
            low = high = se = float("nan")
        warning = (
            f"only {effective:.0f} effective requests: the interval is unreliable"
            if flag is None and effective < MIN_EFFECTIVE
            else None
        )
        out[name] = Estimate(name, value, low, high, n, effective, se, flag, warning)
    return out


# --------------------------------------------------------------------------------------------
# Two targets on the same log: the paired difference
# --------------------------------------------------------------------------------------------

PAIRED_ESTIMATORS: tuple[str, ...] = ("snips", "dr", "ips")
"""The estimators :func:`evaluate_pair` knows (replay has no meaning for a stochastic target)."""


def resampled_sums(
    terms: np.ndarray,
    bootstrap: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``[bootstrap, k]``: the column sums of ``terms`` ``[n, k]`` over ``bootstrap`` seeded
    resamples of its rows (with replacement), as resample counts times ``terms`` — every
    estimator here is a ratio of such sums, so one resampling serves them all. Chunked so that
    a chunk's count matrix holds about ``_BOOTSTRAP_CELLS`` cells."""
    n = terms.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    parts: list[np.ndarray] = []
    for start in range(0, bootstrap, chunk):
        b = min(chunk, bootstrap - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        parts.append(counts.astype(np.float64) @ terms)
        if progress is not None:
            progress(b)
    return np.concatenate(parts)


def kish(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` of importance weights (0 when all are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    squares = float((w * w).sum())
    return float(w.sum() ** 2 / squares) if squares > 0 else 0.0


@dataclass(frozen=True)
class PairedEstimate:
    """One estimator's value of two target policies on the same log, and of their difference.

    The intervals are percentile intervals of one paired bootstrap over requests: every
    replicate resamples the rows once and evaluates both targets on that resample, so the
    interval of ``difference`` (new − old) carries the covariance of the two sides instead of
    adding their variances. ``effective_old`` and ``effective_new`` are Kish's effective sample
    sizes of each side's importance weights.
    """

    name: str
    old: float
    old_low: float
    old_high: float
    new: float
    new_low: float
    new_high: float
    difference: float
    low: float
    high: float
    n: int
    effective_old: float
    effective_new: float


def evaluate_pair(
    rewards: np.ndarray,
    propensities: np.ndarray,
    old_prob: np.ndarray,
    new_prob: np.ndarray,
    estimators: Sequence[str] = ("snips", "dr"),
    *,
    old_direct: np.ndarray | None = None,
    new_direct: np.ndarray | None = None,
    logged_q: np.ndarray | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, PairedEstimate]:
    """Estimate two targets' mean reward per request from one log, and their difference.

    Per logged request ``i`` (arrays ``[n]``): the reward, the behaviour propensity of the
    logged action, and each target's probability of that action (``old_prob``, ``new_prob``:
    ``π(a_i|x_i)``, not the whole distribution, so memory stays ``O(n)`` for any grid). DR also
    needs the reward model's prediction of the logged action (``logged_q``, ``q(x_i, a_i)``)
    and each target's direct term (``old_direct``, ``new_direct``: ``Σ_a π(a|x_i) q(x_i, a)``);
    the model should be cross-fitted so that no row's own reward is in its own prediction.

    ``bootstrap`` replicates (seeded) give the 95% intervals; 0 leaves them NaN.
    """
    unknown = [e for e in estimators if e not in PAIRED_ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; known: {list(PAIRED_ESTIMATORS)}")
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(propensities, dtype=np.float64)
    n = r.shape[0]
    w_old = np.asarray(old_prob, dtype=np.float64) / p
    w_new = np.asarray(new_prob, dtype=np.float64) / p
    dr_old = dr_new = np.zeros(n)
    if "dr" in estimators:
        if old_direct is None or new_direct is None or logged_q is None:
            raise ValueError("dr needs old_direct, new_direct and logged_q")
        residual = r - np.asarray(logged_q, dtype=np.float64)
        dr_old = np.asarray(old_direct, dtype=np.float64) + w_old * residual
        dr_new = np.asarray(new_direct, dtype=np.float64) + w_new * residual
    # Columns: 0 w_old r, 1 w_old, 2 w_new r, 3 w_new, 4 dr_old, 5 dr_new, 6 count.
    terms = np.stack([w_old * r, w_old, w_new * r, w_new, dr_old, dr_new, np.ones(n)], axis=1)

    def values(sums: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "snips": (sums[..., 0] / sums[..., 1], sums[..., 2] / sums[..., 3]),
                "ips": (sums[..., 0] / sums[..., 6], sums[..., 2] / sums[..., 6]),
                "dr": (sums[..., 4] / sums[..., 6], sums[..., 5] / sums[..., 6]),
            }

    point = values(terms.sum(axis=0))
    reps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if bootstrap and n:
        reps = values(resampled_sums(terms, bootstrap, seed))

    def interval(samples: np.ndarray) -> tuple[float, float]:
        finite = samples[np.isfinite(samples)]
        if not finite.size:
            return float("nan"), float("nan")
        low, high = np.percentile(finite, [2.5, 97.5])
        return float(low), float(high)

    effective_old, effective_new = kish(w_old), kish(w_new)
    out: dict[str, PairedEstimate] = {}
    nan = (float("nan"), float("nan"))
    for name in estimators:
        old, new = (float(v) for v in point[name])
        if name in reps:
            rep_old, rep_new = reps[name]
            old_iv, new_iv = interval(rep_old), interval(rep_new)
            diff_iv = interval(rep_new - rep_old)
        else:
            old_iv = new_iv = diff_iv = nan
        if np.array_equal(w_old, w_new) and (name != "dr" or np.array_equal(dr_old, dr_new)):
            # The same target on every row: the difference is exactly 0, not a bootstrap
            # artefact of ±1e-17.
            diff_iv = (0.0, 0.0)
        out[name] = PairedEstimate(
            name, old, *old_iv, new, *new_iv, new - old, *diff_iv, n, effective_old, effective_new
        )
    return out

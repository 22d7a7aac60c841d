"""Off-policy estimators against synthetic bandits whose true target value is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blendspec.policy.ope import Estimate, evaluate, per_action_mean_model

K = 5
CONTEXTS = 3
# Mean reward of action a in context x.
MU = np.array(
    [
        [0.2, 0.5, 0.3, 0.1, 0.4],
        [0.6, 0.1, 0.2, 0.3, 0.2],
        [0.1, 0.2, 0.3, 0.7, 0.5],
    ]
)
TARGET_ARGMAX = MU.argmax(axis=1)


def target_matrix(deterministic: bool) -> np.ndarray:
    """π(a|x) per context: one-hot on the best action, or a soft version of it."""
    if deterministic:
        return np.eye(K)[TARGET_ARGMAX]
    logits = 6.0 * MU
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def truth(pi: np.ndarray) -> float:
    return float((pi * MU).sum(axis=1).mean())  # contexts are uniform


def simulate(
    n: int, seed: int, *, uniform: bool = True, offset: float = 0.0
) -> tuple[np.ndarray, ...]:
    """Logged (context, action, reward, propensity) from a uniform or skewed behaviour policy."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CONTEXTS, n)
    if uniform:
        mu = np.full((CONTEXTS, K), 1.0 / K)
    else:
        mu = np.array([0.5, 0.2, 0.15, 0.1, 0.05])[None, :].repeat(CONTEXTS, 0)
    a = np.array([rng.choice(K, p=mu[c]) for c in x])
    r = (rng.random(n) < MU[x, a]).astype(np.float64) + offset
    return x, a, r, mu[x, a]


@pytest.mark.parametrize("deterministic", [True, False])
def test_intervals_cover_the_truth_in_most_seeds(deterministic: bool) -> None:
    pi = target_matrix(deterministic)
    value = truth(pi)
    names = ("replay", "ips", "snips", "dr") if deterministic else ("ips", "snips", "dr")
    hits = dict.fromkeys(names, 0)
    seeds = 20
    for seed in range(seeds):
        x, a, r, p = simulate(1500, seed)
        est = evaluate(a, r, p, pi[x], names, bootstrap=300, seed=seed)
        for name in names:
            hits[name] += est[name].covers(value)
    for name, h in hits.items():
        assert h >= 16, f"{name} covered the truth in only {h}/{seeds} seeds"


def test_ips_is_unbiased_under_uniform_logging() -> None:
    pi = target_matrix(False)
    values = []
    for seed in range(300):
        x, a, r, p = simulate(300, 1000 + seed)
        values.append(evaluate(a, r, p, pi[x], ("ips",), bootstrap=0)["ips"].value)
    values = np.array(values)
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert abs(values.mean() - truth(pi)) < 3 * se


def test_snips_and_dr_have_lower_variance_than_ips() -> None:
    # A constant reward offset is pure noise for IPS (the weights do not average to 1 in a finite
    # sample) but invisible to SNIPS and removed by DR's reward model.
    pi = target_matrix(False)
    runs: dict[str, list[float]] = {"ips": [], "snips": [], "dr": []}
    for seed in range(80):
        x, a, r, p = simulate(400, 5000 + seed, uniform=False, offset=5.0)
        est = evaluate(a, r, p, pi[x], ("ips", "snips", "dr"), bootstrap=0)
        for name in runs:
            runs[name].append(est[name].value)
    std = {name: float(np.std(v)) for name, v in runs.items()}
    assert std["snips"] < 0.5 * std["ips"]
    assert std["dr"] < 0.5 * std["ips"]


def test_dr_with_the_true_reward_model_is_tight() -> None:
    pi = target_matrix(False)
    x, a, r, p = simulate(2000, 7)
    est = evaluate(a, r, p, pi[x], ("ips", "dr"), reward_model=MU[x], bootstrap=200)
    assert est["dr"].high - est["dr"].low < est["ips"].high - est["ips"].low
    assert est["dr"].covers(truth(pi))


def test_replay_with_no_match_is_nan_and_flagged() -> None:
    a = np.zeros(10, dtype=np.int64)
    pi = np.tile(np.eye(K)[3], (10, 1))
    est = evaluate(a, np.ones(10), np.full(10, 0.2), pi, bootstrap=50)
    replay = est["replay"]
    assert math.isnan(replay.value) and replay.flag == "no-matches" and not replay.ok
    assert replay.n_effective == 0
    # The weighted estimators still answer: the target never takes the logged action.
    assert est["ips"].value == 0.0 and est["ips"].ok


def test_zero_propensity_is_an_error() -> None:
    with pytest.raises(ValueError, match="propensity"):
        evaluate(np.array([0, 1]), np.ones(2), np.array([0.5, 0.0]), np.full((2, 2), 0.5))


@pytest.mark.parametrize(
    ("actions", "target", "message"),
    [
        (np.array([0, 7]), np.full((2, 2), 0.5), "outside"),
        (np.array([0, 1]), np.full((2, 2), 0.4), "sum to"),
        (np.array([0, 1]), np.full((3, 2), 0.5), "shape"),
    ],
)
def test_bad_inputs_are_clear_errors(actions: np.ndarray, target: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(actions, np.ones(2), np.full(2, 0.5), target)


def test_clipping_caps_weights_and_effective_size() -> None:
    x, a, r, p = simulate(500, 3, uniform=False)
    pi = target_matrix(True)[x]
    raw = evaluate(a, r, p, pi, ("ips",), bootstrap=0)["ips"]
    clipped = evaluate(a, r, p, pi, ("ips",), bootstrap=0, clip=2.0)["ips"]
    assert clipped.value <= raw.value
    assert isinstance(clipped, Estimate) and clipped.n_effective > 0


def test_bootstrap_is_seeded_and_chunking_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    x, a, r, p = simulate(300, 11)
    pi = target_matrix(False)[x]
    one = evaluate(a, r, p, pi, bootstrap=100, seed=4)
    monkeypatch.setattr("blendspec.policy.ope._BOOTSTRAP_CELLS", 1000)
    two = evaluate(a, r, p, pi, bootstrap=100, seed=4)
    for name in one:
        assert one[name].low == pytest.approx(two[name].low)
        assert one[name].high == pytest.approx(two[name].high)


def test_cross_fitted_model_never_sees_its_own_row() -> None:
    a = np.array([0, 0, 1, 1])
    r = np.array([1.0, 0.0, 1.0, 0.0])
    q = per_action_mean_model(a, r, 2, folds=4, prior=0.0)
    # Leave-one-out: each row's prediction for its own action is the other row's reward.
    assert q[np.arange(4), a].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_few_effective_requests_carry_a_warning() -> None:
    x, a, r, p = simulate(60, 12)
    est = evaluate(a, r, p, target_matrix(True)[x], ("replay", "snips"), bootstrap=50)
    assert est["replay"].n_effective < 30 and est["replay"].warning is not None
    assert est["replay"].ok  # still usable, but the caller is told why to distrust it
    x, a, r, p = simulate(2000, 12)
    assert (
        evaluate(a, r, p, target_matrix(True)[x], ("snips",), bootstrap=0)["snips"].warning is None
    )

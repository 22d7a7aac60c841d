"""Hypothesis strategies for valid spec models (syntax-level validity: any names, any formulas)."""

from __future__ import annotations

from hypothesis import strategies as st

from blendspec.diversity import Cover, Msd
from blendspec.spec import model as m

KEYWORDS = [
    "spec", "slate", "input", "objective", "weight", "utility", "diversity", "spacing",
    "semantic_id_penalty", "filter", "cap", "truncate", "outcome", "reward", "policy", "in",
    "score", "embedding", "lambda", "true", "false", "yes", "no", "on", "off", "null", "inf",
    "nan", "none", "cosine", "log1p",
]  # fmt: skip

names = st.one_of(st.sampled_from(KEYWORDS), st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z"))
# The model's ranges (blendspec.spec.model): numbers within ±1e9, positive parameters in [1e-6, 1e6]
# (temperature's floor), tolerances (epsilon) in (0, 1].
numbers = st.floats(
    allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9
) | st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e-6, 2.5e-7, 1e9, -3.0, 1e-300])
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
tolerance = st.floats(min_value=1e-12, max_value=1.0, allow_nan=False)
probability = st.floats(min_value=0.0, max_value=1.0)
windows = st.integers(min_value=1, max_value=200)


def _neg(operand: m.Expr) -> m.Expr:
    return m.Neg(operand=operand)


leaves = st.one_of(
    st.builds(lambda v: m.Const(value=v), numbers),
    st.builds(lambda n: m.Ref(name=n), names),
)
expressions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(_neg, inner.filter(lambda e: not isinstance(e, m.Const))),
        st.builds(
            lambda op, a, b: m.BinOp(op=op, left=a, right=b),
            st.sampled_from(["+", "-", "*", "/"]),
            inner,
            inner,
        ),
        st.builds(
            lambda fn, args: m.Call(fn=fn, args=tuple(args)),
            names,
            st.lists(inner, max_size=3),
        ),
    ),
    max_leaves=12,
)

input_types = st.one_of(
    st.builds(lambda k: m.Input(kind=k), st.sampled_from(m.SCALAR_INPUT_KINDS)),
    st.builds(
        lambda k, n: m.Input(kind=k, size=n),
        st.sampled_from(m.SIZED_INPUT_KINDS),
        st.integers(min_value=1, max_value=4096),
    ),
)


@st.composite
def weights(draw: st.DrawFn) -> m.Weight:
    source = draw(st.sampled_from(["fixed", "policy"]))
    grid = tuple(draw(st.lists(numbers, min_size=1, max_size=5))) if source == "policy" else None
    return m.Weight(
        default=draw(numbers),
        bounds=(draw(numbers), draw(numbers)),
        sign=draw(st.sampled_from(["positive", "negative", "any"])),
        source=source,
        grid=grid,
    )


diversities = st.one_of(
    st.builds(
        lambda e, t, g, w, v, r, eps: m.Ssd(
            algorithm="ssd", similarity=e, theta=t, gamma=g, window=w, variant=v, relevance=r, epsilon=eps
        ),
        expressions, probability, positive, windows, st.sampled_from(["stabilized", "volume"]),
        st.sampled_from(["zscore", "minmax", "raw"]), tolerance,
    ),
    st.builds(
        lambda e, a, w, r, eps: m.Dpp(algorithm="dpp", similarity=e, alpha=a, window=w, relevance=r, epsilon=eps),
        expressions, positive, st.none() | windows, st.sampled_from(["zscore", "minmax", "raw"]), tolerance,
    ),
    st.builds(
        lambda e, lam, r: m.Mmr(algorithm="mmr", similarity=e, **{"lambda": lam}, relevance=r),
        expressions, probability, st.sampled_from(["zscore", "minmax", "raw"]),
    ),
    st.builds(
        lambda e, t, r: Msd(algorithm="msd", similarity=e, theta=t, relevance=r),
        expressions, probability, st.sampled_from(["zscore", "minmax", "raw"]),
    ),
    st.builds(
        lambda e, t, g, r: Cover(algorithm="cover", similarity=e, theta=t, gamma=g, relevance=r),
        expressions, probability, tolerance, st.sampled_from(["zscore", "minmax", "raw"]),
    ),
    st.just(m.NoDiversity(algorithm="none")),
)  # fmt: skip

explorations = st.one_of(
    st.just(m.NoExploration(kind="none")),
    st.just(m.UniformExploration(kind="uniform")),
    st.builds(lambda e: m.EpsilonExploration(kind="epsilon", epsilon=e), probability),
    st.builds(lambda t: m.SoftmaxExploration(kind="softmax", temperature=t), positive),
)

policies = st.builds(
    lambda state, file, exploration, reward, fallback: m.Policy(
        state=tuple(state), file=file, exploration=exploration, reward=reward, fallback=fallback
    ),
    st.lists(names, min_size=1, max_size=3),
    st.none() | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    explorations,
    st.none() | names,
    st.sampled_from(["defaults", "nearest"]),
)

specs = st.builds(
    lambda name, length, inputs, objectives, ws, utility, diversity, spacing, sid, filters, caps,
    truncate, outcomes, rewards, policy: m.Spec(
        name=name,
        slate=m.Slate(length=length),
        inputs=inputs,
        objectives=objectives,
        weights=ws,
        utility=utility,
        diversity=diversity,
        spacing=spacing,
        semantic_id_penalty=sid,
        rules=m.Rules(filters=tuple(filters), caps=caps, truncate=truncate),
        outcomes=tuple(outcomes),
        rewards=rewards,
        policy=policy,
    ),
    names,
    st.integers(min_value=1, max_value=500),
    st.dictionaries(names, input_types, min_size=1, max_size=4),
    st.dictionaries(names, expressions, max_size=3),
    st.dictionaries(names, weights(), max_size=3),
    expressions,
    diversities,
    st.dictionaries(names, st.builds(lambda w, c: m.Spacing(window=w, coefficient=c), windows, positive), max_size=2),
    st.none() | st.builds(
        lambda n, w, p, c: m.SemanticIdPenalty(input=n, window=w, min_prefix=p, coefficient=c),
        names, windows, st.integers(min_value=1, max_value=8), positive,
    ),
    st.lists(names, max_size=2),
    st.dictionaries(names, st.builds(lambda k, w: m.Cap(max=k, window=w), windows, windows), max_size=2),
    st.none() | st.integers(min_value=1, max_value=5000),
    st.lists(names, max_size=3),
    st.dictionaries(names, expressions, max_size=2),
    st.none() | policies,
)  # fmt: skip

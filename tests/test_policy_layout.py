"""The policy package's shape: serving never imports training, the torch-free modules stay so,
``blendspec.policy`` hands out every name it always has, and ``TrainConfig`` is the one place
training's settings and defaults live."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import blendspec.policy as policy
from blendspec.policy.train import TrainConfig, train_policy
from blendspec.spec.loader import load_text
from tests.test_layers import _env, import_graph
from tests.test_policy import TINY, synthetic_logs

TRAINING = {"blendspec.policy.train", "blendspec.policy.fit", "blendspec.policy.ddp"}

# What `from blendspec.policy import …` handed out before the package was split: keep every one.
PUBLIC = {
    "ACTION_COLUMN",
    "PROPENSITY_COLUMN",
    "REQUEST_ID_COLUMN",
    "ActionGrid",
    "LearnedPolicy",
    "LogData",
    "PolicyFileError",
    "PolicyNet",
    "TrainResult",
    "apply_exploration",
    "load_policy",
    "log_data",
    "policy_path_problem",
    "reward_values",
    "spec_hash",
    "state_inputs",
    "train_policy",
}


def _reach(start: str) -> set[str]:
    """Every blendspec module ``start`` imports, directly or not, lazily or at load time."""
    graph = import_graph(lazy=True)
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("module", ["blendspec.compiler.lower", "blendspec.policy.runtime"])
def test_serving_never_imports_training(module: str) -> None:
    reached = _reach(module)
    assert "blendspec.policy.runtime" in reached | {module}
    assert reached & TRAINING == set()


def test_every_public_name_is_its_home_module_object() -> None:
    assert set(policy.__all__) >= PUBLIC | {"TrainConfig"}
    for name in policy.__all__:
        home = importlib.import_module(f"blendspec.policy.{policy._HOMES[name]}")
        assert getattr(policy, name) is getattr(home, name), name
    with pytest.raises(AttributeError):
        _ = policy.learn


def test_spec_side_modules_do_not_import_torch() -> None:
    probe = (
        "import json, sys\n"
        "import blendspec.policy.files, blendspec.policy.ope\n"
        "from blendspec.policy import ActionGrid, log_data, policy_path_problem, spec_hash\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_train_config_holds_the_defaults_and_keywords_still_work() -> None:
    gradient, model = TrainConfig().fit_settings(), TrainConfig(method="model").fit_settings()
    assert (gradient.batch_size, gradient.lr, gradient.patience) == (256, 3e-3, 5)
    assert (model.batch_size, model.lr, model.patience) == (1024, 1e-3, 10)
    assert TrainConfig(hidden=[8, 4]).hidden == (8, 4)  # type: ignore[arg-type]
    spec = load_text(TINY, "dsl").spec
    logs = synthetic_logs(300, seed=2)
    by_config = train_policy(spec, logs, config=TrainConfig(epochs=2, seed=4))
    by_keywords = train_policy(spec, logs, epochs=2, seed=4)
    changed = train_policy(spec, logs, config=TrainConfig(epochs=9, seed=1), epochs=2, seed=4)
    for other in (by_keywords, changed):
        assert other.history == by_config.history
        for key, value in by_config.policy.net.state_dict().items():
            assert other.policy.net.state_dict()[key].equal(value), key
    with pytest.raises(TypeError, match="no_such_setting"):
        train_policy(spec, logs, no_such_setting=1)
    with pytest.raises(ValueError, match="one process"):
        TrainConfig(method="model", nproc=2)

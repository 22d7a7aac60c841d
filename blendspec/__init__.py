"""blendspec: declare the blending layer of a recommender as a spec, then validate, compile and run it.

The names below are the Python API (README, docs/notebook.md). Each is looked up in its home
module on first use, so `import blendspec` loads neither torch nor pyarrow: the command line's
spec commands start in a fraction of a second, and `blendspec.load_spec` stays torch-free.
"""

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

from blendspec import _moved

_moved.install()

_HOMES: dict[str, str] = {
    "BadRequestError": "blendspec.engine.blend",
    "BlendModule": "blendspec.compiler.lower",
    "BlendResult": "blendspec.api",
    "Diversified": "blendspec.api",
    "DumpError": "blendspec.io.dump",
    "LoadedSpec": "blendspec.spec.loader",
    "REQUEST_SEED_KEY": "blendspec.compiler.lower",
    "SpecError": "blendspec.spec.diagnostics",
    "blend": "blendspec.api",
    "compile_graph": "blendspec.compiler.compile",
    "diversify": "blendspec.api",
    "load_spec": "blendspec.spec.loader",
    "load_text": "blendspec.spec.loader",
    "module_for": "blendspec.compiler.lower",
    "request_seeds": "blendspec.compiler.lower",
}
"""The names ``blendspec`` hands out, and the module that defines each."""

__all__ = ["__version__", *sorted(_HOMES)]


def __getattr__(name: str) -> _Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'blendspec' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*(n for n in globals() if not n.startswith("_")), *__all__})

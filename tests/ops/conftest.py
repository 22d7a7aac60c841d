"""Every operator test runs twice: on the compiled per-request loops and on the torch path.

Both must follow the references exactly, keep a request's slate independent of its batch, and
trace without changing a pick. Where no C compiler is available the native run is skipped (and
says why), not silently replaced by the torch path.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blendspec.ops import KERNELS, _native, kernels


@pytest.fixture(autouse=True, params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "native" and _native.library() is None:
        pytest.skip(f"compiled loops unavailable: {_native.build_error}")
    with kernels(request.param):
        yield request.param

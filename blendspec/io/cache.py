"""blendspec's cache folder: the bundled sample dump, the compiled loops, the built parser.

Standard library only, so the spec layer (which caches its parser here) stays light.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BLENDSPEC_CACHE``, else ``$XDG_CACHE_HOME/blendspec``, else ``~/.cache/blendspec``."""
    configured = os.environ.get("BLENDSPEC_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "blendspec"

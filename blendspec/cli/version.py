"""`blend --version`'s line, standard library only: `blendspec.cli` answers it before building
the typer app, and the app's own --version option prints the same line."""

from __future__ import annotations


def version_line() -> str:
    """``blendspec 0.1.0``: the installed distribution's version (the checkout's when not
    installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("blendspec")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        from blendspec import __version__ as number
    return f"blendspec {number}\n"

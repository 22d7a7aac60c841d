"""The wheel carries the grammar and the C source of the compiled loops, works without the
checkout (building the loops into its cache on first use), and installs no top-level `cli`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_contents_and_use_without_checkout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("blendspec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "blendspec/grammar/blendspec.lark" in names
    assert "blendspec/ops/csrc/greedy.c" in names  # the compiled loops are built from it
    top_level = {name.split("/")[0] for name in names}
    assert "cli.py" not in top_level and "cli" not in top_level
    assert not any(name.startswith(("tests/", "specs/")) for name in names)
    # Every subpackage of the checkout ships (pyproject lists them by hand), and the docs the
    # schema's descriptions and the language server's hovers are read from.
    packages = {
        str(init.parent.relative_to(REPO)) for init in (REPO / "blendspec").rglob("__init__.py")
    }
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"subpackages missing from the wheel (pyproject packages): {missing}"
    assert "blendspec/docs/language.md" in names and "blendspec/docs/errors.md" in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    spec = tmp_path / "mini.blend"
    spec.write_text("spec mini\nslate 2\ninput p: score\nweight w = 1 in [0, 1]\nutility = w * p\n")
    probe = (
        "import sys, blendspec.spec.syntax as s; "
        f"assert s.__file__.startswith({str(target)!r}), s.__file__; "
        "from blendspec.spec.loader import load_spec; "
        "from blendspec.ops import _native; "
        "assert _native.library() is not None, _native.build_error; "
        f"print(load_spec({str(spec)!r}).spec.name)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(target),
            "PATH": "/usr/bin:/bin",
            "BLENDSPEC_CACHE": str(tmp_path / "cache"),
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mini"

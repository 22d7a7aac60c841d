"""The small things users hit first: --version, -h, shell completion, help that reads well at
80 columns and has a line for every option, choices that are choices, `blend run` leaving
nothing in the working folder, and Ctrl-C."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.sim.core import World
from blendspec.sim.dumps import write_dump
from tests.conftest import REPO, SPECS

runner = CliRunner()
VERSION = re.compile(r"^blendspec \d+\.\d+\.\d+\S*\n$")


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command of the app, groups included, with the words that call it (typer's click
    objects: typer 0.29 carries its own copy of click, so they are not `click.Command`s)."""

    def walk(path: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk([*path, name], sub)

    yield from walk([], typer.main.get_command(app))


ALL = list(commands())


BLEND = Path(sys.executable).parent / "blend"  # the console script pip installed


def blend_main(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The console script, as a shell runs it (`python -m blendspec` where it is not installed,
    which names itself so in usage lines and completion scripts)."""
    command = [str(BLEND)] if BLEND.exists() else [sys.executable, "-m", "blendspec"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, **kwargs)  # type: ignore[call-overload]  # fmt: skip


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0
        assert VERSION.match(result.stdout), result.stdout
    # The console script answers it before building the app; the same line.
    shell = blend_main("--version")
    assert shell.returncode == 0 and shell.stdout == runner.invoke(app, ["-V"]).stdout


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: " ".join(p) or "blend")
def test_h_is_help_on_every_command(path: list[str]) -> None:
    short = runner.invoke(app, [*path, "-h"], env={"COLUMNS": "100"})
    assert short.exit_code == 0, short.output
    assert f"Usage: blend {' '.join(path)}".rstrip() in short.stdout
    assert short.stdout == runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"}).stdout


def test_h_reaches_the_plain_validate_path() -> None:
    # `blend validate` runs without typer when it can; -h must still be help, not a spec path.
    result = blend_main("validate", "-h")
    assert result.returncode == 0, result.stderr
    assert re.search(r"Usage: .*(blend|blendspec) validate \[OPTIONS\]", result.stdout)


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"blend {' '.join(path)} {param.name}"
        for path, command in ALL
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []


def test_help_paragraphs_are_not_broken_mid_sentence() -> None:
    """Typer's rich help keeps a docstring's single line breaks (in a group's list of commands
    and in paragraphs after the first), so each paragraph must be one line of text."""
    for path, command in ALL[1:]:
        assert "\n" not in (command.short_help or ""), path
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph or paragraph.startswith("\b"), (path, paragraph)


def wrapped_too_early(lines: list[str], width: int) -> list[str]:
    """Lines of a rendered help box that end before the next line's first word would have
    fitted: a break the text asked for, not one the width made (`width` counts the cell's
    right padding)."""
    bad = []
    for line, after in itertools.pairwise(lines):
        text, next_text = line.rstrip(), after.strip()
        if text and next_text and len(text) + 1 + len(next_text.split()[0]) < width:
            bad.append(line)
    return bad


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: " ".join(p) or "blend")
def test_help_reads_at_80_columns(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in result.stdout, "an option name or type was cut"
    # The description column of the commands box: each command's lines wrap at the box's edge.
    if "─ Commands ─" in result.stdout:
        box = lines[lines.index(next(x for x in lines if "─ Commands ─" in x)) + 1 :]
        box = box[: next(i for i, x in enumerate(box) if x.startswith("╰"))]
        column = min(len(re.match(r"│ \S+\s+", x).group(0)) for x in box if x[2] != " ")  # type: ignore[union-attr]
        descriptions = [x[column:-1] for x in box]
        entries: list[list[str]] = []
        for row, text in zip(box, descriptions, strict=True):
            if row[2] != " ":
                entries.append([])
            entries[-1].append(text)
        width = len(descriptions[0])
        for entry in entries:
            assert wrapped_too_early(entry, width) == [], entry


def test_completion_is_offered_and_completes() -> None:
    help_text = runner.invoke(app, ["--help"]).stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
    script = blend_main("--show-completion", "bash")
    assert script.returncode == 0 and "_BLEND_COMPLETE=complete_bash" in script.stdout
    env = {**os.environ, "_BLEND_COMPLETE": "complete_bash", "COMP_WORDS": "blend sim",
           "COMP_CWORD": "1"}  # fmt: skip
    assert blend_main(env=env).stdout.split() == ["simulate"]
    env |= {"COMP_WORDS": "blend policy report --for", "COMP_CWORD": "3"}
    assert blend_main(env=env).stdout.split() == ["--format"]


def test_policy_report_format_is_a_choice(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "report", "--spec", str(SPECS / "ads.blend"),
                                 "--logs", str(tmp_path / "l.parquet"), "--simulate", "5",
                                 "--format", "xml"])  # fmt: skip
    assert result.exit_code == 2
    assert "'xml' is not one of" in " ".join(result.output.split())
    assert "text" in result.output and "json" in result.output
    help_text = runner.invoke(app, ["policy", "report", "-h"], env={"COLUMNS": "100"}).stdout
    assert "<text|json>" in help_text  # listed as the choice it is


def test_run_without_o_writes_to_the_cache_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    dump = write_dump(World.default(), tmp_path / "d.parquet", requests=4, candidates=30).path
    monkeypatch.setenv("BLENDSPEC_CACHE", str(cache))
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["run", str(SPECS / "homefeed.blend"), "--candidates", str(dump)])
    assert result.exit_code == 0, result.output
    slates = cache / "runs" / "homefeed" / "slates.parquet"
    assert slates.is_file()
    assert f"slates → {slates}" in result.stdout
    assert os.listdir(work) == []  # nothing left in the working folder
    # -o still goes where it says.
    chosen = tmp_path / "mine.parquet"
    again = runner.invoke(
        app, ["run", str(SPECS / "homefeed.blend"), "--candidates", str(dump), "-o", str(chosen)]
    )
    assert again.exit_code == 0 and chosen.is_file()


def test_ctrl_c_says_interrupted_and_exits_130(tmp_path: Path) -> None:
    """SIGINT to a long `blend simulate`: "interrupted", exit 130, and the half-written dump
    removed with its temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    # Ten million requests: far longer than the test waits; a missed signal is a timeout.
    command = [sys.executable, "-m", "blendspec", "simulate", "-o", str(out / "d.parquet"),
               "--requests", "10000000", "--candidates", "20"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not os.listdir(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the temporary file appears once writing has begun
        assert os.listdir(out), "the simulation never started writing"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert os.listdir(out) == []

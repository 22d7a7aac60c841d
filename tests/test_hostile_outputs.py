"""Issue 18, outputs: nothing an input held is lost, and the environment's refusals are the
user's errors. An output path that resolves (symlink, hard link, `..`, a folder holding it) to an
input or to another output is refused before any work; a shard folder holding other files is
not emptied; a hostile policy file is a one-line error naming it; a folder where a file goes, a
read-only folder or a full disk is one line with the path and the OS reason (exit 2); the
temporaries of a killed run are cleaned by the next write to the same target."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.io.outputs import OutputError, atomic_path, temporary_name
from tests.conftest import SPECS
from tests.test_policy_runtime import TINY, random_policy
from tests.test_run import SPEC, make_rows, write_parquet

runner = CliRunner()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A small spec and a 12-request dump, in a folder of their own."""
    (tmp_path / "small.blend").write_text(SPEC)
    write_parquet(make_rows(), tmp_path / "dump.parquet")
    return tmp_path


def blend(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in result.output.splitlines() if line.startswith("error")]


def assert_refused(result, *names: str) -> None:  # type: ignore[no-untyped-def]
    """Exit 2 with exactly one error line that names every path, and no internal error."""
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "internal error" not in result.output


# -- 3. outputs never destroy inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["-o", "{dump}"],
        ["-o", "slates.parquet", "--rejects", "{dump}"],
        ["-o", "{dump}", "--rejects", "r.parquet"],
        ["-o", "slates.parquet", "--metrics", "{dump}"],
        ["-o", "slates.parquet", "--report", "{dump}"],
        ["-o", "{spec}"],
    ],
)
def test_run_refuses_an_output_onto_an_input(
    work: Path, flags: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    before = {p: p.read_bytes() for p in (work / "dump.parquet", work / "small.blend")}
    args = [f.format(dump="dump.parquet", spec="small.blend") for f in flags]
    result = blend("run", "small.blend", "--candidates", "dump.parquet", *args)
    named = "small.blend" if "{spec}" in flags else "dump.parquet"
    assert_refused(result, named)
    assert {p: p.read_bytes() for p in before} == before
    assert not (work / "slates.parquet").exists()


def test_run_sees_through_symlinks_hard_links_and_dotdot(work: Path) -> None:
    dump = work / "dump.parquet"
    before = dump.read_bytes()
    (work / "sub").mkdir()
    (work / "alias.parquet").symlink_to(dump)
    os.link(dump, work / "hard.parquet")
    for out in (work / "alias.parquet", work / "hard.parquet", work / "sub" / ".." / dump.name):
        result = blend("run", work / "small.blend", "--candidates", dump, "-o", out)
        assert_refused(result, str(out), str(dump))
        assert dump.read_bytes() == before
    # The link itself as the input, the real file as the output: the same file too.
    result = blend("run", work / "small.blend", "--candidates", work / "alias.parquet", "-o", dump)
    assert_refused(result, str(dump))
    assert dump.read_bytes() == before


def test_run_refuses_an_output_inside_an_input_folder(work: Path) -> None:
    shards = work / "shards"
    shards.mkdir()
    write_parquet(make_rows(), shards / "part-0.parquet")
    before = (shards / "part-0.parquet").read_bytes()
    result = blend("run", work / "small.blend", "--candidates", shards, "-o", shards / "s.parquet")
    assert_refused(result, str(shards))
    assert sorted(os.listdir(shards)) == ["part-0.parquet"]
    assert (shards / "part-0.parquet").read_bytes() == before


def test_run_refuses_two_outputs_on_one_path(work: Path) -> None:
    out = work / "s.parquet"
    same = blend("run", work / "small.blend", "--candidates", work / "dump.parquet",
                 "-o", out, "--rejects", out)  # fmt: skip
    assert_refused(same, "--rejects", "--out")
    metrics = blend("run", work / "small.blend", "--candidates", work / "dump.parquet",
                    "-o", out, "--metrics", out)  # fmt: skip
    assert_refused(metrics, "--metrics", "--out")
    assert not out.exists()


def test_the_default_rejects_file_is_an_output_too(work: Path) -> None:
    dump = work / "s.rejects.parquet"  # exactly where -o s.parquet puts its rejects
    os.replace(work / "dump.parquet", dump)
    before = dump.read_bytes()
    result = blend("run", work / "small.blend", "--candidates", dump, "-o", work / "s.parquet")
    assert_refused(result, "rejects", str(dump))
    assert dump.read_bytes() == before


def test_the_spec_s_policy_file_is_an_input(tmp_path: Path) -> None:
    random_policy(TINY % ("", "{kind = none}")).save(tmp_path / "tiny.pt")
    spec = tmp_path / "tiny.blend"
    spec.write_text(TINY % ('file = "tiny.pt"', "{kind = none}"))
    before = (tmp_path / "tiny.pt").read_bytes()
    result = blend("run", spec, "--candidates", tmp_path / "whatever.parquet",
                   "-o", tmp_path / "tiny.pt")  # fmt: skip
    assert_refused(result, "policy file")
    exported = blend("export", spec, "-o", tmp_path / "tiny.pt")
    assert_refused(exported, "policy file")
    converted = blend("fmt", spec, "--to", "yaml", "-o", tmp_path / "tiny.pt")
    assert_refused(converted, "policy file")
    assert (tmp_path / "tiny.pt").read_bytes() == before


def test_fmt_export_simulate_and_policy_commands_refuse_too(tmp_path: Path) -> None:
    spec = tmp_path / "ads.blend"
    spec.write_bytes((SPECS / "ads.blend").read_bytes())
    logs = tmp_path / "logs.parquet"
    logs.write_bytes(b"not read: the guard comes first")
    before = spec.read_bytes(), logs.read_bytes()
    cases = [
        (["fmt", spec, "--to", "yaml", "-o", spec], "ads.blend"),
        (["export", spec, "-o", spec], "ads.blend"),
        (["simulate", "--exploration", "uniform", "--spec", spec, "-o", spec], "ads.blend"),
        (["policy", "train", "--spec", spec, "--logs", logs, "-o", logs], "logs.parquet"),
        (["policy", "train", "--spec", spec, "--logs", logs, "-o", spec], "ads.blend"),
        (["policy", "report", "--spec", spec, "--logs", logs, "--held-out", logs,
          "--html", logs], "logs.parquet"),
    ]  # fmt: skip
    for args, named in cases:
        assert_refused(blend(*args), named)
        assert (spec.read_bytes(), logs.read_bytes()) == before, args


def test_good_outputs_still_work(work: Path) -> None:
    result = blend("run", work / "small.blend", "--candidates", work / "dump.parquet",
                   "-o", work / "out" / "s.parquet", "--metrics", work / "out" / "m.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pq.read_table(work / "out" / "s.parquet").num_rows > 0
    assert sorted(os.listdir(work / "out")) == ["m.json", "s.parquet"]  # no temporaries left


# -- 4. a shard folder never loses what blendspec did not write --------------------------------


def simulate(out: Path, *extra: str) -> object:
    return blend("simulate", "-o", out, "--requests", "4", "--candidates", "5",
                 "--shard-rows", "10", *extra)  # fmt: skip


def test_shards_into_a_folder_of_other_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "part-00000.parquet").write_bytes(b"an old shard")
    result = simulate(folder)
    assert_refused(result, str(folder), "notes.txt")
    assert sorted(os.listdir(folder)) == ["notes.txt", "part-00000.parquet"]
    assert (folder / "part-00000.parquet").read_bytes() == b"an old shard"
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporaries left


def test_overwrite_replaces_only_the_shard_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "part-00009.parquet").write_bytes(b"an old shard")
    result = simulate(folder, "--overwrite")
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(folder))
    assert "notes.txt" in names and "part-00009.parquet" not in names
    assert (folder / "notes.txt").read_text() == "mine"
    manifest = json.loads((folder / "_blendspec_shards.json").read_text())
    assert sorted(manifest["files"]) == sorted(n for n in names if n.startswith("part-"))
    assert manifest["requests"] == 4


def test_a_previous_shard_set_is_replaced_whole(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    assert simulate(folder).exit_code == 0
    first = sorted(os.listdir(folder))
    assert "_blendspec_shards.json" in first and len(first) > 2
    again = blend("simulate", "-o", folder, "--requests", "1", "--candidates", "5",
                  "--shard-rows", "10")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert sorted(os.listdir(folder)) == ["_blendspec_shards.json", "part-00000.parquet"]
    assert pq.read_table(folder).num_rows == 5  # the manifest is not read as data


def test_only_shard_files_count_as_a_shard_set(tmp_path: Path) -> None:
    old = tmp_path / "old"  # written before manifests: shard files only, replaced as before
    old.mkdir()
    (old / "part-00000.parquet").write_bytes(b"an old shard")
    assert simulate(old).exit_code == 0
    assert (old / "_blendspec_shards.json").is_file()
    tricky = tmp_path / "tricky"  # a folder that merely has a shard's name is not ours
    (tricky / "part-00000.parquet").mkdir(parents=True)
    (tricky / "part-00000.parquet" / "mine.txt").write_text("mine")
    assert_refused(simulate(tricky), str(tricky))
    assert (tricky / "part-00000.parquet" / "mine.txt").read_text() == "mine"


def test_shards_over_a_file_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("mine")
    assert_refused(simulate(target), str(target))
    assert target.read_text() == "mine"


# -- 7. policy files -----------------------------------------------------------------------------


def policy_spec(folder: Path, file: str) -> Path:
    spec = folder / "tiny.blend"
    spec.write_text(TINY % (f"file = {json.dumps(file)}", "{kind = none}"))
    return spec


@pytest.mark.parametrize("name", ["loop", "nul", "long", "folder"])
def test_unopenable_policy_file_is_a_diagnostic(tmp_path: Path, name: str) -> None:
    file = {"loop": "loop.pt", "nul": "a\0b.pt", "long": "x" * 5000 + ".pt", "folder": "."}[name]
    if name == "loop":
        (tmp_path / "loop.pt").symlink_to("loop.pt")
    spec = policy_spec(tmp_path, file)
    for command in (["validate", spec], ["run", spec, "--candidates", tmp_path / "d.parquet"]):
        result = blend(*command)
        assert result.exit_code == 1, result.output
        assert "E307" in result.output and "internal error" not in result.output
        headline = next(line for line in result.output.splitlines() if "E307" in line)
        assert len(headline) < 300


def saved_payload(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    random_policy(TINY % ("", "{kind = none}")).save(tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


def write_variant(tmp_path: Path, name: str, edit) -> Path:  # type: ignore[no-untyped-def]
    payload = saved_payload(tmp_path)
    meta = json.loads(payload["metadata"])
    edit(payload, meta)
    payload["metadata"] = json.dumps(meta)
    path = tmp_path / f"{name}.pt"
    torch.save(payload, path)
    return path


def eval_policy(tmp_path: Path, policy: Path) -> object:
    spec = tmp_path / "plain.blend"
    spec.write_text(TINY % ("", "{kind = none}"))
    return blend("policy", "eval", "--spec", spec, "--logs", tmp_path / "none.parquet",
                 "--policy", policy)  # fmt: skip


def test_missing_metadata_key_is_a_clear_error(tmp_path: Path) -> None:
    policy = write_variant(tmp_path, "nohidden", lambda p, m: m.pop("hidden"))
    result = eval_policy(tmp_path, policy)
    assert result.exit_code == 1, result.output
    assert error_lines(result) == [
        f"error: {policy}: invalid policy metadata: missing key `hidden`"
    ]


def test_huge_declared_network_is_refused_before_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blendspec.policy.runtime as policy_module

    huge = write_variant(tmp_path, "huge", lambda p, m: m.update(hidden=[200000, 200000]))
    wide = write_variant(tmp_path, "wide", lambda p, m: m.update(hidden=[60000, 60000]))
    assert huge.stat().st_size < 20_000

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was built before its tensors were checked")

    monkeypatch.setattr(policy_module, "PolicyNet", never)
    for policy, words in ((huge, "`hidden`"), (wide, "tensors do not match")):
        with pytest.raises(policy_module.PolicyFileError, match=words):
            policy_module.load_policy(policy)
        result = eval_policy(tmp_path, policy)
        assert result.exit_code == 1 and str(policy) in error_lines(result)[0], result.output


def test_a_compressed_record_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """torch's loader inflates deflated records: a small file could become a huge tensor."""
    import zipfile

    from blendspec.policy.runtime import load_policy
    from blendspec.policy.store import PolicyFileError

    saved_payload(tmp_path)
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(tmp_path / "good.pt") as src, zipfile.ZipFile(packed, "w") as out:
        for record in src.infolist():
            out.writestr(record.filename, src.read(record), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(PolicyFileError, match="is compressed"):
        load_policy(packed)


def test_a_pickle_of_objects_gives_no_unsafe_advice(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"metadata": "{}", "thing": OutputError("x")}, evil)
    result = eval_policy(tmp_path, evil)
    assert result.exit_code == 1, result.output
    assert len(error_lines(result)) == 1 and str(evil) in error_lines(result)[0]
    assert "weights_only" not in result.output and "internal error" not in result.output


# -- 8. the environment's errors are the user's -----------------------------------------------


def test_out_that_is_a_folder_is_refused_before_blending(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blendspec.engine.run

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("blended before checking the output")

    monkeypatch.setattr(blendspec.engine.run, "run", never)
    (work / "slates").mkdir()
    result = blend("run", work / "small.blend", "--candidates", work / "dump.parquet",
                   "-o", work / "slates")  # fmt: skip
    assert_refused(result, str(work / "slates"), os.strerror(errno.EISDIR))
    ads = SPECS / "ads.blend"
    for args in (["simulate", "-o", work / "slates", "--requests", "1"],
                 ["fmt", work / "small.blend", "--to", "yaml", "-o", work / "slates"],
                 ["export", work / "small.blend", "-o", work / "slates"],
                 ["policy", "train", "--spec", ads, "--logs", work / "l.parquet",
                  "-o", work / "slates"],
                 ["policy", "report", "--spec", ads, "--logs", work / "l.parquet",
                  "--simulate", "5", "--html", work / "slates"]):  # fmt: skip
        assert_refused(blend(*args), str(work / "slates"), os.strerror(errno.EISDIR))
    # A file where a folder of the path goes; and nothing is created for a refused command.
    under_a_file = work / "dump.parquet" / "s.parquet"
    result = blend("run", work / "small.blend", "--candidates", work / "dump.parquet",
                   "-o", work / "new" / "s.parquet", "--metrics", under_a_file)  # fmt: skip
    assert_refused(result, str(under_a_file), os.strerror(errno.ENOTDIR))
    assert not (work / "new").exists()


def test_read_only_folder_is_one_line(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = work / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:  # root writes anywhere: make the file system say no
        real_open = os.open

        def refuse(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if str(path).startswith(str(folder)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    try:
        result = blend("run", work / "small.blend", "--candidates", work / "dump.parquet",
                       "-o", folder / "s.parquet")  # fmt: skip
    finally:
        folder.chmod(0o755)
    assert_refused(result, str(folder / "s.parquet"), os.strerror(errno.EACCES))


def test_full_disk_is_one_line_and_leaves_nothing(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = work / "s.parquet"
    out.write_bytes(b"yesterday's slates")

    def full(self: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    result = blend("run", work / "small.blend", "--candidates", work / "dump.parquet", "-o", out)
    assert_refused(result, str(out), os.strerror(errno.ENOSPC))
    assert out.read_bytes() == b"yesterday's slates"
    assert sorted(os.listdir(work)) == ["dump.parquet", "s.parquet", "small.blend"]

    import blendspec.sim.world

    monkeypatch.setattr(blendspec.sim.world._ParquetSink, "write", full)
    made = blend("simulate", "-o", work / "d2.parquet", "--requests", "2", "--candidates", "3")
    assert_refused(made, "d2.parquet", os.strerror(errno.ENOSPC))
    assert not (work / "d2.parquet").exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_a_killed_run_are_removed(work: Path) -> None:
    out = work / "s.parquet"
    mine = temporary_name(out)
    stale = work / mine.replace(f".bs{os.getpid()}@", f".bs{dead_pid()}@")
    alive = work / mine.replace(f".bs{os.getpid()}@", ".bs1@")  # pid 1 is running
    foreign = work / ".s.parquet.abcdefgh.tmp"  # not our pattern: never touched
    other = work / temporary_name(work / "other.parquet").replace(f".bs{os.getpid()}@", ".bs1@")
    for path in (stale, alive, foreign, other):
        path.write_bytes(b"partial")
    result = blend("run", work / "small.blend", "--candidates", work / "dump.parquet", "-o", out)
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert alive.exists() and foreign.exists() and other.exists()


def test_atomic_path_still_importable_from_run(tmp_path: Path) -> None:
    from blendspec.engine.run import atomic_path as from_run

    assert from_run is atomic_path
    with pytest.raises(OutputError, match="Is a directory"), atomic_path(tmp_path) as t:
        t.write_text("x")


def test_an_environment_error_anywhere_is_not_called_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import blendspec.cli as cli
    import blendspec.cli.common as common

    def broken(path: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(common, "load_spec", broken)
    monkeypatch.setattr(sys, "argv", ["blend", "validate", "x.blend"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"x.blend: {os.strerror(errno.EIO)}" in err and "bug" not in err

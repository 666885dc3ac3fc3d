"""Safety by design: every verb's output plan, generated from the CLI's own command tree.

The matrix walks every verb of ``landsight`` (Typer's registered commands and groups, hidden ones
too), finds every output option its plan declares, and points it at four kinds of target that a
user owns: (a) each input of that verb, (b) a file inside a bundle, (c) a folder of user files
holding a stray ``bundle.json``, (d) an existing user file; each with and without ``--overwrite``.
Every run must be refused with exit 2 and leave every file byte-identical. A verb added later is
covered without anyone listing it here; a verb that declares no plan, or a path option that its
plan leaves out, fails :func:`test_every_verb_declares_every_path_option`.
"""

from __future__ import annotations

import hashlib
import shutil
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from landsight.cli import app
from landsight.errors import LandsightError

runner = CliRunner()

#: Parameters typed ``str`` that name local files (a path, folder, glob or list file).
PATH_NAMES = {"data", "inputs", "images", "labels", "test", "calibration", "source", "raster", "predictions"}
#: Parameters that hold no local path although their name or type suggests one.
NOT_FILES = {"tracking_uri", "basemap", "master", "conf", "asset", "aux_rasters", "columns", "compare_ids"}


def _commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for info in typer_app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
        yield (*prefix, name), info.callback
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name) if group.name else prefix)  # type: ignore[arg-type]


def _click_command(path: tuple[str, ...]) -> Any:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


VERBS = sorted(_commands(app), key=lambda v: v[0])


def test_the_walk_finds_every_verb() -> None:
    names = {" ".join(p) for p, _ in VERBS}
    assert {"train", "predict", "finetune", "quantize", "demo", "map", "segment predict", "segment quantize"} <= names
    assert len(names) >= 18


@pytest.mark.parametrize("path,callback", VERBS, ids=[" ".join(p) for p, _ in VERBS])
def test_every_verb_declares_every_path_option(path: tuple[str, ...], callback: Any) -> None:
    plan = getattr(callback, "__landsight_plan__", None)
    assert plan is not None, f"`landsight {' '.join(path)}` has no output plan: decorate it with @configurable(...)"
    declared = set(plan["inputs"]) | set(plan["outputs"])
    for param in _click_command(path).params:
        annotation = param.type_descriptor.annotation
        is_path = annotation is Path or Path in typing.get_args(annotation) or param.name in PATH_NAMES
        if is_path and param.name not in NOT_FILES:
            assert param.name in declared, f"`landsight {' '.join(path)}`: {param.name!r} is neither input nor output"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def world(trained: Any, small_dataset: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real inputs a user owns: labelled images, a landsight bundle, a raster, a predictions file."""
    root = tmp_path_factory.mktemp("world")
    shutil.copytree(small_dataset, root / "data")
    shutil.copytree(trained.bundle_path, root / "model.landsight")
    raster = next((shared_data / "chesapeake" / "train" / "images").glob("*.tif"))
    shutil.copy(raster, root / "scene.tif")
    (root / "preds.parquet").write_bytes(b"a user's own file, not a table")
    (root / "run.yaml").write_text("{}\n")
    user = root / "userfolder"
    (user / "src").mkdir(parents=True)
    (user / "bundle.json").write_text('{"task": "classification"}')
    (user / "src" / "main.js").write_text("console.log('mine')")
    (root / "notes.txt").write_text("a user's own notes")
    return root


ARGUMENTS = {  # parameter -> a real input of the world
    "data": "data", "inputs": "data", "bundle": "model.landsight", "source": "model.landsight", "raster": "scene.tif",
    "predictions": "preds.parquet", "images": "scene.tif",
}  # fmt: skip


def _base_args(path: tuple[str, ...], world: Path) -> tuple[list[str], list[Path]]:
    """Arguments and required options of a verb, from its click parameters; and the inputs they name."""
    args: list[str] = [*path]
    inputs: list[Path] = [world / "run.yaml"]
    for param in _click_command(path).params:
        if param.name not in ARGUMENTS or not param.required:
            continue
        value = world / ARGUMENTS[param.name]
        inputs.append(value)
        if param.param_type_name == "argument":
            args.append(str(value))
        else:
            args += [param.opts[0], str(value)]
    return [*args, "--config", str(world / "run.yaml")], inputs


def _cases() -> Iterator[tuple[tuple[str, ...], str, str, str]]:
    for path, callback in VERBS:
        plan = getattr(callback, "__landsight_plan__", {"outputs": {}})
        options = {p.name: p for p in _click_command(path).params}
        for name, (_, kind) in plan["outputs"].items():
            for target in ("input", "in-bundle", "user-folder", "user-file"):
                if target == "user-folder" and name == "move_to":
                    continue  # a destination folder: files are moved into it, nothing in it is replaced
                yield path, options[name].opts[0], target, kind


CASES = list(_cases())


@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
@pytest.mark.parametrize("path,option,target,kind", CASES, ids=[f"{' '.join(c[0])} {c[1]} {c[2]}" for c in CASES])
def test_no_verb_writes_over_what_a_user_owns(
    world: Path, path: tuple[str, ...], option: str, target: str, kind: str, overwrite: bool
) -> None:
    base, inputs = _base_args(path, world)
    has_overwrite = any(p.name == "overwrite" for p in _click_command(path).params)
    if overwrite and not has_overwrite:
        pytest.skip("the verb has no --overwrite")
    targets = {
        "input": inputs,
        "in-bundle": [world / "model.landsight" / "bundle.json", world / "model.landsight" / "metrics.json"],
        "user-folder": [world / "userfolder"],
        "user-file": [world / "notes.txt"],
    }[target]
    before = _digest(world)
    for dest in targets:
        r = runner.invoke(app, [*base, option, str(dest), *(["--overwrite"] if overwrite else [])])
        code = 2 if isinstance(r.exception, LandsightError) else r.exit_code
        assert code == 2, f"{' '.join(path)} {option} {dest.name}: exit {code}\n{r.output}\n{r.exception!r}"
        assert _digest(world) == before, f"{' '.join(path)} {option} {dest.name} changed a file"


def test_a_bare_bundle_json_does_not_make_a_bundle(world: Path, small_dataset: Path, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(world / "userfolder", proj)
    r = runner.invoke(app, ["train", str(small_dataset), "--out", str(proj), "--overwrite", "--fast", "-q"])
    assert isinstance(r.exception, LandsightError) and "not made by landsight" in str(r.exception)
    assert (proj / "src" / "main.js").read_text() == "console.log('mine')"


def test_overwrite_replaces_what_landsight_made_and_nothing_else(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    assert runner.invoke(app, ["tile", str(world / "scene.tif"), "--out", str(out), "--size", "256"]).exit_code == 0
    n_first = len(list(out.glob("*.tif")))
    r = runner.invoke(app, ["tile", str(world / "scene.tif"), "--out", str(out), "--size", "128", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert len(list(out.glob("*.tif"))) > n_first  # replaced whole: 128-px tiles only, none of the old 256-px ones
    from landsight.outputs import read_manifest

    assert read_manifest(out)["kind"] == "tiles"  # type: ignore[index]
    (out / "mine.txt").write_text("a user's file dropped into the tiles folder")
    r = runner.invoke(app, ["tile", str(world / "scene.tif"), "--out", str(out), "--size", "256", "--overwrite"])
    assert isinstance(r.exception, LandsightError) and "mine.txt" in str(r.exception)
    assert (out / "mine.txt").exists()


@pytest.mark.parametrize(
    "args",
    [["predict", "B", "D", "--batch-size", "-5"], ["predict", "B", "D", "--batch-size", "0"],
     ["segment", "predict", "B", "R", "--batch-size", "-3"], ["finetune", "D", "--epochs", "0"],
     ["tile", "R", "--size", "0"], ["segment", "predict", "B", "R", "--window-size", "16"]],
)  # fmt: skip
def test_counts_out_of_range_are_refused_before_any_work(args: list[str]) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "Invalid value" in r.output


def test_the_api_checks_the_same_ranges(trained: Any, small_dataset: Path) -> None:
    from landsight import predict

    for bad in (0, -5):
        with pytest.raises(LandsightError, match=r"batch_size must be an int in \[1, inf\), got"):
            predict(trained.bundle_path, small_dataset, batch_size=bad, progress=False, track=False)


def test_predict_with_no_readable_input_fails(trained: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"broken_{i}.jpg").write_bytes(b"not an image at all")
    r = runner.invoke(app, ["predict", str(trained.bundle_path), str(bad), "--out", str(tmp_path / "p.parquet"), "-q",
                            "--no-track"])  # fmt: skip
    assert r.exit_code == 1 and "none of the 3 inputs could be read" in r.output


@pytest.mark.parametrize("errno_name,code", [("ENOSPC", 1), ("EROFS", 2), ("EACCES", 2)])
def test_failures_of_the_environment_are_one_line(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    errno_name: str, code: int,
) -> None:  # fmt: skip
    """A full disk, a read-only file system or a forbidden folder: one line from main()'s one handler."""
    import errno
    import os
    import sys

    from landsight.cli import main

    def fail(*args: Any, **kwargs: Any) -> None:
        number = getattr(errno, errno_name)
        raise OSError(number, os.strerror(number), str(tmp_path / "r.html"))

    monkeypatch.setattr("landsight.results.report.build_report", fail)
    monkeypatch.setattr(sys, "argv", ["landsight", "report", str(world / "model.landsight"), "--out",
                                      str(tmp_path / "r.html")])  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == code and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1 and "r.html" in err


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import sys

    from landsight.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_bytes("sort: accuracy\nlimit: 3\ntitle: \xe9t\xe9\n".encode("latin-1"))
    monkeypatch.setattr(sys, "argv", ["landsight", "runs", "--config", str(cfg)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "run.yaml" in err and "Traceback" not in err


def test_overwrite_never_deletes_a_checkpoint_folder_holding_a_users_file(small_dataset: Path,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "f.landsight"
    ckpt = Path(f"{out}.checkpoints")
    ckpt.mkdir()
    (ckpt / "mine.txt").write_text("a user's file")
    r = runner.invoke(app, ["finetune", str(small_dataset), "--out", str(out), "--overwrite", "--epochs", "1"])
    assert isinstance(r.exception, LandsightError) and "not made by landsight" in str(r.exception)
    assert (ckpt / "mine.txt").read_text() == "a user's file"


def test_a_bad_to_crs_is_refused_before_scoring(trained: Any, small_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import landsight.classify.predict as predict_module

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("scored before the CRS was checked")

    monkeypatch.setattr(predict_module, "_predict", never)
    r = runner.invoke(app, ["predict", str(trained.bundle_path), str(small_dataset), "--out",
                            str(tmp_path / "p.gpkg"), "--to-crs", "EPSG:99999", "-q", "--no-track"])  # fmt: skip
    assert isinstance(r.exception, LandsightError) and "--to-crs 'EPSG:99999'" in str(r.exception)
    with pytest.raises(LandsightError, match="to_crs 'nonsense'"):
        predict_module.predict(trained.bundle_path, small_dataset, out=tmp_path / "q.gpkg", to_crs="nonsense",
                               progress=False, track=False)  # fmt: skip

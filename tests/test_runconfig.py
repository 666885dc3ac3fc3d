"""Runs as files: --config / --print-config for every verb, and the config saved in bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from landsight.cli import app

runner = CliRunner()


def test_printed_config_reproduces_the_bundle(small_dataset: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    first = tmp_path / "first.landsight"
    printed = subprocess.run(
        [sys.executable, "-m", "landsight", "train", str(small_dataset), "--out", str(first), "--test-size", "0.25",
         "--C", "0.5", "-q", "--print-config"], capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    config = yaml.safe_load(printed)
    assert config["test_size"] == 0.25 and config["C"] == "0.5" and config["data"] == str(small_dataset)
    assert not first.exists()  # --print-config does nothing else
    (tmp_path / "run.yaml").write_text(printed)
    r = runner.invoke(app, ["train", "--config", str(tmp_path / "run.yaml")], env=env)
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert config["tta"] is None and "overwrite" not in config  # unset preset option; no permission printed
    # saved = printed, with the values the recipe resolved (never null)
    assert saved == json.loads((first / "bundle.json").read_text())["config"] == {**config, "tta": "rot4", "C": 0.5}
    again = tmp_path / "again.landsight"
    r = runner.invoke(app, ["train", "--config", str(first / "config.yaml"), "--out", str(again)], env=env)
    assert r.exit_code == 0, r.output
    a, b = (json.loads((p / "bundle.json").read_text()) for p in (first, again))
    for key in ("classes", "preprocessing", "backbone", "head", "metrics", "data"):
        assert a[key] == b[key], key
    assert b["config"]["out"] == str(again)  # the flag on the line won over the file


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tets_size: 0.3\n")
    r = runner.invoke(app, ["train", "x", "--config", str(bad)])
    assert r.exit_code != 0 and "tets_size" in str(r.exception) and "test_size" in str(r.exception)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("seed: ten\n")
    r = runner.invoke(app, ["train", "x", "--config", str(wrong)])
    assert r.exit_code == 2 and "--seed" in r.output
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    r = runner.invoke(app, ["train", "x", "--config", str(listed)])
    assert r.exit_code != 0 and "mapping" in str(r.exception)


@pytest.mark.parametrize(
    "verb", [["train"], ["tune"], ["quantize"], ["evaluate"], ["predict"], ["featurize"],
             ["finetune"], ["runs"], ["demo"], ["serve"],
             ["tile"], ["map"], ["report"], ["dedup"], ["segment", "train"], ["segment", "predict"],
             ["segment", "evaluate"]],
)  # fmt: skip
def test_every_verb_takes_a_config_file(verb: list[str]) -> None:
    r = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--config" in r.output and "--print-config" in r.output


def test_config_file_supplies_arguments_and_flags_override_it(tmp_path: Path) -> None:
    cfg = tmp_path / "runs.yaml"
    cfg.write_text("sort: accuracy\nformat: json\nlimit: 3\n")
    r = runner.invoke(app, ["runs", "--config", str(cfg), "--format", "csv", "--print-config"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.output) | {} == yaml.safe_load(r.output) and "format: csv" in r.output
    assert "sort: accuracy" in r.output and "limit: 3" in r.output


def test_a_replayed_config_never_grants_overwrite(small_dataset: Path, tmp_path: Path) -> None:
    """A bundle trained with --overwrite does not pass that permission on through its config.yaml."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    first = tmp_path / "a.landsight"
    args = ["train", str(small_dataset), "--out", str(first), "--test-size", "0.25", "--fast", "-q", "--no-track"]
    assert runner.invoke(app, args, env=env).exit_code == 0
    assert runner.invoke(app, [*args, "--overwrite"], env=env).exit_code == 0
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert "overwrite" not in saved and saved["tta"] == "none" and saved["C"] == 1.0
    target = tmp_path / "b.landsight"
    target.mkdir()
    (target / "mine.txt").write_text("user file")
    (first / "config.yaml").write_text(yaml.safe_dump({**saved, "overwrite": True}))  # even a hand-edited grant
    r = runner.invoke(app, ["train", "--config", str(first / "config.yaml"), "--out", str(target)], env=env)
    assert r.exit_code != 0 and (target / "mine.txt").read_text() == "user file"
    assert "ignored" in r.output and "--overwrite" in r.output


def _billion_laughs(levels: int = 9) -> str:
    """A synthetic "billion laughs" YAML: each level lists the previous one 9 times through aliases."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_config_refuses_yaml_aliases_and_huge_files(tmp_path: Path) -> None:
    import time

    from landsight.errors import LandsightValueError
    from landsight.runconfig import MAX_CONFIG_BYTES, load_config

    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(_billion_laughs())
    assert bomb.stat().st_size < 600  # 9**9 "lol"s once expanded
    started = time.perf_counter()
    with pytest.raises(LandsightValueError) as info:
        load_config(bomb, [], "train")
    assert time.perf_counter() - started < 5
    assert str(info.value).startswith(f"config {str(bomb)!r} uses YAML aliases (&/*), which landsight refuses")
    # one plain alias is refused too; the CLI gives the same one line
    plain = tmp_path / "alias.yaml"
    plain.write_text("seed: &s 3\nlimit: *s\n")
    r = runner.invoke(app, ["runs", "--config", str(plain), "--print-config"])
    assert r.exit_code != 0 and "uses YAML aliases (&/*)" in str(r.exception) and "alias.yaml" in str(r.exception)
    # over the size cap: refused before parsing
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(LandsightValueError, match=f"over {MAX_CONFIG_BYTES} bytes"):
        load_config(big, [], "train")
    # an ordinary config still loads
    ok = tmp_path / "ok.yaml"
    ok.write_text("sort: accuracy\nlimit: 3\n")
    r = runner.invoke(app, ["runs", "--config", str(ok), "--print-config"])
    assert r.exit_code == 0 and "limit: 3" in r.output, r.output

"""The recipe bound once: one TTA vocabulary, presets resolved in one place, run parameters from signatures."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from landsight.cli import app
from landsight.errors import LandsightError, LandsightValueError
from landsight.models.backbones import SUPPORTED_TTA as CLASSIFY_TTA
from landsight.recipe import TTA_MODES, check_tta, resolve_preset, run_params
from landsight.segment.predict import SUPPORTED_TTA as SEGMENT_TTA


def test_one_vocabulary_each_task_takes_its_modes() -> None:
    assert set(CLASSIFY_TTA) | set(SEGMENT_TTA) <= set(TTA_MODES)
    assert check_tta("rot4", CLASSIFY_TTA) == "rot4" and check_tta("D4", SEGMENT_TTA) == "d4"
    assert check_tta(True, SEGMENT_TTA) == "d4" and check_tta("false", SEGMENT_TTA) == "none"  # the former flag
    with pytest.raises(LandsightValueError, match=r"tta must be one of \['none', 'd4'\] for segmentation, got 'rot4'"):
        check_tta("rot4", SEGMENT_TTA, task="segmentation")
    with pytest.raises(LandsightValueError, match="one of \\['none', 'rot4'\\]"):
        check_tta("d4", CLASSIFY_TTA, task="classification")


@pytest.mark.parametrize(
    "args",
    [["segment", "predict", "B", "R", "--tta", "rot4"], ["segment", "evaluate", "B", "--images", "x", "--tta", "x"]],
)
def test_the_cli_refuses_a_mode_the_task_lacks_before_reading_anything(args: list[str]) -> None:
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, LandsightError) and "tta must be one of ['none', 'd4']" in str(r.exception)


def test_presets_resolve_given_then_preset_then_default() -> None:
    from landsight.classify.train import resolve_recipe

    assert resolve_recipe() == {"tta": "rot4", "C": "auto"}  # train's own signature defaults
    assert resolve_recipe(fast=True) == {"tta": "none", "C": 1.0}
    assert resolve_recipe(fast=True, tta="rot4") == {"tta": "rot4", "C": 1.0}  # a given value wins
    assert resolve_recipe(engine="spark", C="0.5") == {"tta": "none", "C": 0.5}
    with pytest.raises(LandsightValueError, match="preset must be one of"):
        resolve_preset("slow", {}, {})


def test_run_params_come_from_the_signature() -> None:
    def api(data: str, *, out: Path = Path("m"), lr: float | None = None, progress: bool = True) -> None:
        return None

    params = run_params(api, {"data": "d", "out": Path("x"), "lr": None, "progress": False, "local": 3},
                        exclude=("progress",), lr=0.001)  # fmt: skip
    assert params == {"data": "d", "out": "x", "lr": 0.001}

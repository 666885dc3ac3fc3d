"""A toy third task plugs in through landsight's tables, touching no other task's room (docs/architecture.md).

The task, "regression", is a test fixture only: a linear head that predicts a number (the mean
brightness of a real EuroSAT tile from its 8 x 8 grey thumbnail). It follows the steps of
"Add a task" in docs/architecture.md and uses only the shared floor: the training base
(:class:`landsight.models.task.TaskModule`, :func:`landsight.models.fit.fit_module`), the bundle
format (:data:`landsight.bundle.TASKS`), quantization (:data:`landsight.quantize.QUANTIZE_DATA`)
and the command line (a Typer app added to :data:`landsight.cli.app`, with its output plan).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from landsight.data.dataset import TensorDictDataset
from landsight.errors import BundleError, LandsightError
from landsight.models.task import TaskModule

TASK = "regression"
HERE = sys.modules[__name__].__name__  # importable by name: the tables hold "module:attr" strings


# --- the task room: module, bundle, quantize data, CLI ----------------------------------------------


class RegressionModule(TaskModule):
    """Mean squared error on ``{"image": (N, 64) float32, "target": (N,) float32}`` batches."""

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        pred = self(batch["image"]).squeeze(1)
        return {"loss": nn.functional.mse_loss(pred, batch["target"]), "mae": (pred - batch["target"]).abs().mean()}


class RegressionBundle:
    """A regression bundle as :func:`landsight.bundle.load_bundle` opens it (through ``TASKS``)."""

    model_file = "model.onnx"

    def __init__(self, path: Path, meta: dict[str, Any], device: str = "auto") -> None:
        import onnxruntime as ort

        self.path, self.meta = path, meta
        self.session = ort.InferenceSession(str(path / self.model_file), providers=["CPUExecutionProvider"])

    def validate(self, inputs: list[Any], outputs: list[Any]) -> None:
        if inputs[-1] != self.meta["model"]["features"]:
            raise BundleError(f"graph takes {inputs[-1]} features, bundle.json says {self.meta['model']['features']}")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": X.astype(np.float32)})[0][:, 0]


class RegressionQuantizeData:
    """The quantize protocol (:class:`landsight.models.quantize.QuantizeData`) for the toy task."""

    test_unit = "images"
    head = None

    def __init__(self, bundle: Any, calibration: Any, n: int, test: Any, seed: int, progress: bool = False, *,
                 test_labels: Any = None) -> None:  # fmt: skip
        data = np.load(bundle.path / "data.npz")
        self.X, self.y, self.n = data["X"], data["y"], n
        self.calibration_source, self.test_source, self.calibration_fingerprint = "training thumbnails", "all", "0" * 16

    def calibration_samples(self) -> np.ndarray:
        return self.X[: self.n].astype(np.float32)

    def finish_int8(self, quantized: Path, work: Path, *, refit_head: bool) -> Path:
        return quantized

    def compare(self, fp32: Path, quantized: Path) -> dict[str, Any]:
        import onnxruntime as ort

        def within(path: Path) -> float:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return float(np.mean(np.abs(session.run(None, {"image": self.X})[0][:, 0] - self.y) < 0.05) * 100)

        return {"metric": "within 0.05", "n_test": len(self.y), "fp32": within(fp32), "quantized": within(quantized)}

    def quantization_entries(self, precision: str) -> dict[str, Any]:
        return {}


def thumbnails(folder: Path, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """8 x 8 grey thumbnails ``(n, 64)`` float32 in [0, 1] and each tile's mean brightness ``(n,)``."""
    X, y = [], []
    for path in sorted(folder.rglob("*.jpg"))[:n]:
        grey = Image.open(path).convert("L")
        X.append(np.asarray(grey.resize((8, 8), Image.Resampling.BOX), dtype=np.float32).ravel() / 255)
        y.append(np.asarray(grey, dtype=np.float32).mean() / 255)
    return np.stack(X), np.asarray(y, dtype=np.float32)


def train_regression(data: Path, out: Path, *, epochs: int = 40) -> Path:
    """Train the linear head on the thumbnails of ``data`` and write a regression bundle."""
    import onnx

    from landsight.bundle import staged_bundle, write_bundle
    from landsight.models.fit import fit_module

    X, y = thumbnails(data)
    torch.manual_seed(0)
    model = nn.Linear(64, 1)
    module = RegressionModule(model, [], list(model.parameters()), optimizer="adamw", lr=0.02, epochs=epochs)
    dataset = TensorDictDataset(image=torch.from_numpy(X), target=torch.from_numpy(y))
    fit_module(module, DataLoader(dataset, batch_size=16, shuffle=True), DataLoader(dataset, batch_size=64),
               ckpt_dir=Path(f"{out}.checkpoints"), epochs=epochs, progress=False, monitor="val_loss")  # fmt: skip
    with staged_bundle(out) as stage:
        torch.onnx.export(model.eval(), (torch.zeros(1, 64),), str(stage / "graph.onnx"), input_names=["image"],
                          output_names=["value"], dynamic_axes={"image": {0: "n"}, "value": {0: "n"}}, dynamo=False)
        np.savez(stage / "data.npz", X=X, y=y)
        write_bundle(stage, model=onnx.load(str(stage / "graph.onnx")),
                     meta={"task": TASK, "model": {"features": 64}, "data": {"source": str(data)}})  # fmt: skip
        (stage / "graph.onnx").unlink()
    return out


regression_app = typer.Typer(help="Toy regression task (test fixture).")


def _cli_train() -> Any:
    from landsight.runconfig import configurable

    @regression_app.command("train")
    @configurable(inputs={"data": "DATA"}, outputs={"out_": ("--out", "bundle")})
    def train(
        data: Annotated[Path, typer.Argument()], out_: Annotated[Path, typer.Option("--out")] = Path("r.landsight")
    ) -> None:
        train_regression(data, out_, epochs=5)

    return train


_cli_train()


# --- plugging it in: tables only ----------------------------------------------------------------------


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The three registrations "Add a task" names, and nothing else."""
    from landsight import bundle, quantize
    from landsight.cli import app

    monkeypatch.setitem(bundle.TASKS, TASK, f"{HERE}:RegressionBundle")
    monkeypatch.setitem(quantize.QUANTIZE_DATA, TASK, f"{HERE}:RegressionQuantizeData")
    monkeypatch.setattr(app, "registered_groups", [*app.registered_groups])
    app.add_typer(regression_app, name=TASK)


def test_a_toy_task_trains_bundles_loads_and_quantizes(plugged: None, tmp_path: Path) -> None:
    from landsight.bundle import load_bundle
    from landsight.data.sample import eurosat_sample
    from landsight.quantize import quantize_bundle

    data = eurosat_sample()
    out = train_regression(data, tmp_path / "bright.landsight")
    loaded = load_bundle(out)
    assert isinstance(loaded, RegressionBundle)
    X, y = thumbnails(data)
    mae = float(np.abs(loaded.predict(X) - y).mean())
    assert mae < 0.05, mae  # a real fit: the mean of the thumbnail is the target, up to resampling
    result = quantize_bundle(out, tmp_path / "bright-int8.landsight", max_drop=10.0)
    assert result.metric == "within 0.05" and result.n_test == len(y)
    assert load_bundle(result.bundle_path).meta["precision"] == "int8"
    with pytest.raises(BundleError, match="regression bundle; use the regression verbs"):
        load_bundle(out, task="classification")


def test_a_toy_task_verb_goes_through_the_output_plan(plugged: None, tmp_path: Path) -> None:
    from landsight.cli import app
    from landsight.data.sample import eurosat_sample

    runner = CliRunner()
    out = tmp_path / "r.landsight"
    r = runner.invoke(app, ["regression", "train", str(eurosat_sample()), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "model.onnx").is_file()
    r = runner.invoke(app, ["regression", "train", str(eurosat_sample()), "--out", str(out)])
    assert isinstance(r.exception, LandsightError) and "--overwrite" in str(r.exception)  # the plan, unasked
    inside = eurosat_sample() / "Forest" / "new.landsight"
    r = runner.invoke(app, ["regression", "train", str(eurosat_sample()), "--out", str(inside)])
    assert isinstance(r.exception, LandsightError) and "inside the input" in str(r.exception)
    assert not inside.exists()

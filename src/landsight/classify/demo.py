"""The whole chain on the bundled real EuroSAT sample: train, evaluate, predict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landsight.data.sample import eurosat_sample


@dataclass
class DemoResult:
    """Outputs of :func:`demo`.

    Attributes:
        bundle_path: The trained bundle.
        metrics: Held-out metrics of the bundle.
        predictions_path: Parquet predictions over the held-out images.
        predictions: The predictions table.

    """

    bundle_path: Path
    metrics: dict[str, Any]
    predictions_path: Path
    predictions: Any


def demo(out_dir: str | Path = "landsight-demo", *, head: str = "logreg", progress: bool = True) -> DemoResult:
    """Train on 80 % of the bundled EuroSAT sample, evaluate on 20 %, predict the 20 %.

    Re-running into the same ``out_dir`` replaces the demo's own files there (bundle, predictions).

    The sample is 50 real EuroSAT RGB tiles per class (10 classes; Helber et al., IEEE JSTARS
    2019, MIT licence). The backbone is ``tf_efficientnet_lite0`` with its offline ImageNet
    weights, so the demo needs no network.

    Args:
        out_dir: Folder for ``eurosat.landsight/`` and ``predictions.parquet``.
        head: ``"logreg"`` or ``"forest"``.
        progress: Show progress bars.

    Returns:
        A :class:`DemoResult`.

    """
    from landsight.classify.predict import predict
    from landsight.classify.train import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The demo folder is the demo's own: each run replaces the files of the previous one.
    result = train(eurosat_sample(), out=out / "eurosat.landsight", head=head, test_size=0.2, progress=progress,
                   overwrite=True)  # fmt: skip
    test_list = out / "test_images.txt"
    test_list.write_text("\n".join(result.test_paths) + "\n")
    preds_path = out / "predictions.parquet"
    preds = predict(result.bundle_path, test_list, out=preds_path, progress=progress, overwrite=True)
    return DemoResult(result.bundle_path, result.metrics, preds_path, preds)

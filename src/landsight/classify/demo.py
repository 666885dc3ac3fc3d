"""The whole chain on the bundled real EuroSAT sample: train, evaluate, predict."""

from __future__ import annotations

import os
import shutil
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


def demo(
    out_dir: str | Path = "landsight-demo", *, head: str = "logreg", progress: bool = True, overwrite: bool = False
) -> DemoResult:
    """Train on 80 % of the bundled EuroSAT sample, evaluate on 20 %, predict the 20 %.

    ``out_dir`` is the demo's own folder (it holds a landsight manifest). An existing one is
    replaced whole only with ``overwrite``, and only if landsight made it; a failed run puts the
    previous one back.

    The sample is 50 real EuroSAT RGB tiles per class (10 classes; Helber et al., IEEE JSTARS
    2019, MIT licence). The backbone is ``tf_efficientnet_lite0`` with its offline ImageNet
    weights, so the demo needs no network.

    Args:
        out_dir: Folder for ``eurosat.landsight/`` and ``predictions.parquet``.
        head: ``"logreg"`` or ``"forest"``.
        progress: Show progress bars.
        overwrite: Replace an earlier demo folder at ``out_dir``.

    Returns:
        A :class:`DemoResult`.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is not set, or it is not a demo
            folder landsight made (see :func:`landsight.outputs.check_plan`).

    """
    from landsight.classify.predict import predict
    from landsight.classify.train import train
    from landsight.outputs import Output, OutputPlan, check_plan, mark_folder, tmp_name

    out = Path(out_dir)
    check_plan(OutputPlan("demo", outputs=[Output(out, "--out", "demo")], overwrite=overwrite))
    old = tmp_name(out, "old")
    if out.exists():
        os.replace(out, old)  # put back if this run fails
    try:
        out.mkdir(parents=True)
        result = train(eurosat_sample(), out=out / "eurosat.landsight", head=head, test_size=0.2, progress=progress)
        test_list = out / "test_images.txt"
        test_list.write_text("\n".join(result.test_paths) + "\n")
        preds_path = out / "predictions.parquet"
        preds = predict(result.bundle_path, test_list, out=preds_path, progress=progress)
        mark_folder(out, "demo")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if old.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return DemoResult(result.bundle_path, result.metrics, preds_path, preds)

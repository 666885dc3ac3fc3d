"""landsight: transfer learning on imagery, aerial imagery first.

The Python API mirrors the CLI; heavy libraries load only when a function is called::

    import landsight
    result = landsight.train("eurosat/", out="eurosat.landsight", head="logreg")
    bundle = landsight.load_bundle("eurosat.landsight")
    table = bundle.predict(["tile.png"])
    metrics = landsight.evaluate(bundle, "more_labelled_tiles/")

Packages follow the pipeline: :mod:`landsight.data` (catalogs, readers, preprocessing, tiling),
:mod:`landsight.models` (backbones, heads, the shared Lightning fit loop),
:mod:`landsight.classify` (frozen-feature classifiers and fine-tuning), :mod:`landsight.segment`
(semantic segmentation of rasters), :mod:`landsight.spark` and :mod:`landsight.serve` (scoring
at scale), then :mod:`landsight.results`, the tools that look at results (maps, change, reports,
runs, dedup).

No public name here is also a submodule name, so importing any submodule never replaces a
function of this API with a module.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it (imported on first access).
_API = {
    "train": "landsight.classify.train",
    "finetune": "landsight.classify.finetune",
    "tune": "landsight.classify.tune",
    "evaluate": "landsight.classify.evaluate",
    "predict": "landsight.classify.predict",
    "featurize": "landsight.classify.featurize",
    "train_segmentation": "landsight.segment.train",
    "predict_raster": "landsight.segment.predict",
    "evaluate_rasters": "landsight.segment.evaluate",
    "load_bundle": "landsight.bundle",
    "load_predictions": "landsight.predictions",
    "prediction_map": "landsight.results.maps",
    "compare_predictions": "landsight.results.change",
    "build_report": "landsight.results.report",
    "find_duplicates": "landsight.results.dedup",
    "build_catalog": "landsight.data.catalog",
    "read_image": "landsight.data.readers",
    "cut_tiles": "landsight.data.tiling",
    "tile_scene": "landsight.segment.scene_tiles",
    "predict_scene": "landsight.classify.scene",
    "VectorLabels": "landsight.data.vector_labels",
    "create_backbone": "landsight.models.backbones",
}

__all__ = [
    "VectorLabels",
    "__version__",
    "build_catalog",
    "build_report",
    "compare_predictions",
    "create_backbone",
    "cut_tiles",
    "evaluate",
    "evaluate_rasters",
    "featurize",
    "find_duplicates",
    "finetune",
    "load_bundle",
    "load_predictions",
    "predict",
    "predict_raster",
    "predict_scene",
    "prediction_map",
    "read_image",
    "tile_scene",
    "train",
    "train_segmentation",
    "tune",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value  # bind the function once: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'landsight' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

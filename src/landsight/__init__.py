"""landsight: transfer learning on imagery, aerial imagery first.

The Python API mirrors the CLI; heavy libraries load only when a function is called::

    import landsight
    result = landsight.train("eurosat/", out="eurosat.landsight", head="logreg")
    bundle = landsight.load_bundle("eurosat.landsight")
    table = bundle.predict(["tile.png"])
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "train": "landsight.train",
    "evaluate": "landsight.evaluate",
    "predict": "landsight.predict",
    "featurize": "landsight.featurize",
    "demo": "landsight.demo",
    "load_bundle": "landsight.bundle",
    "build_catalog": "landsight.data.catalog",
    "read_image": "landsight.data.readers",
    "create_backbone": "landsight.models.backbones",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'landsight' has no attribute {name!r}")

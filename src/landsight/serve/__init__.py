"""Real-time HTTP scoring of a model bundle (FastAPI + uvicorn), with micro-batching.

``landsight serve model.landsight`` or, in Python::

    from landsight.serve import create_app, run
    run("eurosat.landsight", host="0.0.0.0", port=8000, workers=2)

FastAPI and uvicorn are imported only when :func:`create_app` or :func:`run` is first used, so
``import landsight.serve`` (and ``import landsight``) stays light. See :mod:`landsight.serve.app`
for the routes.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "create_app": "landsight.serve.app",
    "create_app_from_env": "landsight.serve.app",
    "run": "landsight.serve.app",
    "ServeSettings": "landsight.serve.settings",
    "MicroBatcher": "landsight.serve.batching",
    "DecodeBudget": "landsight.serve.budget",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'landsight.serve' has no attribute {name!r}")

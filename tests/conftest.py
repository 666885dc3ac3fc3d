"""Shared fixtures: the real imagery in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LANDSIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (real EuroSAT, UC Merced, NAIP imagery); skips when missing."""
    if not (SHARED_DATA / "eurosat_rgb").is_dir():
        pytest.skip(f"real imagery not found at {SHARED_DATA} (set LANDSIGHT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point landsight's feature/model cache at a per-session temporary folder."""
    os.environ.setdefault("LANDSIGHT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))

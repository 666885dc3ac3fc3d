"""Shared fixtures: the real imagery in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Offline and isolated: no hub retries, a fresh feature/model cache per test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANDSIGHT_CACHE_DIR", tempfile.mkdtemp(prefix="landsight-test-cache-"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='landsight-test-mlflow-')}/mlruns.db")
SHARED_DATA = Path(os.environ.get("LANDSIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (real EuroSAT, UC Merced, NAIP imagery); skips when missing."""
    if not (SHARED_DATA / "eurosat_rgb").is_dir():
        pytest.skip(f"real imagery not found at {SHARED_DATA} (set LANDSIGHT_SHARED_DATA)")
    return SHARED_DATA


CLASSES = ("Forest", "River", "SeaLake")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of 12 real EuroSAT tiles each (3 classes), from the package's own sample."""
    from landsight.data.sample import eurosat_sample

    root = tmp_path_factory.mktemp("eurosat_small")
    for cls in CLASSES:
        (root / cls).mkdir()
        for n in range(1, 13):
            name = f"{cls}_{n}.jpg"
            (root / cls / name).write_bytes((eurosat_sample() / cls / name).read_bytes())
    return root


@pytest.fixture(scope="session")
def trained(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A logreg bundle trained once per session on ``small_dataset`` (25 % held out, then refit).

    The single-view ``FAST`` preset keeps the suite quick; the defaults (rot4, C="auto") are
    exercised in ``test_train_bundle.py``.
    """
    from landsight.classify.train import FAST, train

    out = tmp_path_factory.mktemp("bundles") / "small.landsight"
    return train(small_dataset, out=out, test_size=0.25, progress=False, **FAST)


CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: the pages must not need the network
)  # fmt: skip


class Chromium:
    """Headless Debian chromium: the DOM after scripts ran, and screenshots (tests only)."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile

    def _run(self, *args: str) -> str:
        import subprocess

        cmd = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--virtual-time-budget=5000", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
        return done.stdout

    def dump_dom(self, html: Path) -> str:
        """The page's DOM as HTML after its scripts ran."""
        return self._run("--dump-dom", html.resolve().as_uri())

    def screenshot(self, html: Path, png: Path, size: str = "1200,800") -> Path:
        """Save a PNG screenshot of the page."""
        self._run(f"--screenshot={png}", f"--window-size={size}", html.resolve().as_uri())
        return png


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Headless chromium (Debian's, installed by `make chromium`); skips when missing."""
    import shutil

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium not found; install it with `make chromium` (apt-get install chromium)")
    return Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
